"""The late-event policy through the live runner: MQTT in, webhook out.

The same cases as rules/tests/late-events.yaml, on a real mosquitto, a real
TimescaleDB and ``trygg run``: an alarm ten minutes late, one thirty minutes
behind its own device, a device whose clock runs an hour ahead, the same event
twice. Times are relative to now: the decoder refuses events older than a week.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from trygg.devenv import PrivateMosquitto

SITE = "oslo"


def _registry(tmp_path: Path, url: str) -> None:
    p = tmp_path / "registry.yaml"
    p.write_text(
        "residents:\n  - {id: r-1, team: t1}\n"
        "devices:\n"
        "  - {id: pir-1, resident: r-1, kind: motion, room: livingroom}\n"
        "  - {id: button-1, resident: r-1, kind: button}\n"
        "  - {id: fall-1, resident: r-1, kind: fall, room: livingroom}\n"
        "  - {id: therm-1, resident: r-1, kind: thermometer, room: kitchen}\n"
    )
    trygg_cli("registry", "load", str(p), "--database-url", url)


def _msg(device: str, eid: str, typ: str, when: datetime, **extra: object) -> tuple[str, bytes]:
    return (
        f"trygg/{SITE}/devices/{device}/events",
        event_json(eid, typ, when.isoformat(), **extra),
    )


def test_late_alarms_and_a_fast_clock_through_the_live_runner(
    tmp_path: Path, broker: PrivateMosquitto, db: str
) -> None:
    _registry(tmp_path, db)
    with WebhookReceiver() as hook:
        env = {
            "TRYGG_MQTT_URL": broker.url,
            "TRYGG_DATABASE_URL": db,
            "TRYGG_SITE": SITE,
            "TRYGG_MQTT_CLIENT_ID": "trygg-late",
            "TRYGG_WEBHOOK_URL": hook.url,
        }
        with TryggProcess(env) as trygg:
            trygg.wait_connected()
            now = datetime.now(UTC)
            publish(
                broker.port,
                [
                    _msg("pir-1", "m1", "motion.detected", now),
                    _msg("fall-1", "h1", "heartbeat", now),
                    # a gateway that was cut off: the press is ten minutes old, behind the
                    # home's newest event but in order for its own button (not late)
                    _msg("button-1", "late-10", "button.pressed", now - timedelta(minutes=10)),
                    # thirty minutes behind its own detector's heartbeat
                    _msg("fall-1", "late-30", "fall.detected", now - timedelta(minutes=30)),
                    # the thermometer's clock is an hour fast
                    _msg("therm-1", "t1", "temperature", now + timedelta(hours=1), value=21),
                    # ... and is set right: evaluated as any event, so not stored as late
                    # (behind its own newest time, but that time was wrong)
                    _msg("therm-1", "t2", "temperature", now + timedelta(seconds=1), value=21),
                    _msg("button-1", "press", "button.pressed", now),
                    _msg("button-1", "press", "button.pressed", now),  # the same event twice
                ],
            )

            def paged() -> dict[str, dict[str, object]]:
                return {
                    b["events"][0]: b
                    for _, _, b in hook.received
                    if b["rule"] in ("button", "fall")
                }

            got = wait_until(lambda: p if len(p := paged()) >= 2 else None, timeout=10)
            assert set(got) == {"late-10", "late-30"}
            # staff see how late it is
            assert 590 < float(got["late-10"]["delay_s"]) < 700  # type: ignore[arg-type]
            assert 1790 < float(got["late-30"]["delay_s"]) < 1900  # type: ignore[arg-type]

            def stored() -> list[tuple[str, int]] | None:
                with psycopg.connect(db) as c:
                    rows = c.execute("SELECT rule, repeat_count FROM alerts ORDER BY rule")
                    got = [(r[0], int(r[1])) for r in rows]
                return got if any(r == "device-clock" for r, _ in got) else None

            # The press a moment later repeats the open button alert (one open alert per
            # resident and rule); sent twice, it counts once. The fast clock is flagged
            # and makes nobody look offline.
            assert wait_until(stored, timeout=10) == [
                ("button", 1),
                ("device-clock", 0),
                ("fall", 0),
            ]

            def late() -> list[str] | None:
                with psycopg.connect(db) as c:
                    if c.execute("SELECT count(*) FROM events").fetchone() != (7,):
                        return None  # not all stored yet (one of the eight is a repeat)
                    rows = c.execute("SELECT event_id FROM events WHERE late ORDER BY event_id")
                    return [r[0] for r in rows]

            # stored, flagged late, and alerted; the clock set right is not late
            assert wait_until(late, timeout=10) == ["late-30"]


def test_two_offline_devices_page_once_and_inhibit_inactivity_live(
    tmp_path: Path, broker: PrivateMosquitto, db: str
) -> None:
    """The gates of rules/tests and tests/replay_gates.yaml, live: two sensors of
    one home go silent -> one device-offline alert, listing both, that closes
    when the last is back; the home's inactivity alert is not sent meanwhile."""
    p = tmp_path / "registry.yaml"
    p.write_text(
        "residents:\n"
        "  - {id: r-1, team: t1, overrides: {inactivity: {for: 10s, window: always,"
        " reason: 'test: seconds, not hours'}}}\n"
        "devices:\n"
        "  - {id: pir-1, resident: r-1, kind: motion, room: livingroom, heartbeat: 2s}\n"
        "  - {id: door-1, resident: r-1, kind: door, room: entrance, heartbeat: 2s}\n"
        "  - {id: button-1, resident: r-1, kind: button, heartbeat: 1h}\n"
    )
    trygg_cli("registry", "load", str(p), "--database-url", db)
    with WebhookReceiver() as hook:
        env = {
            "TRYGG_MQTT_URL": broker.url,
            "TRYGG_DATABASE_URL": db,
            "TRYGG_SITE": SITE,
            "TRYGG_MQTT_CLIENT_ID": "trygg-fold",
            "TRYGG_WEBHOOK_URL": hook.url,
        }
        with TryggProcess(env) as trygg:
            trygg.wait_connected()
            now = datetime.now(UTC)
            publish(
                broker.port,
                [
                    _msg("pir-1", "m1", "motion.detected", now),
                    _msg("door-1", "d1", "heartbeat", now),
                    _msg("button-1", "b1", "heartbeat", now),
                ],
            )

            def offline() -> tuple[str, list[str], str] | None:
                with psycopg.connect(db) as c:
                    row = c.execute(
                        "SELECT a.id::text, a.state, (SELECT array_agg(r.data->>'device')"
                        " FROM alert_records r WHERE r.alert_id = a.id"
                        " AND r.step IN ('raised', 'repeated')) FROM alerts a"
                        " WHERE a.rule = 'device-offline'"
                    ).fetchall()
                if len(row) != 1 or sorted(row[0][2] or []) != ["door-1", "pir-1"]:
                    return None
                return row[0][0], sorted(row[0][2]), row[0][1]

            # more than 3 x 2 s without a word from either: one alert for the home
            got = wait_until(offline, timeout=30)
            assert got is not None, hook.received
            aid = got[0]
            # no activity for 10 s: the inactivity alert is stored, suppressed, not sent

            def inactivity() -> str | None:
                with psycopg.connect(db) as c:
                    r = c.execute(
                        "SELECT suppressed_reason FROM alerts WHERE rule = 'inactivity'"
                    ).fetchone()
                return str(r[0]) if r else None

            reason = wait_until(inactivity, timeout=30)
            assert reason is not None and "offline" in reason, reason
            rules = [b["rule"] for _, _, b in hook.received]
            assert rules.count("device-offline") == 1 and "inactivity" not in rules, rules

            def state() -> str:
                with psycopg.connect(db) as c:
                    r = c.execute("SELECT state FROM alerts WHERE id = %s", [aid]).fetchone()
                return str(r[0]) if r else ""

            # the motion sensor is back: the alert stays open for the door
            publish(broker.port, [_msg("pir-1", "m2", "heartbeat", datetime.now(UTC))])

            def noted() -> bool:
                with psycopg.connect(db) as c:
                    return bool(
                        c.execute(
                            "SELECT 1 FROM alert_records WHERE alert_id = %s"
                            " AND data->>'device_cleared' = 'pir-1'",
                            [aid],
                        ).fetchone()
                    )

            assert wait_until(noted, timeout=15)
            assert state() in ("raised", "notified")
            # the door too: the alert closes (the motion sensor speaks again with it,
            # in case a slow machine let it fall silent once more meanwhile)
            now = datetime.now(UTC)
            publish(
                broker.port,
                [_msg("pir-1", "m3", "heartbeat", now), _msg("door-1", "d2", "heartbeat", now)],
            )
            assert wait_until(lambda: state() == "cancelled", timeout=15), state()
