"""End to end through a real broker and database: ``trygg run`` as its own process.

A separate process publishes; trygg validates, stores, raises the fall alert
and POSTs it to a real HTTP receiver.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from trygg.devenv import PrivateMosquitto

SITE = "oslo"
REGISTRY = """
residents:
  - id: r-0001
    team: stovner-nord
  - id: r-0002
    team: grorud-sor
devices:
"""


@pytest.fixture
def registry_file(tmp_path, db):  # type: ignore[no-untyped-def]
    lines = [REGISTRY]
    for i in range(10):
        lines.append(
            f"  - {{id: bed-{i:04d}, resident: r-000{1 + i % 2}, kind: bed, room: bedroom}}\n"
        )
    lines.append("  - {id: fall-0001, resident: r-0001, kind: fall, room: bathroom}\n")
    p = tmp_path / "registry.yaml"
    p.write_text("".join(lines))
    out = trygg_cli("registry", "load", str(p), "--database-url", db)
    assert "loaded 2 residents and 11 devices" in out.stdout
    return p


def _count(db: str, sql: str) -> int:
    with psycopg.connect(db) as c:
        row = c.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _env(broker: PrivateMosquitto, db: str, **extra: str) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": f"trygg-test-{time.monotonic_ns()}",
        **extra,
    }


def test_thousand_events_stored_once_and_malformed_become_dead_letters(
    broker: PrivateMosquitto, db: str, registry_file
) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    valid = []
    for i in range(1000):
        dev = f"bed-{i % 10:04d}"
        when = (now - timedelta(seconds=1000 - i)).isoformat()
        typ = "bed.vacant" if i % 2 else "bed.occupied"
        valid.append((f"trygg/{SITE}/devices/{dev}/events", event_json(f"e-{i}", typ, when)))
    t = now.isoformat()
    malformed = [
        (f"trygg/{SITE}/devices/bed-0001/events", b"{not json"),
        (f"trygg/{SITE}/devices/bed-0001/events", b'{"id": "x", "type": "bed.vacant"}'),
        (f"trygg/{SITE}/devices/bed-0001/events", event_json("x", "bed.levitating", t)),
        (f"trygg/{SITE}/devices/bed-0001/events", event_json("x", "temperature", t)),
        (f"trygg/{SITE}/devices/bed-0001/events", event_json("x", "battery", t, value=140)),
        (
            f"trygg/{SITE}/devices/bed-0001/events",
            b'{"id": "x", "type": "bed.vacant", "time": "2026-03-29T01:50:00"}',
        ),
        (f"trygg/{SITE}/devices/nobody-0001/events", event_json("x", "bed.vacant", t)),
        (f"trygg/{SITE}/devices/bed-0001/events", b"[]"),
        (f"trygg/{SITE}/devices/bed-0001/events", b'"just a string"'),
        (
            f"trygg/{SITE}/devices/bed-0001/events",
            event_json("x", "bed.vacant", (now - timedelta(days=8)).isoformat()),
        ),
    ]
    with TryggProcess(_env(broker, db)) as trygg:
        trygg.wait_connected()
        publish(broker.port, valid + malformed)
        wait_until(lambda: _count(db, "SELECT count(*) FROM dead_letters") >= 10)
        wait_until(lambda: _count(db, "SELECT count(*) FROM events") >= 1000)
        assert _count(db, "SELECT count(*) FROM events") == 1000
        assert _count(db, "SELECT count(DISTINCT (device, event_id)) FROM events") == 1000
        with psycopg.connect(db) as c:
            reasons = [r[0] for r in c.execute("SELECT reason FROM dead_letters ORDER BY id")]
        assert len(reasons) == 10
        for expected in [
            "not JSON",
            "event.time: Field required",
            "event.type: Input should be",
            "needs a numeric 'value'",
            "outside 0..100",
            "timezone",
            "unknown device 'nobody-0001'",
            "empty JSON array",
            "expected a JSON object or array",
            "old (limit",
        ]:
            assert any(expected in r for r in reasons), (expected, reasons)

        # The same 1,000 again (and the 10 malformed, which tell us when it is done).
        publish(broker.port, valid + malformed)
        wait_until(lambda: _count(db, "SELECT count(*) FROM dead_letters") >= 20)
        time.sleep(0.3)
        assert _count(db, "SELECT count(*) FROM events") == 1000
    # Logs name devices and reasons, never payload contents.
    assert "e-999" not in trygg.output()


def test_fall_raises_one_alert_and_reaches_the_webhook_within_a_second(
    broker: PrivateMosquitto, db: str, registry_file
) -> None:  # type: ignore[no-untyped-def]
    with (
        WebhookReceiver() as hook,
        TryggProcess(
            _env(broker, db, TRYGG_WEBHOOK_URL=hook.url, TRYGG_WEBHOOK_SECRET="s3cret")
        ) as trygg,
    ):
        trygg.wait_connected()
        when = datetime.now(UTC).isoformat()
        # Warm the path with a harmless event so the measurement is of steady state.
        publish(
            broker.port,
            [(f"trygg/{SITE}/devices/bed-0001/events", event_json("warm", "bed.occupied", when))],
        )
        wait_until(lambda: _count(db, "SELECT count(*) FROM events") == 1)
        sent = publish(
            broker.port,
            [
                (
                    f"trygg/{SITE}/devices/fall-0001/events",
                    event_json("f-1", "fall.detected", when, room="bathroom"),
                )
            ],
        )
        wait_until(lambda: hook.received, timeout=5)
        arrived, headers, body = hook.received[0]
        assert arrived - sent < 1.0, f"webhook after {arrived - sent:.3f} s"
        assert body["rule"] == "fall" and body["code"] == "4.1" and body["severity"] == "red"
        assert body["resident"] == "r-0001" and body["team"] == "stovner-nord"
        assert body["events"] == ["f-1"]
        assert headers["X-Trygg-Signature"].startswith("sha256=")
        # the routing's notification key: alert:action:level:n:channel:address
        assert headers["Idempotency-Key"] == f"{body['id']}:notify:1:0:webhook:default"
        wait_until(lambda: _count(db, "SELECT count(*) FROM alert_records") == 2)
        with psycopg.connect(db) as c:
            alerts = c.execute(
                "SELECT id::text, rule, code, severity, state, events FROM alerts"
            ).fetchall()
            steps = [r[0] for r in c.execute("SELECT step FROM alert_records ORDER BY id")]
        assert alerts == [(body["id"], "fall", "4.1", "red", "notified", ["f-1"])]
        assert steps == ["raised", "notified"]
        assert len(hook.received) == 1
