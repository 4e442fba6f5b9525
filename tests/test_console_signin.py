"""Sign-in fit for a phone (issue 16, item 3), in Debian's Chromium (Playwright),
against the whole embedded stack (real mosquitto, PostgreSQL, HTTP) and, for
OpenID Connect, a real provider: panva's ``oidc-provider`` from npm
(tests/oidc, installed by scripts/setup), started here on 127.0.0.1.

(a) A team leader's console makes a one-time link and QR code; a phone opens
    it, taps once and is signed in by a cookie (no code or token left in the
    URL, none in the page's storage); an alert arrives, is acknowledged, and
    the database has it acknowledged by that user; the session survives the
    tab closing; the link does not work twice.
(b) The leader revokes the phone's session: its requests are refused and its
    live stream gets ``event: revoked`` and closes within 5 s; the console
    goes back to the sign-in.
(c) An expired session is refused the same way (its stream closed too).
(d) Sign-in through the identity provider (authorization code with PKCE),
    then an alert acknowledged by the user the claims name; a provider
    account that is no trygg user is refused.

Every enrolment, exchange, sign-in and revocation is in the access log.
Screenshots go to .artifacts/signin-*.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.alerting_stack import Stack, start_stack
from tests.conftest import REPO, trygg_cli
from tests.helpers import WebhookReceiver, wait_until
from trygg.devenv import free_port
from trygg.store.users import add_user

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
ARTIFACTS = REPO / ".artifacts"
OIDC_DIR = REPO / "tests" / "oidc"
PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Mobile Safari/537.36"
)
ACCOUNTS = {
    # role and teams from the provider's claims: created in trygg at sign-in
    "kari": {"name": "Kari Nordmann", "trygg_role": "care_staff", "trygg_teams": ["team-a"]},
    # no role claim: must already be a trygg user (nurse-b is, from the stack)
    "nurse-b": {},
    # no role claim and no trygg user: refused
    "stranger": {},
}

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is missing")


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Provider:
    def __init__(self, port: int) -> None:
        self.port = port
        self.issuer = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, redirect_uri: str) -> None:
        assert (OIDC_DIR / "node_modules" / "oidc-provider").is_dir(), (
            "tests/oidc/node_modules is missing: run scripts/setup (npm ci in tests/oidc)"
        )
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_REDIRECT_URI": redirect_uri,
            "OIDC_CLIENT_ID": "trygg",
            "OIDC_CLIENT_SECRET": "trygg-test-secret",
            "OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
        }
        self.proc = subprocess.Popen(
            ["node", str(OIDC_DIR / "provider.mjs")],
            cwd=OIDC_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

        def up() -> bool:
            try:
                r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, interval=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def provider() -> Iterator[Provider]:
    if not shutil.which("node"):
        pytest.fail("node is missing: scripts/setup installs it")
    p = Provider(free_port())
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def stack(db, broker, tmp_path, provider) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with psycopg.connect(db) as conn:
        leader = add_user(conn, "leader-a", "team_leader", ["team-a"])
    with WebhookReceiver() as hook:
        s = start_stack(
            db,
            broker,
            tmp_path,
            webhook_url=hook.url,
            oidc_issuer=provider.issuer,
            oidc_client_id="trygg",
            oidc_client_secret="trygg-test-secret",
            oidc_scopes="openid profile trygg",
            oidc_role_claim="trygg_role",
            oidc_teams_claim="trygg_teams",
        )
        s.tokens["leader-a"] = leader
        provider.start(f"{s.base}/auth/oidc/callback")
        try:
            yield s
        finally:
            s.close()


# ------------------------------------------------------------------ helpers


def phone(browser: Any) -> Any:
    """A phone's browser: its own cookie jar, a phone's size and User-Agent."""
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=1,
        is_mobile=True,
        has_touch=True,
        user_agent=PHONE_UA,
    )
    ctx.add_init_script("window.TRYGG_UNDO_MS = 1500;")
    return ctx


def errors_of(page: Any) -> list[str]:
    errs: list[str] = []
    page.on("pageerror", lambda e: errs.append(str(e)))
    return errs


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"signin-{name}.png"), full_page=True)


def leader_console(stack: Stack, browser: Any) -> Any:
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    page.goto(f"{stack.base}/console#token={stack.tokens['leader-a']}")
    page.wait_for_selector("#live.on")
    assert "token=" not in page.url
    page.click("#phones summary")
    return page


def enrol_in_console(page: Any, user: str, team: str = "") -> str:
    page.fill("#enrol-user", user)
    page.fill("#enrol-team", team)
    page.click("#enrol button[type=submit]")
    page.wait_for_selector("#enrol-out:not([hidden]) #enrol-qr svg, #enrol-error:not(:empty)")
    assert not page.inner_text("#enrol-error"), page.inner_text("#enrol-error")
    link = page.inner_text("#enrol-link").strip()
    assert "/auth/enrol?code=te_" in link
    return str(link)


def exchange(ctx: Any, link: str) -> Any:
    """Open the link on the phone and tap once: the console, signed in."""
    page = ctx.new_page()
    page.goto(link)
    page.wait_for_selector("#enrol")
    assert "code=" not in page.url  # taken out of the address bar at once
    page.click("#enrol")
    page.wait_for_url("**/console")
    page.wait_for_selector("#live.on")
    return page


def access_rows(stack: Stack, action: str, **detail: str) -> list[tuple[Any, ...]]:
    rows = stack.sql(
        "SELECT actor, role, detail FROM access_log WHERE action = %s ORDER BY id", action
    )
    return [r for r in rows if all(r[2].get(k) == v for k, v in detail.items())]


def session_cookie(ctx: Any) -> dict[str, Any]:
    found = [c for c in ctx.cookies() if c["name"] in ("trygg_session", "__Host-trygg_session")]
    assert len(found) == 1, ctx.cookies()
    return dict(found[0])


class Stream:
    """A raw live stream (/api/stream) signed in by a session cookie, read in a thread."""

    def __init__(self, base: str, cookie: str) -> None:
        self.lines: list[str] = []
        self.closed_at: float | None = None
        self.revoked_at: float | None = None
        self.opened = threading.Event()
        self._t = threading.Thread(target=self._run, args=(base, cookie), daemon=True)
        self._t.start()
        assert self.opened.wait(10)

    def _run(self, base: str, cookie: str) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(30, read=30)) as c,
            c.stream("GET", f"{base}/api/stream", headers={"Cookie": cookie}) as r,
        ):
            assert r.status_code == 200, r.status_code
            self.opened.set()
            for line in r.iter_lines():
                self.lines.append(line)
                if line == "event: revoked":
                    self.revoked_at = time.monotonic()
        self.closed_at = time.monotonic()


# ------------------------------------------------------------------ (a)


def test_enrolled_phone_acknowledges_an_alert_and_keeps_its_session(
    stack: Stack, browser: Any
) -> None:
    leader = leader_console(stack, browser)
    leader_errors = errors_of(leader)
    # a new member of the leader's team, created by the enrolment
    link = enrol_in_console(leader, "phone-nurse", "team-a")
    assert leader.locator("#enrol-qr svg").get_attribute("role") == "img"
    shot(leader, "leader-qr")
    assert stack.sql(
        "SELECT role, teams, token_hash FROM api_users WHERE name = 'phone-nurse'"
    ) == [("care_staff", ["team-a"], None)]

    ctx = phone(browser)
    page = exchange(ctx, link)
    errors = errors_of(page)
    assert page.url == f"{stack.base}/console"  # no code, no token
    assert "phone-nurse" in page.inner_text("#who")
    cookie = session_cookie(ctx)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["value"].startswith("ts_")
    # 30 days (TRYGG_SESSION_DEVICE_DAYS), not a session cookie that dies with the browser
    assert 29.9 * 86400 < cookie["expires"] - time.time() <= 30 * 86400
    # nothing secret is visible to the page's script
    seen = page.evaluate(
        "JSON.stringify([document.cookie, {...sessionStorage}, {...localStorage}])"
    )
    assert "ts_" not in seen and "tg_" not in seen and "te_" not in seen, seen
    shot(page, "phone-console")

    # an alert arrives and is acknowledged on the phone
    stack.publish("fall-a1", "fall.detected", room="bathroom")
    page.wait_for_selector("#alerts li.red", timeout=10000)
    card = page.locator("#alerts li.red").first
    aid = card.get_attribute("data-id")
    card.locator('button[data-action="acknowledge"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="acknowledged"]')
    stack.wait_db_state(str(aid), "acknowledged")
    assert stack.sql("SELECT acknowledged_by FROM alerts WHERE id = %s", aid) == [("phone-nurse",)]

    # the tab is closed; a new one in the same browser is still signed in
    page.close()
    again = ctx.new_page()
    again.goto(f"{stack.base}/console")
    again.wait_for_selector("#live.on")
    assert "phone-nurse" in again.inner_text("#who")
    assert again.url == f"{stack.base}/console"
    me = again.evaluate("fetch('/api/me').then((r) => r.json())")
    assert me["name"] == "phone-nurse" and me["session"]["kind"] == "enrolled"

    # the link works once
    other = phone(browser).new_page()
    other.goto(link)
    assert "allerede brukt" in other.inner_text("main")
    shot(other, "link-used")

    # the leader sees the phone among the sign-ins
    leader.click("#phones summary")
    leader.click("#phones summary")
    leader.wait_for_selector('#sessions li[data-user="phone-nurse"]')
    assert "Android 14" in leader.inner_text('#sessions li[data-user="phone-nurse"]')

    # the trail: enrolment (by the leader), exchange (by the phone's user)
    wait_until(lambda: access_rows(stack, "session.exchange"), timeout=15)
    (enrol,) = access_rows(stack, "session.enrol", user="phone-nurse")
    assert enrol[0:2] == ("leader-a", "team_leader") and enrol[2]["created_user"] is True
    (ex,) = access_rows(stack, "session.exchange")
    assert ex[0:2] == ("phone-nurse", "care_staff")
    assert ex[2]["enrolment"] == enrol[2]["enrolment"] and ex[2]["device"].startswith("Android 14")
    assert not errors and not leader_errors, (errors, leader_errors)


# ------------------------------------------------------------------ (b)


def test_a_revoked_session_is_refused_and_its_stream_closed_within_5_s(
    stack: Stack, browser: Any
) -> None:
    leader = leader_console(stack, browser)
    link = enrol_in_console(leader, "nurse-a2")
    ctx = phone(browser)
    page = exchange(ctx, link)
    cookie = session_cookie(ctx)
    jar = f"{cookie['name']}={cookie['value']}"
    raw = Stream(stack.base, jar)
    sid = page.evaluate("fetch('/api/me').then((r) => r.json())")["session"]["id"]
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/api/stream" in r.url else None)

    # the leader revokes the phone's session from the console
    leader.click("#phones summary")
    leader.click("#phones summary")
    row = leader.locator(f'#sessions li[data-id="{sid}"]')
    row.wait_for()
    t0 = time.monotonic()
    row.locator('button[data-action="revoke"]').click()
    page.wait_for_selector("#login:not([hidden])", timeout=5000)
    assert "Innloggingen er avsluttet" in page.inner_text("#login-error")
    # the stream's `revoked` event took the phone to sign-in: no reconnect to find out
    assert streams == [], streams
    wait_until(lambda: raw.closed_at is not None, timeout=5)
    assert raw.revoked_at is not None and raw.revoked_at - t0 < 5.0
    assert raw.closed_at is not None and raw.closed_at - t0 < 5.0
    with httpx.Client(base_url=stack.base, headers={"Cookie": jar}) as c:
        r = c.get("/api/me")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        # a cookie-signed change from another site is refused before anything else
        r = c.post(
            "/api/alerts/00000000-0000-0000-0000-000000000000/acknowledge",
            json={},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403
    shot(page, "revoked")
    wait_until(lambda: access_rows(stack, "session.revoke", session=sid), timeout=15)
    (rev,) = access_rows(stack, "session.revoke", session=sid)
    assert rev[0:2] == ("leader-a", "team_leader") and rev[2]["user"] == "nurse-a2"


# ------------------------------------------------------------------ (c)


def test_an_expired_session_is_refused(stack: Stack, browser: Any) -> None:
    out = trygg_cli(
        "users",
        "enrol",
        "nurse-a",
        "--team",
        "team-a",
        "--url",
        stack.base,
        "--by",
        "ops",
        env={"TRYGG_DATABASE_URL": stack.db},
    )
    link = out.stdout.strip().splitlines()[0]
    assert link.startswith(f"{stack.base}/auth/enrol?code=te_"), out.stdout
    # when the link stops working, in local time with its offset
    assert re.search(r"it works once, until \d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d\.", out.stderr)
    ctx = phone(browser)
    page = exchange(ctx, link)
    cookie = session_cookie(ctx)
    jar = f"{cookie['name']}={cookie['value']}"
    raw = Stream(stack.base, jar)
    # the session's end comes (as if 30 days had passed)
    stack.sql(
        "UPDATE api_sessions SET expires_at = created_at + interval '1 millisecond'"
        " WHERE user_name = 'nurse-a' RETURNING id"
    )
    t0 = time.monotonic()
    wait_until(lambda: raw.closed_at is not None, timeout=5)
    assert raw.revoked_at is not None and raw.revoked_at - t0 < 5.0
    with httpx.Client(base_url=stack.base, headers={"Cookie": jar}) as c:
        assert c.get("/api/me").status_code == 401
        assert c.get("/api/alerts").status_code == 401
    page.reload()
    page.wait_for_selector("#login:not([hidden])")
    # the CLI's enrolment is in the trail as well
    (enrol,) = access_rows(stack, "session.enrol", user="nurse-a")
    assert enrol[0:2] == ("ops", "admin") and enrol[2]["via"] == "cli"


# ------------------------------------------------------------------ (d)


def test_openid_connect_sign_in_then_acknowledge(
    stack: Stack, browser: Any, provider: Provider
) -> None:
    ctx = phone(browser)
    page = ctx.new_page()
    errors = errors_of(page)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/auth?" in r.url else None)
    page.goto(f"{stack.base}/console")
    page.wait_for_selector("#oidc:not([hidden])")
    shot(page, "login")
    page.click("#oidc")
    # the provider's own pages: any login and password, then consent
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.fill('input[name="login"]', "kari")
    page.fill('input[name="password"]', "anything")
    page.click("button[type=submit]")
    page.wait_for_selector("button:has-text('Continue')")
    page.click("button:has-text('Continue')")
    page.wait_for_url(f"{stack.base}/console")
    page.wait_for_selector("#live.on")
    assert page.url == f"{stack.base}/console"  # no code, no state
    assert "kari" in page.inner_text("#who") and "team-a" in page.inner_text("#who")
    # authorization code with PKCE (S256), a nonce and a state
    (auth_url,) = [u for u in asked if u.startswith(f"{provider.issuer}/auth?")]
    for part in (
        "response_type=code",
        "code_challenge=",
        "code_challenge_method=S256",
        "nonce=",
        "state=",
    ):
        assert part in auth_url, auth_url
    cookie = session_cookie(ctx)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600  # one shift
    assert stack.sql("SELECT role, teams, source FROM api_users WHERE name = 'kari'") == [
        ("care_staff", ["team-a"], "oidc")
    ]

    stack.publish("button-a2", "button.pressed")
    page.wait_for_selector("#alerts li.red", timeout=10000)
    card = page.locator("#alerts li.red").first
    aid = card.get_attribute("data-id")
    card.locator('button[data-action="acknowledge"]').click()
    page.wait_for_selector(f'#alerts li[data-id="{aid}"][data-state="acknowledged"]')
    stack.wait_db_state(str(aid), "acknowledged")
    assert stack.sql("SELECT acknowledged_by FROM alerts WHERE id = %s", aid) == [("kari",)]
    shot(page, "oidc-console")

    # signing out revokes the session
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    with httpx.Client(base_url=stack.base) as c:
        jar = f"{cookie['name']}={cookie['value']}"
        assert c.get("/api/me", headers={"Cookie": jar}).status_code == 401

    # a provider account without a role claim that trygg does not know: refused
    other = phone(browser).new_page()
    other.goto(f"{stack.base}/auth/oidc/login")
    other.fill('input[name="login"]', "stranger")
    other.fill('input[name="password"]', "x")
    other.click("button[type=submit]")
    other.click("button:has-text('Continue')")
    other.wait_for_selector("main .error")
    assert "stranger is not a trygg user" in other.inner_text("main")
    assert not [c for c in other.context.cookies() if "trygg_session" in c["name"]]

    # an existing trygg user, signed in by the provider, keeps trygg's role and teams
    third = phone(browser).new_page()
    third.goto(f"{stack.base}/auth/oidc/login")
    third.fill('input[name="login"]', "nurse-b")
    third.fill('input[name="password"]', "x")
    third.click("button[type=submit]")
    third.click("button:has-text('Continue')")
    third.wait_for_selector("#live.on")
    assert "team-b" in third.inner_text("#who")

    wait_until(lambda: len(access_rows(stack, "session.signin", method="oidc")) == 2, timeout=15)
    kari = access_rows(stack, "session.signin", method="oidc")[0]
    assert kari[0:2] == ("kari", "care_staff") and kari[2]["sub"] == "kari"
    assert kari[2]["issuer"] == provider.issuer
    assert access_rows(stack, "session.revoke", reason="signed out")[0][0] == "kari"
    (refused,) = access_rows(stack, "session.signin_refused")
    assert refused[0] == "stranger"
    assert not errors, errors


def test_the_provider_script_is_the_one_setup_installs() -> None:
    lock = json.loads((OIDC_DIR / "package-lock.json").read_text())
    pkg = json.loads((OIDC_DIR / "package.json").read_text())
    assert (
        pkg["dependencies"]["oidc-provider"]
        == lock["packages"][""]["dependencies"]["oidc-provider"]
    )
    assert "npm ci" in (REPO / "scripts" / "setup").read_text()
    assert Path(OIDC_DIR / ".gitignore").read_text().strip() == "node_modules/"
