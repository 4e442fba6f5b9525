"""The durable outbox (issue 15): a notification is retried with backoff and the same
idempotency key until it is delivered, its alert is closed, or its channel's give-up
time passes; each channel's health is in /metrics and GET /api/health/channels;
Apprise channels (json://, ntfy://, mailto://) with secrets from the environment;
the built-in routing has no webhook when none is configured.

The one slow test (``test_receivers_down_for_60_s_get_the_alarm_once``) keeps the
outage real: webhook, e-mail and an Apprise target are down for 60 s while trygg runs,
and each gets the fall alarm once when it comes back, without a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import structlog
from aiosmtpd.controller import Controller

from tests.alerting_stack import ROUTING, start_stack
from tests.helpers import wait_until
from trygg.alerts.contacts import Channel
from trygg.alerts.routing_config import RoutingError, parse_routing_text
from trygg.api.exposition import render
from trygg.devenv import free_port
from trygg.model import Severity, Signal, SignalAction
from trygg.notify.apprise_channel import AppriseChannel, decorate, expand
from trygg.notify.base import Delivery
from trygg.notify.retry import GiveUp, RetryPolicy
from trygg.runner.alerting import AlertService
from trygg.runner.routing import routing_from

# ------------------------------------------------------------------ helpers


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 503 until ``up`` is set (or refuses
    connections until it is started), recording every request."""

    def __init__(self, port: int | None = None, up: bool = True) -> None:
        self.port = port or free_port()
        self.up = up
        self.tries: list[tuple[float, dict[str, str], bytes]] = []
        self.received: list[tuple[float, dict[str, str], Any]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.tries.append((time.monotonic(), dict(self.headers), body))
                if not outer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append((time.monotonic(), dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: object) -> None:
                pass

        self._handler = H
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
        )
        return "250 OK"


def metric(text: str, name: str, channel: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{channel="{channel}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------------ the service alone

UNIT_ROUTING = """
version: 1
recipients:
  phones: {contacts: [{channel: webhook, address: default}]}
teams:
  every-team:
    on_duty: {day: [phones], evening: [phones], night: [phones]}
default_team: every-team
policies:
  red: {steps: [{after: 0s, notify: [team_on_duty]}]}
  yellow: {steps: [{after: 0s, notify: [team_on_duty]}]}
  green: {steps: [{after: 0s, notify: [team_on_duty]}]}
"""


class Flaky:
    """A channel that fails ``fail`` times (HTTP 503, or permanently), then delivers."""

    def __init__(self, fail: int, *, permanent: bool = False) -> None:
        self.fail = fail
        self.permanent = permanent
        self.calls: list[tuple[float, str, str]] = []

    async def send(self, n: Any, address: str, payload: dict[str, Any]) -> Delivery:
        self.calls.append((time.monotonic(), n.key, payload["idempotency_key"]))
        if len(self.calls) <= self.fail:
            return Delivery(False, 1, 503, "HTTP 503", retry=not self.permanent)
        return Delivery(True, 1, 204)

    async def aclose(self) -> None:
        pass


def _signal(severity: Severity = Severity.RED) -> Signal:
    return Signal(
        SignalAction.FIRE,
        "fall" if severity is Severity.RED else "water",
        "r-1",
        datetime.now(UTC),
        "4.1",
        severity,
        "test-1",
        ("e-1",),
        title="fall",
    )


def _service(ch: Any, **kw: Any) -> AlertService:
    async def append(records: list[Any]) -> None:
        pass

    async def db(*a: Any, **k: Any) -> Any:
        raise AssertionError("no database here")

    return AlertService(
        parse_routing_text(UNIT_ROUTING, "test"),
        spool_append=append,
        db=db,
        channels={Channel.WEBHOOK: ch},
        retry=kw.pop("retry", RetryPolicy(0.02, 0.1)),
        **kw,
    )


def _deliveries(svc: AlertService) -> list[tuple[int, bool, str | None]]:
    return [(r["attempts"], r["ok"], r["error"]) for r in svc._out if r.get("op") == "dlv"]


async def _settle(svc: AlertService, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while svc._tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_retries_until_delivered_with_one_key_and_health() -> None:
    async def go() -> None:
        ch = Flaky(fail=4)
        svc = _service(ch)
        t0 = time.monotonic()
        svc.on_signal(_signal())
        await asyncio.sleep(0)  # the first attempt goes out at once, in its own task
        await asyncio.sleep(0)
        assert ch.calls and ch.calls[0][0] - t0 < 0.05
        wait = time.monotonic() + 3
        while svc.health.get("webhook:default").consecutive_failures < 3:
            assert time.monotonic() < wait
            await asyncio.sleep(0.005)
        text = render(None, svc)
        assert metric(text, "trygg_channel_up", "webhook:default") == 0.0
        assert (metric(text, "trygg_channel_consecutive_failures", "webhook:default") or 0) >= 3
        assert metric(text, "trygg_channel_failing_since_timestamp_seconds", "webhook:default")
        assert svc.retrying == 1
        await _settle(svc)
        assert len(ch.calls) == 5
        gaps = [b[0] - a[0] for a, b in zip(ch.calls, ch.calls[1:], strict=False)]
        assert gaps[0] >= 0.015 and gaps[2] > gaps[0]  # the first retry waits too; backoff
        keys = {k for _, k, _ in ch.calls} | {k for _, _, k in ch.calls}
        assert len(keys) == 1 and keys.pop().endswith(":notify:1:0:webhook:default")
        # the first failure at once, then the delivery
        assert _deliveries(svc) == [(1, False, "HTTP 503"), (5, True, None)]
        text = render(None, svc)
        assert metric(text, "trygg_channel_up", "webhook:default") == 1.0
        assert metric(text, "trygg_channel_consecutive_failures", "webhook:default") == 0.0
        assert (metric(text, "trygg_channel_last_success_timestamp_seconds", "webhook:default")) > 0
        assert svc.retrying == 0
        assert svc.deliveries_by[("webhook", "ok")] == 1
        snap = svc.health.snapshot()
        assert [c["name"] for c in snap] == ["webhook:default"]
        assert snap[0]["ok"] and snap[0]["failing_since"] is None

    asyncio.run(go())


def test_closing_the_alert_stops_the_retries() -> None:
    async def go() -> None:
        ch = Flaky(fail=10_000)
        svc = _service(ch, retry=RetryPolicy(2.0, 5.0))  # the first retry 2 s away
        svc.on_signal(_signal())
        while not svc.retrying:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        (a,) = svc.open_alerts()
        await svc.act(a.id, "cancel", "nurse-1", reason="false_alarm")
        await _settle(svc, within=1.0)  # at once, not after the wait
        await asyncio.sleep(0.3)
        assert len(ch.calls) == 1  # no more attempts
        (first, last) = _deliveries(svc)
        assert first[:2] == (1, False) and last[1] is False and "closed" in (last[2] or "")
        assert svc.deliveries_by[("webhook", "cancelled")] == 1
        assert ("webhook", "failed") not in svc.deliveries_by

    asyncio.run(go())


def test_give_up_time_per_channel_and_red_never() -> None:
    g = GiveUp.parse({"webhook.yellow": "1s", "email": "2h", "green": "never"})
    assert g.after("webhook", "yellow").total_seconds() == 1  # type: ignore[union-attr]
    assert g.after("email", "red").total_seconds() == 7200  # type: ignore[union-attr]
    assert g.after("webhook", "green") is None
    assert GiveUp().after("webhook", "red") is None  # red: never, by default
    assert GiveUp().after("webhook", "yellow").total_seconds() == 3600  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        GiveUp.parse({"webhook": "soon"})

    async def go() -> None:
        ch = Flaky(fail=10_000)
        svc = _service(ch, give_up=g)
        t0 = time.monotonic()
        svc.on_signal(_signal(Severity.YELLOW))
        await _settle(svc, within=5)
        assert 1.0 <= time.monotonic() - t0 < 2.5
        last = _deliveries(svc)[-1]
        assert last[1] is False and "gave up after 0:00:01" in (last[2] or "")
        assert svc.deliveries_by[("webhook", "failed")] == 1

    asyncio.run(go())


def test_a_permanent_failure_is_not_retried() -> None:
    async def go() -> None:
        ch = Flaky(fail=10, permanent=True)
        svc = _service(ch)
        svc.on_signal(_signal())
        await _settle(svc)
        assert len(ch.calls) == 1
        assert _deliveries(svc) == [(1, False, "HTTP 503")]

    asyncio.run(go())


def test_stopping_ends_the_retries_at_once_and_records_it() -> None:
    async def go() -> None:
        ch = Flaky(fail=10_000)
        svc = _service(ch, retry=RetryPolicy(5.0, 5.0))  # a long wait: the stop cuts it short
        svc.on_signal(_signal())
        while not svc.retrying:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await svc.stop()
        assert time.monotonic() - t0 < 1.0 and svc.retrying == 0
        last = _deliveries(svc)[-1]
        assert last[1] is False and (last[2] or "").endswith("(trygg stopped)")

    asyncio.run(go())


def test_the_retry_policy_backs_off_with_jitter() -> None:
    p = RetryPolicy(0.5, 15.0, 0.25)
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 15.0), (40, 15.0)):
        waits = {p.delay(attempt) for _ in range(50)}
        assert all(base * 0.75 <= w <= base * 1.25 for w in waits)
        assert len(waits) > 1  # jittered


# ------------------------------------------------------------------ Apprise


def test_apprise_urls_secrets_from_the_environment() -> None:
    assert expand("json://${U}:${P}@h/x", {"U": "a", "P": "b"}) == "json://a:b@h/x"
    with pytest.raises(KeyError):
        expand("ntfys://${NTFY_TOKEN}@h/x", {})
    assert decorate("ntfy://h/t", "k", "red").endswith("?priority=max")
    assert decorate("ntfys://h/t?priority=low", "k", "red") == "ntfys://h/t?priority=low"
    assert "priority=high" in decorate("ntfy://h/t", "k", "yellow")
    d = decorate("json://h/x?a=1", "a-1:notify:1:0:apprise:x", "red")
    assert "&+Idempotency-Key=a-1%3Anotify" in d and ":idempotency_key=" in d
    # the routing file refuses literal secrets in an apprise URL
    for bad in ("json://u:secret@h/x", "ntfys://h/t?token=tk_123", "not a url"):
        with pytest.raises(RoutingError):
            parse_routing_text(
                UNIT_ROUTING.replace(
                    "{channel: webhook, address: default}",
                    f"{{channel: apprise, address: '{bad}'}}",
                ),
                "routing.yaml",
            )
    parse_routing_text(
        UNIT_ROUTING.replace(
            "{channel: webhook, address: default}",
            "{channel: apprise, address: 'ntfys://${NTFY_TOKEN}@ntfy.example.no/t'}",
        ),
        "routing.yaml",
    )


def _note(channel: Channel, address: str) -> Any:
    from trygg.alerts.escalation import Notification

    return Notification(
        "a-1", "notify", 1, 0, "team_on_duty", "phones", channel, address, datetime.now(UTC)
    )


def _payload(n: Any, severity: str = "red") -> dict[str, Any]:
    from trygg.notify.base import payload

    alert = {"id": "a-1", "rule": "fall", "code": "4.1", "severity": severity}
    return payload({**alert, "resident": "r-1", "team": "t", "state": "raised"}, n, n.address)


def test_apprise_json_ntfy_and_mailto_against_local_receivers() -> None:
    hook = Receiver().start()
    inbox = _Inbox()
    smtp_port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    ctl.start()
    env = {"HOOK_USER": "trygg", "HOOK_PASS": "s3cret", "SMTP_FROM": "trygg@example.kommune.no"}
    ch = AppriseChannel(env=env)
    try:
        a = f"json://${{HOOK_USER}}:${{HOOK_PASS}}@127.0.0.1:{hook.port}/alerts"
        n = _note(Channel.APPRISE, a)
        d = asyncio.run(ch.send(n, a, _payload(n)))
        assert d.ok, d
        _, headers, body = hook.received[-1]
        assert headers["Idempotency-Key"] == n.key and body["idempotency_key"] == n.key
        assert n.key in body["message"] and "4.1" in body["title"]
        assert base64.b64decode(headers["Authorization"].split()[1]) == b"trygg:s3cret"
        assert "s3cret" not in n.key  # the stored address keeps ${HOOK_PASS}

        ntfy = f"ntfy://127.0.0.1:{hook.port}/stovner-nord"
        n = _note(Channel.APPRISE, ntfy)
        assert asyncio.run(ch.send(n, ntfy, _payload(n))).ok
        _, headers, body = hook.received[-1]
        assert headers["X-Priority"] == "max" and body["topic"] == "stovner-nord"

        mail = f"mailto://127.0.0.1:{smtp_port}?to=vakt@example.kommune.no&from=${{SMTP_FROM}}"
        n = _note(Channel.APPRISE, mail)
        d = asyncio.run(ch.send(n, mail, _payload(n)))
        assert d.ok, d
        rcpt, msg = inbox.messages[-1]
        subject = str(make_header(decode_header(msg["Subject"])))
        assert rcpt == ["vakt@example.kommune.no"] and "4.1 fall" in subject

        missing = "json://${NOT_SET_ANYWHERE}@127.0.0.1/x"
        n = _note(Channel.APPRISE, missing)
        d = asyncio.run(ch.send(n, missing, _payload(n)))
        assert not d.ok and not d.retry and "NOT_SET_ANYWHERE" in (d.error or "")
    finally:
        hook.stop()
        ctl.stop()


# ------------------------------------------------------------------ defaults


def test_without_a_webhook_the_default_route_has_none_and_says_so_once() -> None:
    with structlog.testing.capture_logs() as logs:
        r = routing_from(None, webhooks={})
    assert not r.recipients
    assert all(c.channel is not Channel.WEBHOOK for t in r.teams.values() for c in t.contacts)
    said = [e for e in logs if "no webhook configured" in e["event"]]
    assert len(said) == 1 and said[0]["log_level"] == "warning"
    with structlog.testing.capture_logs() as logs:
        r = routing_from(None, webhooks={"default": "http://127.0.0.1:9/x"})
    assert r.recipients["on-call"].contacts[0].channel is Channel.WEBHOOK
    assert not logs


# ------------------------------------------------------------------ 60 s outage, for real

OUTAGE_ROUTING = ROUTING.replace(
    "phones: {contacts: [{channel: webhook, address: default}]}",
    "phones: {contacts: [{channel: webhook, address: default},"
    " {channel: email, address: vakt@example.kommune.no},"
    " {channel: apprise, address: 'json://127.0.0.1:APPRISE_PORT/alerts'}]}",
)


@pytest.fixture
def outage() -> Iterator[dict[str, Any]]:
    hook = Receiver(up=False).start()  # answers 503 while down
    target = Receiver()  # the Apprise target: not listening while down
    smtp_port = free_port()
    inbox = _Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    box: dict[str, Any] = {"hook": hook, "target": target, "smtp": (smtp_port, inbox, ctl)}
    try:
        yield box
    finally:
        hook.stop()
        target.stop()
        if box.get("smtp_up"):
            ctl.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_receivers_down_for_60_s_get_the_alarm_once(db, broker, tmp_path, outage) -> None:  # type: ignore[no-untyped-def]
    hook, target = outage["hook"], outage["target"]
    smtp_port, inbox, ctl = outage["smtp"]
    stack = start_stack(
        db,
        broker,
        tmp_path,
        routing=OUTAGE_ROUTING.replace("APPRISE_PORT", str(target.port)),
        webhook_url=f"http://127.0.0.1:{hook.port}/alerts",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="trygg@example.kommune.no",
    )
    try:
        with stack.client("nurse-a") as api:
            t0 = time.monotonic()
            stack.publish("fall-a1", "fall.detected")
            wait_until(lambda: hook.tries, timeout=5)
            assert hook.tries[0][0] - t0 < 1.0  # the first attempt at once

            # down: every channel is failing, in /metrics and in the API
            def failing() -> bool:
                text = httpx.get(f"{stack.base}/metrics", timeout=5).text
                return all(
                    metric(text, "trygg_channel_up", ch) == 0.0
                    and (metric(text, "trygg_channel_consecutive_failures", ch) or 0) >= 2
                    for ch in ("webhook:default", "email", "apprise:json")
                )

            wait_until(failing, timeout=15)
            health = {c["name"]: c for c in api.get("/api/health/channels").json()["channels"]}
            assert health["webhook:default"]["ok"] is False
            assert health["webhook:default"]["failing_since"]
            assert health["mqtt"]["ok"] is True and health["console"]["ok"] is True

            # still retrying past 60 s: then all three come back
            while time.monotonic() - t0 < 60:
                time.sleep(0.5)
            assert not hook.received and not target.received and not inbox.messages
            hook.up = True
            target.start()
            ctl.start()
            outage["smtp_up"] = True
            t_up = time.monotonic()

            wait_until(lambda: hook.received and target.received and inbox.messages, timeout=30)
            assert time.monotonic() - t_up < 25  # the longest wait between retries: 15 s ± 25 %
            time.sleep(3)
            # once each, with the key of the first attempt
            assert len(hook.received) == 1 and len(target.received) == 1
            assert len(inbox.messages) == 1
            keys = {h["Idempotency-Key"] for _, h, _ in hook.tries}
            (key,) = keys
            assert key.endswith(":notify:1:0:webhook:default")
            assert hook.received[0][2]["idempotency_key"] == key
            # retried throughout: the last failed try came at most one longest wait
            # (15 s + 25 % jitter = 18.75 s) before the receivers came back at 60 s
            assert len(hook.tries) >= 7 and hook.tries[-2][0] - t0 > 60 - 18.75 - 0.5
            assert target.received[0][1]["Idempotency-Key"].endswith(
                f":apprise:json://127.0.0.1:{target.port}/alerts"
            )
            _, msg = inbox.messages[0]
            assert msg["X-Trygg-Idempotency-Key"].endswith(":email:vakt@example.kommune.no")

            text = httpx.get(f"{stack.base}/metrics", timeout=5).text
            for ch in ("webhook:default", "email", "apprise:json"):
                assert metric(text, "trygg_channel_up", ch) == 1.0
                assert metric(text, "trygg_channel_consecutive_failures", ch) == 0.0
            health = {c["name"]: c for c in api.get("/api/health/channels").json()["channels"]}
            assert all(c["ok"] for c in health.values())
            assert api.get("/api/health/channels").json()["retrying"] == 0
            wait_until(
                lambda: (
                    {
                        r[0]
                        for r in stack.sql(
                            "SELECT channel FROM alert_deliveries WHERE ok AND attempts > 3"
                        )
                    }
                    == {"webhook", "email", "apprise"}
                ),
                timeout=10,
            )
    finally:
        stack.close()
