"""The care-staff console in a real headless Chromium (Debian's), driven by Playwright.

An alert published on MQTT appears without a reload; pressing a button
changes the alert in the database; a red alert rings, vibrates and notifies;
resolving asks for the outcome (with an undo); technical alerts of one outage
fold into one card; suppressed alerts sit apart without buttons; the resolve
flow works by keyboard alone (visible focus, named buttons, a dialog that keeps
focus and closes on Escape), and new red alarms are said in a live region.
Each test saves screenshots at phone (390x844) and desktop size under
.artifacts/.

Headless Chromium has no speaker, vibration motor or notification centre, so
an init script (``RECORDER``) records ``navigator.vibrate`` and
``showNotification`` calls and grants the notification permission; the audio
is checked through the console's own hook (``window.trygg.alarm()``: the
AudioContext's state and the tones played).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.alerting_stack import REGISTRY, Stack, start_stack
from tests.helpers import WebhookReceiver, wait_until
from trygg.devenv import free_port
from trygg.model import Severity, Signal, SignalAction

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

# What headless Chromium cannot do, recorded instead (see the module's doc).
RECORDER = """
window.TRYGG_UNDO_MS = 1500;
window.__calls = { vibrate: [], notifications: [], wakeLock: 0, announced: [] };
// what the live region said, in order (a screen reader hears each change)
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("announce");
  if (el) new MutationObserver(() => window.__calls.announced.push(el.textContent))
    .observe(el, { childList: true, characterData: true, subtree: true });
});
navigator.vibrate = (p) => { window.__calls.vibrate.push(p); return true; };
class FakeNotification {
  constructor(title, opts) {
    window.__calls.notifications.push({ title, via: "page", ...(opts || {}) });
  }
  static get permission() { return "granted"; }
  static requestPermission() { return Promise.resolve("granted"); }
}
window.Notification = FakeNotification;
if (window.ServiceWorkerRegistration) {
  const real = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function (title, opts) {
    window.__calls.notifications.push({ title, via: "service-worker", ...(opts || {}) });
    return real.call(this, title, opts).catch(() => undefined);
  };
}
if (navigator.wakeLock) {
  const realReq = navigator.wakeLock.request.bind(navigator.wakeLock);
  navigator.wakeLock.request = async (kind) => {
    window.__calls.wakeLock++;
    try { return await realReq(kind); }
    catch (e) { return { released: false, addEventListener() {}, release: async () => {} }; }
  };
}
"""


def shoot(page: Any, name: str) -> None:
    """Screenshots at phone and desktop size, and the phone in the dark scheme:
    .artifacts/console-NAME-{phone,desktop,phone-dark}.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    before = page.viewport_size
    for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        page.screenshot(path=str(ARTIFACTS / f"console-{name}-{label}.png"), full_page=True)
    # and the phone at night: the dark colour scheme
    page.set_viewport_size(PHONE)
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(150)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}-phone-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(before)


def console_page(
    stack: Stack, browser: Any, user: str = "nurse-a", channels: list[dict[str, Any]] | None = None
) -> Any:
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=1)
    ctx.add_init_script(RECORDER)
    page = ctx.new_page()
    if channels is not None:  # what GET /api/health/channels answers
        page.route(
            "**/api/health/channels",
            lambda route: route.fulfill(json={"channels": channels, "retrying": 1}),
        )
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{stack.base}/console#token={stack.tokens[user]}")
    page.wait_for_selector("#live.on")
    return page


pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is missing")


