"""The care-staff console in a real headless Chromium (Debian's), driven by Playwright.

An alert published on MQTT appears without a reload; pressing a button
changes the alert in the database; a screenshot is saved as an artefact.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerting_stack import Stack, start_stack
from tests.helpers import WebhookReceiver

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
    first.locator("details summary").click()
    page.wait_for_selector("#alerts li.red .timeline li")
    assert "Fall oppdaget (badet)" in first.locator(".timeline").inner_text()
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
    page.wait_for_selector(f'#alerts li[data-id="{aid}"]', state="detached")
    stack.wait_db_state(str(aid), "resolved")
    assert not errors, errors


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
