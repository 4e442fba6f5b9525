"""Notification channels against real receivers: webhook retries (idempotency key
stable), e-mail to a real local SMTP server, MQTT to the team topic, and a
failing channel that does not hold back the others."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion
from tenacity import stop_after_attempt

from tests.alerting_stack import ROUTING, Stack, start_stack
from tests.helpers import WebhookReceiver, wait_until
from trygg.alerts.contacts import Channel
from trygg.alerts.escalation import Notification
from trygg.devenv import free_port
from trygg.notify.base import Delivery
from trygg.notify.retry import RetryPolicy, retry_delivery
from trygg.notify.webhooks import NamedWebhooks

EMAIL_ROUTING = ROUTING.replace(
    "phones: {contacts: [{channel: webhook, address: default}]}",
    "phones: {contacts: [{channel: webhook, address: default},"
    " {channel: email, address: vakt@example.kommune.no}]}",
)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
        )
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = free_port()
    c = Controller(inbox, hostname="127.0.0.1", port=port)
    c.start()
    try:
        yield port, inbox
    finally:
        c.stop()


def test_webhook_retries_deliver_once_with_a_stable_key() -> None:
    """A receiver that fails twice: the third attempt lands, every attempt had the same key."""
    seen: list[tuple[int, str]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((len(seen) + 1, self.headers["Idempotency-Key"]))
            self.send_response(503 if len(seen) <= 2 else 204)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    n = Notification(
        "a-1",
        "notify",
        1,
        0,
        "team_on_duty",
        "phones",
        Channel.WEBHOOK,
        "default",
        datetime.now(UTC),
    )

    async def go() -> Any:
        hooks = NamedWebhooks({"default": f"http://127.0.0.1:{port}/"}, "k")
        tries = 0

        async def attempt() -> Delivery:
            nonlocal tries
            tries += 1
            d = await hooks.send(n, "default", {"id": "a-1"})
            return Delivery(d.ok, tries, d.status, d.error, d.retry)

        try:
            return await retry_delivery(attempt, RetryPolicy(0.05), stop=stop_after_attempt(5))
        finally:
            await hooks.aclose()

    d = asyncio.run(go())
    srv.shutdown()
    assert d.ok and d.attempts == 3
    assert [k for _, k in seen] == ["a-1:notify:1:0:webhook:default"] * 3


@pytest.fixture
def flaky_stack(db, broker, tmp_path) -> Iterator[tuple[Stack, WebhookReceiver]]:  # type: ignore[no-untyped-def]
    with WebhookReceiver(fail_first=2) as hook:
        s = start_stack(db, broker, tmp_path, webhook_url=hook.url)
        try:
            yield s, hook
        finally:
            s.close()


def test_webhook_retries_through_trygg_are_recorded(flaky_stack) -> None:  # type: ignore[no-untyped-def]
    stack, hook = flaky_stack
    stack.publish("fall-a1", "fall.detected")
    wait_until(lambda: hook.received, timeout=10)
    time.sleep(0.5)
    assert len(hook.received) == 1 and hook.attempts == 3
    _, headers, body = hook.received[0]
    assert headers["Idempotency-Key"] == f"{body['id']}:notify:1:0:webhook:default"
    # the first failure is recorded at once, then the delivery after the retries
    wait_until(
        lambda: (
            stack.sql(
                "SELECT attempts, ok FROM alert_deliveries WHERE channel = 'webhook' ORDER BY id"
            )
            == [(1, False), (3, True)]
        )
    )


def test_email_mqtt_and_a_failing_webhook(db, broker, tmp_path, smtp) -> None:  # type: ignore[no-untyped-def]
    smtp_port, inbox = smtp
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # connection refused, retried with backoff
    got: list[tuple[float, str, dict[str, Any]]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="staff-phone", protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append((time.monotonic(), m.topic, json.loads(m.payload)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("trygg/oslo/teams/+/alerts", qos=1)
    sub.loop_start()
    stack = start_stack(
        db,
        broker,
        tmp_path,
        routing=EMAIL_ROUTING,
        webhook_url=dead,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="trygg@example.kommune.no",
    )
    try:
        t0 = time.monotonic()
        stack.publish("fall-a1", "fall.detected")
        wait_until(lambda: got, timeout=5)
        # MQTT to the team topic at once, while the webhook is still being retried
        arrived, topic, body = got[0]
        assert topic == "trygg/oslo/teams/team-a/alerts"
        assert body["rule"] == "fall" and body["notification"]["channel"] == "mqtt"
        assert arrived - t0 < 1.0
        wait_until(lambda: inbox.messages, timeout=10)
        rcpt, msg = inbox.messages[0]
        assert rcpt == ["vakt@example.kommune.no"]
        assert "4.1" in msg["Subject"] and "r-a1" in msg["Subject"]
        assert msg["X-Trygg-Idempotency-Key"].endswith(":email:vakt@example.kommune.no")
        assert "Fall" in msg.get_payload() or "fall" in msg.get_payload()
        ok = stack.sql("SELECT channel FROM alert_deliveries WHERE ok ORDER BY channel")
        wait_until(
            lambda: (
                {r[0] for r in stack.sql("SELECT channel FROM alert_deliveries WHERE ok")}
                == {"console", "email", "mqtt"}
            )
        )
        # the webhook's first failure is recorded; a red alert's notification is then
        # retried until it is delivered or the alert is closed (tests/test_outbox.py)
        wait_until(
            lambda: (
                stack.sql("SELECT attempts, ok FROM alert_deliveries WHERE channel = 'webhook'")
                == [(1, False)]
            ),
            timeout=15,
        )
        del ok
        err = stack.sql("SELECT error FROM alert_deliveries WHERE channel = 'webhook'")[0][0]
        assert "Connect" in err
        assert stack.runner._alerting.retrying == 1
    finally:
        stack.close()
        sub.loop_stop()
        sub.disconnect()