@pytest.fixture
def stack(db, broker, tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with WebhookReceiver() as hook:
        s = start_stack(db, broker, tmp_path, webhook_url=hook.url)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_alert_appears_live_and_acknowledge_reaches_the_database(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 412, "height": 860}, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # an alert that is already open, and one that arrives while we watch
    stack.publish("water-a1", "water.detected")
    stack.wait_alert("nurse-a", state="open", rule="water")
    page.goto(f"{stack.base}/console#token={stack.tokens['nurse-a']}")
    page.wait_for_selector("#alerts li")
    assert "token=" not in page.url  # the token left the address bar
    page.wait_for_selector("#live.on")
    stack.publish("fall-a1", "fall.detected", room="bathroom")
    page.wait_for_selector("#alerts li.red", timeout=5000)  # no reload
    first = page.locator("#alerts li").first
    assert "Fall" in first.locator(".title").inner_text()  # red sorts before yellow
    assert "Rød 4.1" in (first.locator(".sev").text_content() or "")
    assert page.locator("#announce").inner_text().startswith("Ny alarm")
    # large targets
    box = first.locator(".actions button").first.bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= 44
    # the resident's recent events in plain words
    first.locator("details.events summary").click()
    page.wait_for_selector("#alerts li.red .timeline li")
    # the fall is stored a moment after its alert shows (under load, seconds): the
    # opened list is read again until it is there
    page.wait_for_selector(
        '#alerts li.red .timeline li:has-text("Fall oppdaget (badet)")', timeout=15000
    )
    # keyboard: focus the acknowledge button and press Enter
    aid = first.get_attribute("data-id")
    ack = first.locator('button[data-action="acknowledge"]')
    ack.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="acknowledged"]')
    stack.wait_db_state(str(aid), "acknowledged")
    assert stack.sql("SELECT acknowledged_by FROM alerts WHERE id = %s", aid) == [("nurse-a",)]
    # English on request
    page.click("#lang")
    assert "Acknowledged by nurse-a" in first.locator(".state").inner_text()
    page.click("#lang")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    # take, arrive and resolve with one tap each
    first.locator('button[data-action="take"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="accepted"]')
    first.locator('button[data-action="arrive"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="arrived"]')
    page.locator(f'#alerts li[data-id="{aid}"] button[data-action="resolve"]').click()
    page.locator('#outcome button[data-outcome="helped"]').click()  # what it was
    page.wait_for_selector(f'#alerts li[data-id="{aid}"]', state="detached", timeout=15000)
    stack.wait_db_state(str(aid), "resolved")
    assert stack.sql("SELECT outcome FROM alerts WHERE id = %s", aid) == [("helped",)]
    assert not errors, errors


def test_an_open_timeline_shows_an_event_stored_after_it_opened(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    """An alert reaches the console before its event is stored (the alarm path does not
    wait for the database; under load the event follows seconds later, and a CI run on
    a busy machine found the fall missing from the list just opened). An opened list
    is read again a few times, so an event stored after it opened shows without a tap."""
    stack.publish("water-a1", "water.detected")
    stack.wait_alert("nurse-a", state="open", rule="water")
    page = browser.new_page(viewport={"width": 412, "height": 860}, device_scale_factor=1)
    page.goto(f"{stack.base}/console#token={stack.tokens['nurse-a']}")
    page.wait_for_selector("#alerts li")
    first = page.locator("#alerts li").first
    first.locator("details.events summary").click()
    page.wait_for_selector("#alerts li .timeline li:has-text('Vannlekkasje oppdaget')")
    assert "Døren" not in first.locator(".timeline").inner_text()
    stack.publish("door-a1", "door.opened")  # no alert of its own: only the list shows it
    page.wait_for_selector("#alerts li .timeline li:has-text('Døren')", timeout=15000)


def test_login_form_and_team_isolation(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 412, "height": 700})
    stack.publish("fall-b1", "fall.detected")
    stack.wait_alert("nurse-b", state="open")
    page.goto(f"{stack.base}/console")
    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    page.wait_for_selector("#login-error:has-text('Ukjent')")
    page.fill("#token", stack.tokens["nurse-a"])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#empty:not([hidden])")  # team B's alert is not shown to team A
    assert page.locator("#alerts li").count() == 0


