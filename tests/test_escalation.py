"""Escalation with ``trygg run`` as its own process: an unacknowledged red alert
reaches level 2 after 1 s and level 3 after 3 s, stops once acknowledged, and
the timers survive a restart of trygg in between."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from trygg.devenv import PrivateMosquitto, free_port

SITE = "oslo"
ROUTING = """
version: 1
recipients:
  phones: {contacts: [{channel: webhook, address: default}]}
  leader: {contacts: [{channel: webhook, address: leader}]}
  centre: {contacts: [{channel: webhook, address: centre}]}
teams:
  stovner-nord:
    on_duty: {day: [phones], evening: [phones], night: [phones]}
    leader: leader
default_team: stovner-nord
policies:
  red:
    steps:
      - {after: 0s, notify: [team_on_duty]}
      - {after: 1s, notify: [team_leader]}
      - {after: 3s, notify: [centre]}
  yellow: {steps: [{after: 0s, notify: [team_on_duty]}]}
  green: {steps: [{after: 0s, notify: [team_on_duty]}]}
"""
REGISTRY = """
residents:
  - {id: r-0001, team: stovner-nord}
  - {id: r-0002, team: stovner-nord}
devices:
  - {id: fall-0001, resident: r-0001, kind: fall}
  - {id: fall-0002, resident: r-0002, kind: fall}
"""


@pytest.fixture
def setup(tmp_path, db, broker):  # type: ignore[no-untyped-def]
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    trygg_cli("registry", "load", str(tmp_path / "registry.yaml"), "--database-url", db)
    out = trygg_cli(
        "users",
        "add",
        "nurse-1",
        "--role",
        "care_staff",
        "--team",
        "stovner-nord",
        "--database-url",
        db,
    )
    token = out.stdout.strip()
    assert token.startswith("tg_") and "keep this token" in out.stderr
    return tmp_path, token


def _env(
    broker: PrivateMosquitto, db: str, tmp_path, hook: WebhookReceiver, port: int
) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": f"trygg-esc-{time.monotonic_ns()}",
        "TRYGG_ROUTING": str(tmp_path / "routing.yaml"),
        "TRYGG_WEBHOOK_URL": hook.url,
        "TRYGG_WEBHOOKS": json.dumps({"leader": hook.url, "centre": hook.url}),
        "TRYGG_HTTP_PORT": str(port),
        "TRYGG_SPOOL_DIR": str(tmp_path / "spool"),
    }


def _fall(broker: PrivateMosquitto, device: str) -> None:
    when = datetime.now(UTC).isoformat()
    publish(
        broker.port,
        [
            (
                f"trygg/{SITE}/devices/{device}/events",
                event_json(f"f-{device}", "fall.detected", when),
            )
        ],
    )


def _levels(hook: WebhookReceiver, resident: str) -> list[int]:
    return [b["notification"]["level"] for _, _, b in hook.received if b["resident"] == resident]


def _ack(port: int, token: str, alert_id: str) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/alerts/{alert_id}/acknowledge",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text


def _steps(db: str, alert_id: str) -> list[tuple[str, int | None]]:
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT step, (data->>'level')::int FROM alert_records WHERE alert_id = %s"
            " ORDER BY seq",
            [alert_id],
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _wait_api(port: int) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=20)


def test_red_escalates_to_level_2_and_3_and_stops_when_acknowledged(setup, db, broker) -> None:  # type: ignore[no-untyped-def]
    tmp_path, token = setup
    port = free_port()
    with WebhookReceiver() as hook, TryggProcess(_env(broker, db, tmp_path, hook, port)) as t:
        t.wait_connected()
        _wait_api(port)
        t0 = time.monotonic()
        _fall(broker, "fall-0001")
        wait_until(lambda: _levels(hook, "r-0001") == [1, 2, 3], timeout=10)
        times = [arr - t0 for arr, _, b in hook.received if b["resident"] == "r-0001"]
        assert 0.8 < times[1] - times[0] < 2.0, times
        assert 2.6 < times[2] - times[0] < 4.0, times
        aid = hook.received[0][2]["id"]
        keys = [h["Idempotency-Key"] for _, h, _ in hook.received]
        assert keys == [
            f"{aid}:notify:1:0:webhook:default",
            f"{aid}:escalate:2:0:webhook:leader",
            f"{aid}:escalate:3:0:webhook:centre",
        ]
        # a second alert, acknowledged after level 2: no level 3
        _fall(broker, "fall-0002")
        wait_until(lambda: _levels(hook, "r-0002") == [1, 2], timeout=10)
        bid = next(b["id"] for _, _, b in hook.received if b["resident"] == "r-0002")
        _ack(port, token, bid)
        time.sleep(3.5)
        assert _levels(hook, "r-0002") == [1, 2]
        wait_until(lambda: _steps(db, bid)[-1][0] == "acknowledged")
        assert _steps(db, bid) == [
            ("raised", None),
            ("notified", 1),
            ("escalated", 2),
            ("acknowledged", None),
        ]


def test_escalation_timers_survive_a_restart(setup, db, broker) -> None:  # type: ignore[no-untyped-def]
    tmp_path, token = setup
    port = free_port()
    with WebhookReceiver() as hook:
        env = _env(broker, db, tmp_path, hook, port)
        first = TryggProcess(env).start()
        try:
            first.wait_connected()
            _wait_api(port)
            _fall(broker, "fall-0001")
            wait_until(lambda: _levels(hook, "r-0001") == [1, 2], timeout=10)
        finally:
            first.stop()  # down before level 3 is due (3 s after the raise)
        aid = hook.received[0][2]["id"]
        assert _steps(db, aid) == [("raised", None), ("notified", 1), ("escalated", 2)]
        with TryggProcess(env) as again:
            again.wait_connected()
            # level 3 comes once, after the restart; levels 1 and 2 are not repeated
            wait_until(lambda: _levels(hook, "r-0001") == [1, 2, 3], timeout=10)
            _wait_api(port)
            _ack(port, token, aid)
            time.sleep(1.5)
            assert _levels(hook, "r-0001") == [1, 2, 3]
            assert "alert service started" in again.output()
        wait_until(lambda: _steps(db, aid)[-1][0] == "acknowledged")
        assert _steps(db, aid) == [
            ("raised", None),
            ("notified", 1),
            ("escalated", 2),
            ("escalated", 3),
            ("acknowledged", None),
        ]
        keys = [h["Idempotency-Key"] for _, h, _ in hook.received]
        assert len(keys) == len(set(keys)) == 3
