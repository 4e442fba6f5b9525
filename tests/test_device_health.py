"""Device health: last seen, battery and the retained status (last will) per device."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, event_json, publish, wait_until

SITE = "oslo"


def _devices(url: str) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT id, last_seen IS NOT NULL, battery, online FROM devices"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_last_seen_battery_and_last_will(tmp_path, broker, db) -> None:  # type: ignore[no-untyped-def]
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        "residents: [{id: r-1, team: a}]\n"
        "devices:\n"
        "  - {id: button-1, resident: r-1, kind: button}\n"
        "  - {id: door-1, resident: r-1, kind: door, room: entrance}\n"
        "  - {id: bed-1, resident: r-1, kind: bed}\n"
    )
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    env = {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "trygg-health",
    }
    with TryggProcess(env) as trygg:
        trygg.wait_connected()
        now = datetime.now(UTC).isoformat()
        publish(
            broker.port,
            [
                (
                    f"trygg/{SITE}/devices/button-1/events",
                    event_json("b1", "battery", now, value=42),
                ),
                (
                    f"trygg/{SITE}/devices/button-1/events",
                    event_json("b2", "battery", now, value=12),
                ),
                (f"trygg/{SITE}/devices/door-1/events", event_json("d1", "heartbeat", now)),
            ],
        )
        wait_until(lambda: _devices(db)["button-1"][1] is not None)
        assert _devices(db)["button-1"] == (True, 12.0, True)
        assert _devices(db)["door-1"] == (True, None, True)
        assert _devices(db)["bed-1"] == (False, None, None)

        # The door sensor connects with a last will, then drops off the network.
        dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="door-1", protocol=mqtt.MQTTv5)
        dev.will_set(f"trygg/{SITE}/devices/door-1/status", b"offline", qos=1, retain=True)
        dev.connect("127.0.0.1", broker.port, keepalive=1)
        dev.loop_start()
        dev.publish(
            f"trygg/{SITE}/devices/door-1/status", b'{"status": "online"}', qos=1, retain=True
        ).wait_for_publish(5)
        time.sleep(0.3)
        dev.loop_stop()
        dev.socket().close()  # no DISCONNECT packet: the broker sends the will
        wait_until(lambda: _devices(db)["door-1"][2] is False, timeout=10)
    with psycopg.connect(db) as c:
        assert c.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