def test_red_alert_rings_vibrates_and_notifies_until_acknowledged(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    with stack.client("nurse-a") as c:  # the real endpoint's shape
        assert "channels" in c.get("/api/health/channels").json()
    since_iso = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    failing = {
        "name": "webhook",
        "ok": False,
        "failing_since": since_iso,
        "consecutive_failures": 7,
    }
    ok = {"name": "mqtt", "ok": True, "failing_since": None, "consecutive_failures": 0}
    page = console_page(stack, browser, channels=[failing, ok])
    # a failing notification channel is in the header, in local time
    page.wait_for_selector("#channels:not([hidden])")
    since = page.evaluate(
        "(iso) => new Date(iso).toLocaleTimeString('nb-NO', {hour: '2-digit', minute: '2-digit'})",
        since_iso,
    )
    assert page.inner_text("#channels") == f"webhook feiler siden {since}"
    # installable: a manifest and a service worker controlling /console
    assert page.locator('link[rel="manifest"]').get_attribute("href") == (
        "/console/manifest.webmanifest"
    )
    manifest = page.request.get(f"{stack.base}/console/manifest.webmanifest")
    assert manifest.ok and manifest.json()["start_url"] == "/console"
    assert manifest.json()["display"] == "standalone"
    scope = page.wait_for_function(
        "navigator.serviceWorker.getRegistration('/console')"
        ".then(r => r && r.active ? r.scope : null)",
        timeout=10000,
    ).json_value()
    assert scope == f"{stack.base}/console"
    # on duty (a tap: browsers start audio only after one); the screen stays awake
    page.click("#duty")
    assert page.get_attribute("#duty", "aria-pressed") == "true"
    assert "På vakt" in page.inner_text("#duty")
    page.wait_for_function("window.__calls.wakeLock > 0")
    stack.publish("button-a1", "button.pressed")
    page.wait_for_selector("#alerts li.red", timeout=5000)
    page.wait_for_function(
        "window.trygg.alarm().playing && window.trygg.alarm().audio === 'running'"
        " && window.trygg.alarm().beeps >= 1"
    )
    calls = page.evaluate("window.__calls")
    assert calls["vibrate"] and calls["vibrate"][0][0] >= 200
    page.wait_for_function("window.__calls.notifications.length >= 1")
    n = page.evaluate("window.__calls.notifications[0]")
    assert n["via"] == "service-worker" and n["title"] == "Rød 4.13: Alarmknapp"
    assert n["requireInteraction"] and "r-a1" in n["body"]
    assert page.locator("#announce").inner_text().startswith("Ny alarm: Rød Alarmknapp")
    # it repeats until someone answers
    page.wait_for_function("window.trygg.alarm().beeps >= 2", timeout=6000)
    assert len(page.evaluate("window.__calls.vibrate")) >= 2
    shoot(page, "red-alarm")
    page.locator('#alerts li.red button[data-action="acknowledge"]').click()
    page.wait_for_selector('#alerts li.red[data-state="acknowledged"]')
    page.wait_for_function("!window.trygg.alarm().playing")
    beeps = page.evaluate("window.trygg.alarm().beeps")
    page.wait_for_timeout(3000)
    assert page.evaluate("window.trygg.alarm().beeps") == beeps  # silent now
    assert page.evaluate("window.__calls.vibrate").pop() == 0  # vibration stopped
    # a yellow alert does not ring (this one is held back while the red one is open)
    stack.publish("water-a1", "water.detected")
    page.wait_for_selector("#suppressed-list li.yellow", state="attached")
    page.wait_for_timeout(500)
    assert not page.evaluate("window.trygg.alarm().playing")
    assert not page.errors, page.errors


def test_resolving_asks_the_outcome_with_undo_and_false_alarm_is_stored(
    stack: Stack, browser
) -> None:  # type: ignore[no-untyped-def]
    page = console_page(stack, browser)
    stack.publish("fall-a1", "fall.detected")
    li = page.locator("#alerts li.red").first
    li.wait_for()
    aid = li.get_attribute("data-id")
    li.locator('button[data-action="take"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="accepted"]')
    li.locator('button[data-action="resolve"]').click()
    dialog = page.locator("#outcome")
    assert dialog.is_visible()
    choices = dialog.locator("#outcome-choices button").all_inner_texts()
    assert choices == [
        "Hjulpet",
        "Ikke behov for hjelp",
        "Ikke hjemme",
        "Falsk alarm",
        "Teknisk feil",
        "Testalarm",
        "Annet",
    ]
    shoot(page, "outcome")
    # keyboard: focus starts on the first choice; Escape goes back and sends nothing
    assert page.evaluate("document.activeElement.dataset.outcome") == "helped"
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    assert li.locator(".pending").is_hidden()
    li.locator('button[data-action="resolve"]').click()
    dialog.locator('button[data-outcome="false_alarm"]').focus()
    page.keyboard.press("Enter")
    # a few seconds to undo; undo keeps the alert open and sends nothing
    pending = li.locator(".pending")
    assert "Avsluttes som «Falsk alarm»" in pending.inner_text()
    assert page.evaluate("document.activeElement.dataset.action") == "undo"
    shoot(page, "undo")
    pending.locator("button.undo").click()
    page.wait_for_timeout(2500)
    assert stack.sql("SELECT state, outcome FROM alerts WHERE id = %s", aid) == [("accepted", None)]
    assert li.get_attribute("data-state") == "accepted"
    # this time it goes
    li.locator('button[data-action="resolve"]').click()
    dialog.locator('button[data-outcome="false_alarm"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"]', state="detached", timeout=10000)
    stack.wait_db_state(str(aid), "resolved")
    assert stack.sql("SELECT outcome FROM alerts WHERE id = %s", aid) == [("false_alarm",)]
    # an unanswered alarm can be reported false at once: cancelled, reason and outcome
    stack.publish("fall-a2", "fall.detected")
    li2 = page.locator("#alerts li.red").first
    li2.wait_for()
    aid2 = li2.get_attribute("data-id")
    assert li2.locator('button[data-action="cancel"]').inner_text() == "Falsk alarm"
    li2.locator('button[data-action="cancel"]').click()
    assert "Meldes som falsk alarm" in li2.locator(".pending").inner_text()
    page.wait_for_selector(f'#alerts li[data-id="{aid2}"]', state="detached", timeout=10000)
    stack.wait_db_state(str(aid2), "cancelled")
    assert stack.sql("SELECT cancel_reason, outcome FROM alerts WHERE id = %s", aid2) == [
        ("false_alarm", "false_alarm")
    ]
    assert not page.errors, page.errors


def test_fifty_offline_devices_of_one_resident_fold_into_one_card(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = console_page(stack, browser)
    service = stack.runner._alerting
    assert service is not None
    now = datetime.now(UTC)
    # After an ingest gap every device of a resident goes offline at once.
    for i in range(50):
        sig = Signal(
            SignalAction.FIRE,
            "device-offline",
            "r-a1",
            now - timedelta(seconds=50 - i),
            "T.1",
            Severity.YELLOW,
            "test-1",
            (),
            device=f"sensor-{i:02d}",
            title="device-offline",
        )
        stack.loop.call_soon_threadsafe(service.on_signal, sig)
    # The gates make them one alert listing its devices (one device-offline alert
    # per resident, docs/alerts.md); the console shows it as one card with the count.
    with stack.client("nurse-a") as c:

        def offline() -> list[dict[str, Any]]:
            r = c.get("/api/alerts", params={"state": "open", "rule": "device-offline"})
            return r.json()["alerts"]  # type: ignore[no-any-return]

        wait_until(lambda: len(offline()) == 1 and len(offline()[0]["devices"]) == 50, timeout=10)
    folded = page.locator('#alerts li[data-devices="50"]')
    folded.wait_for(timeout=10000)
    assert page.locator("#alerts > li").count() == 1
    assert "Enhet frakoblet · 50 enheter" in folded.locator(".title").inner_text()
    # the 49 further devices are not "repeated 49 times"
    assert "gjentatt" not in folded.locator(".meta").inner_text()
    assert page.inner_text("#count") == "(1)"
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 1500, height  # not 66,876 px
    folded.locator("details.devices summary").click()
    assert folded.locator(".device-list li").count() == 50
    folded.locator("details.devices summary").click()
    shoot(page, "folded")
    # one tap acknowledges the outage
    folded.locator('button[data-action="acknowledge"]').click()
    wait_until(
        lambda: (
            stack.sql(
                "SELECT count(*) FROM alerts"
                " WHERE rule = 'device-offline' AND state = 'acknowledged'"
            )
            == [(1,)]
        ),
        timeout=20,
    )
    assert not page.errors, page.errors


def test_suppressed_alerts_sit_apart_without_buttons_in_norwegian(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    with stack.client("nurse-a") as c:
        r = c.post(
            "/api/silences",
            json={
                "scope": "resident",
                "target": "r-a2",
                "end": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
                "reason": "på sykehus",
            },
        )
        assert r.status_code == 201, r.text
    stack.publish("fall-a2", "fall.detected")  # red, but silenced
    stack.publish("door-a1", "door.opened")  # scripted: device-offline for motion-a1
    stack.wait_alert("nurse-a", state="open", rule="device-offline")
    stack.publish("motion-a1", "motion.detected")  # scripted inactivity: inhibited
    inhibited = stack.wait_alert("nurse-a", state="open", rule="inactivity")
    assert inhibited["suppressed_why"]["code"] == "inhibited"
    assert inhibited["suppressed_why"]["device"] == "motion-a1"
    page = console_page(stack, browser)
    box = page.locator("#suppressed")
    box.wait_for()
    assert box.get_attribute("open") is None  # collapsed
    assert page.inner_text("#suppressed-count") == "(2)"
    assert page.locator("#alerts li").count() == 1  # only the device-offline alert
    box.locator("> summary").click()
    quiet = box.locator("#suppressed-list li")
    assert quiet.count() == 2
    assert quiet.locator(".actions button").count() == 0
    text = box.inner_text()
    assert "Dempet av nurse-a til" in text and "«på sykehus»" in text
    assert "Holdes tilbake: enheten motion-a1 er frakoblet" in text
    body = page.inner_text("body")
    for english in ("inhibited", "silenced", "is offline", "alert "):
        assert english not in body, english
    # a silenced red alert does not ring
    page.click("#duty")
    page.wait_for_timeout(500)
    assert not page.evaluate("window.trygg.alarm().playing")
    # the API's refusals in Norwegian (English on request)
    said = page.evaluate(
        "window.trygg.errorWords(409, 'alert was acknowledged by nurse-a2 at "
        "2026-12-06T02:13:00+00:00 since you looked at it; look again')"
    )
    assert said.startswith("nurse-a2 har kvittert alarmen kl.") and said.endswith(
        "Se på den igjen."
    )
    assert page.evaluate("window.trygg.errorWords(409, 'alert is taken by nurse-b')") == (
        "Alarmen er allerede tatt av nurse-b."
    )
    assert page.evaluate("window.trygg.errorWords(0, null)").startswith("Ingen forbindelse")
    shoot(page, "suppressed")
    page.click("#lang")
    assert "Held back: device motion-a1 is offline" in box.inner_text()
    page.click("#lang")
    assert not page.errors, page.errors


def test_a_flood_of_technical_alerts_goes_apart_below_the_care_alarms(  # type: ignore[no-untyped-def]
    db, broker, tmp_path, browser
) -> None:
    # After an ingest gap every device of every home goes offline at once: eight
    # residents, three devices each, and one real alarm among them.
    registry = {
        "residents": [*REGISTRY["residents"]]
        + [{"id": f"r-x{i}", "team": "team-a"} for i in range(8)],
        "devices": REGISTRY["devices"],
    }
    stack = start_stack(db, broker, tmp_path, registry=registry)
    try:
        page = console_page(stack, browser)
        service = stack.runner._alerting
        assert service is not None
        now = datetime.now(UTC)
        for i in range(8):
            for d in range(3):
                sig = Signal(
                    SignalAction.FIRE,
                    "device-offline",
                    f"r-x{i}",
                    now,
                    "T.1",
                    Severity.YELLOW,
                    "test-1",
                    (),
                    device=f"x{i}-dev{d}",
                    title="device-offline",
                )
                stack.loop.call_soon_threadsafe(service.on_signal, sig)
        stack.publish("fall-a1", "fall.detected")
        box = page.locator("#technical")
        box.wait_for(timeout=10000)
        # one alert per resident (docs/alerts.md), each listing its three devices
        page.wait_for_function(
            "document.querySelector('#technical-title').textContent"
            " === 'Tekniske varsler: 8 alarmer hos 8 beboere'"
            " && document.querySelectorAll('#technical-list > li[data-devices=\"3\"]')"
            ".length === 8",
            timeout=10000,
        )
        page.wait_for_selector("#alerts li.red")
        assert box.get_attribute("open") is None  # collapsed
        assert page.locator("#alerts > li").count() == 1  # the fall alone on top
        assert page.inner_text("#count") == "(9)"
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height < 1200, height
        shoot(page, "flood")
        box.locator("> summary").click()
        cards = box.locator("#technical-list > li")
        assert cards.count() == 8
        assert all("3 enheter" in t for t in cards.locator(".title").all_inner_texts())
        assert not page.errors, page.errors
    finally:
        stack.close()


def test_a_failing_webhook_shows_in_the_header(db, broker, tmp_path, browser) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    stack = start_stack(db, broker, tmp_path, webhook_url=dead)
    try:
        stack.publish("fall-a1", "fall.detected")
        with stack.client("nurse-a") as c:

            def failing() -> dict[str, Any] | None:
                chans = c.get("/api/health/channels").json()["channels"]
                return next(
                    (x for x in chans if x["name"].startswith("webhook") and not x["ok"]), None
                )

            ch = wait_until(failing, timeout=20)
        page = console_page(stack, browser)
        page.wait_for_selector("#channels:not([hidden])")
        since = page.evaluate(
            "(iso) => new Date(iso).toLocaleTimeString('nb-NO',"
            " {hour: '2-digit', minute: '2-digit'})",
            ch["failing_since"],
        )
        assert page.inner_text("#channels") == f"webhook feiler siden {since}"
        page.click("#lang")
        assert page.inner_text("#channels").startswith("webhook failing since")
        page.click("#lang")
        shoot(page, "channel-failing")
        assert not page.errors, page.errors
    finally:
        stack.close()


FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const cs = getComputedStyle(e);
  const li = e.closest('.alerts > li');
  return {
    tag: e.tagName, action: e.dataset.action || null, outcome: e.dataset.outcome || null,
    id: e.id || null, card: li ? li.dataset.id : null, inDialog: !!e.closest('dialog'),
    visible: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2,
  };
}"""


def tab_to(page: Any, want: Any, limit: int = 40) -> dict[str, Any]:
    """Press Tab until ``want(focused)``; every control on the way shows its focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        f = page.evaluate(FOCUSED)
        if f is None:  # the page itself, between the last control and the first
            continue
        assert f["visible"], f
        if want(f):
            return f  # type: ignore[no-any-return]
    raise AssertionError(f"not reached by Tab in {limit} presses")


def test_resolve_with_an_outcome_by_keyboard_alone(stack: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    page = console_page(stack, browser)
    # a yellow alert and, right behind it, a red one; later another red one
    stack.publish("water-a1", "water.detected")
    stack.publish("fall-a1", "fall.detected")
    page.wait_for_selector("#alerts li.red")
    page.wait_for_selector("#alerts li.yellow")
    aid = page.locator("#alerts li.red").first.get_attribute("data-id")
    water = page.locator("#alerts li.yellow").first.get_attribute("data-id")
    stack.publish("fall-a2", "fall.detected")  # newer, so it sorts first
    page.wait_for_selector("#alerts li.red >> nth=1")
    other = page.locator("#alerts li.red").first.get_attribute("data-id")
    assert other != aid
    # New alarms are said in an assertive live region; a red one by name even when
    # it comes within the 1.5 s that fold a flood into one sentence.
    assert page.get_attribute("#announce", "aria-live") == "assertive"
    page.wait_for_function(
        "window.__calls.announced.some(s => s.includes('Rød Fall, Beboer r-a1'))"
        " && window.__calls.announced.some(s => s.includes('Rød Fall, Beboer r-a2'))"
    )
    # every button has a name a screen reader says (Chromium's accessibility tree)
    tree = page.locator("body").aria_snapshot()
    buttons = [ln.strip() for ln in tree.splitlines() if ln.strip().startswith("- button")]
    assert buttons and all(re.match(r'- button "[^"]+"', b) for b in buttons), buttons
    assert '- button "EN (English)"' in tree  # the visible "EN" is in its name

    # from the top of the page by Tab to the card's "Jeg tar den", focus visible throughout
    card = f'#alerts li[data-id="{aid}"]'
    tab_to(page, lambda f: f["card"] == aid and f["action"] == "take")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'{card}[data-state="accepted"]')
    # its buttons were rebuilt: focus stays on the card, not back at the top
    f = page.evaluate(FOCUSED)
    assert f is not None and f["card"] == aid and f["tag"] == "ARTICLE", f
    tab_to(page, lambda f: f["card"] == aid and f["action"] == "resolve", limit=5)

    # the outcome dialog: opens on the first choice, keeps focus inside, Escape goes back
    page.keyboard.press("Enter")
    dialog = page.locator("#outcome")
    assert dialog.is_visible()
    assert page.evaluate(FOCUSED)["outcome"] == "helped"
    n = dialog.locator("button").count()  # the choices and "Tilbake"
    for key in ["Tab"] * (n + 2) + ["Shift+Tab"] * 4:
        page.keyboard.press(key)
        f = page.evaluate(FOCUSED)
        assert f is not None and f["inDialog"] and f["visible"], (key, f)
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    f = page.evaluate(FOCUSED)
    assert f is not None and (f["card"], f["action"]) == (aid, "resolve"), f
    assert page.locator(f"{card} .pending").is_hidden()

    # again, and "Ikke hjemme" by Tab and Enter
    page.keyboard.press("Enter")
    assert dialog.is_visible()
    tab_to(page, lambda f: f["outcome"] == "not_at_home", limit=n)
    shoot(page, "keyboard-outcome")
    page.keyboard.press("Enter")
    assert not dialog.is_visible()
    assert "Avsluttes som «Ikke hjemme»" in page.inner_text(f"{card} .pending")
    f = page.evaluate(FOCUSED)
    assert f is not None and (f["card"], f["action"]) == (aid, "undo"), f
    # nothing more pressed: after the undo time it is sent, and the card goes
    page.wait_for_selector(card, state="detached", timeout=10000)
    stack.wait_db_state(str(aid), "resolved")
    assert stack.sql("SELECT outcome FROM alerts WHERE id = %s", aid) == [("not_at_home",)]
    assert "Avsluttet som «Ikke hjemme»." in page.inner_text("#toasts")
    # focus went to the next card, not to the top of the page
    f = page.evaluate(FOCUSED)
    assert f is not None and f["card"] == water and f["tag"] == "ARTICLE", f
    tab_to(page, lambda f: f["card"] == water and f["action"] is not None, limit=3)
    assert not page.errors, page.errors
