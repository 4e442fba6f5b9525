"""What an operator sees of the distributed runner (issue 18): its logs and its
latency histograms, on real components.

A private mosquitto, a private TimescaleDB and tansu (Kafka protocol);
``trygg bridge``, ``trygg worker`` (with Faust's web server, for /metrics) and
``trygg api`` run as processes (tests.distributed_stack) in JSON log mode at
INFO. Alarms are published over MQTT; staff take and arrive through the API.

- Every line the worker wrote to stdout and stderr is one JSON object (Faust's
  and mode's logging go through trygg.logs), and none carries a payload.
- The worker's /metrics has the embedded runner's histograms for the steps it
  does (event -> raised, raised -> notified by channel, the sink's lag as
  trygg_drainer_lag_seconds), the API's /metrics those of staff (notified ->
  acknowledged, acknowledged -> arrived), and they move with the alerts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytest.importorskip("faust")

from tests.conftest import new_database
from tests.distributed_stack import Stack
from tests.helpers import wait_until
from tests.test_latency_metrics import HISTOGRAMS, Scrape, _check_buckets, _check_promql, _moved
from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port
from trygg.distributed.tansu import PrivateTansu
from trygg.registry import parse_registry
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry
from trygg.store.users import add_user

SITE = "test"
SECRET = "do-not-log-this-payload-field"  # in every payload; must appear in no log
REGISTRY = {
    "residents": [{"id": f"r-{i}", "team": "team-a"} for i in range(6)],
    "devices": [
        {"id": f"fall-{i}", "resident": f"r-{i}", "kind": "fall", "room": "bathroom"}
        for i in range(6)
    ],
}


@dataclass
class Ops:
    db: str
    stack: Stack
    pub: mqtt.Client
    api_port: int
    web_port: int
    token: str

    def publish(self, device: str, n: int) -> None:
        body = {
            "id": f"e-{device}-{n}",
            "type": "fall.detected",
            "time": datetime.now(UTC).isoformat(),
            "note": SECRET,
        }
        info = self.pub.publish(f"trygg/{SITE}/devices/{device}/events", json.dumps(body), qos=1)
        info.wait_for_publish(10)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def metrics(self, where: str) -> str:
        port = self.web_port if where == "worker" else self.api_port
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        r.raise_for_status()
        return r.text


def _owns_partitions(stack: Stack, name: str) -> bool:
    owned = [ln for ln in stack.log(name).splitlines() if "partitions owned" in ln]
    return bool(owned) and '"partitions": []' not in owned[-1]


@pytest.fixture(scope="module")
def ops(pg_server: PrivatePostgres) -> Iterator[Ops]:
    db = new_database(pg_server)
    migrate(db)
    with psycopg.connect(db) as conn:
        save_registry(conn, parse_registry(REGISTRY, "test"))
        token = add_user(conn, "nurse-a", "care_staff", ["team-a"])
    with PrivateMosquitto() as broker, PrivateTansu() as tansu:
        stack = Stack(
            bootstrap=tansu.bootstrap,
            mqtt_url=broker.url,
            database_url=db,
            site=SITE,
            partitions=2,
            clock="wall",
            extra={"TRYGG_LOG_LEVEL": "INFO"},
        )
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
        web_port, api_port = free_port(), free_port()
        try:
            stack.cli("kafka", "topics")
            stack.start(
                "w1",
                "worker",
                "--web",
                TRYGG_WORKER_DATA_DIR=str(stack.dir / "w1"),
                TRYGG_WORKER_WEB_HOST="127.0.0.1",
                TRYGG_WORKER_WEB_PORT=str(web_port),
            )
            stack.bridge("b1")
            stack.api("api", api_port)
            wait_until(lambda: _owns_partitions(stack, "w1"), timeout=90)

            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2).is_success
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=30, interval=0.2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            yield Ops(db, stack, pub, api_port, web_port, token)
        finally:
            pub.loop_stop()
            pub.disconnect()
            stack.close()


def _alerts(ops: Ops, resident: str | None = None) -> list[dict[str, Any]]:
    with ops.api() as c:
        params = {"state": "open", **({"resident": resident} if resident else {})}
        r = c.get("/api/alerts", params=params)
        r.raise_for_status()
        return list(r.json()["alerts"])


@pytest.mark.slow
def test_every_line_of_the_worker_is_json_without_payloads(ops: Ops) -> None:
    for i in range(4):  # r-4 and r-5 are the next test's
        for n in range(5):
            ops.publish(f"fall-{i}", n)
    wait_until(lambda: len(_alerts(ops)) >= 4, timeout=60, interval=0.3)
    # a dead letter too (an unknown device): logged, without its payload
    ops.publish("no-such-device", 0)
    wait_until(lambda: "no-such-device" in ops.stack.log("b1"), timeout=30, interval=0.3)
    text = ops.stack.log("w1")
    lines = text.splitlines()
    assert len(lines) >= 5, text  # INFO: start-up, partitions, Faust's own lines
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line!r}") from None
        assert isinstance(doc, dict) and "event" in doc and "level" in doc, line
    # Faust's and mode's own records are among them, as JSON with their logger name
    assert any(json.loads(x).get("logger", "").startswith(("faust", "mode")) for x in lines), text
    for name in ("w1", "b1", "api"):
        assert SECRET not in ops.stack.log(name), name
        assert not re.search(r"^\[\d{4}-", ops.stack.log(name), re.M), name  # colorlog's prefix


def _scrape(ops: Ops, where: str) -> Scrape:
    def get() -> str | None:
        try:
            return ops.metrics(where)
        except httpx.HTTPError:
            return None

    return Scrape(wait_until(get, timeout=30, interval=0.3))


def _act(ops: Ops, alert_id: str, action: str) -> None:
    with ops.api() as c:
        r = c.post(f"/api/alerts/{alert_id}/{action}", json={})
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_histograms_present_and_moving_in_the_distributed_stack(ops: Ops, tmp_path: Any) -> None:
    before = {w: _scrape(ops, w) for w in ("worker", "api")}
    ops.publish("fall-4", 0)
    a = wait_until(
        lambda: [x for x in _alerts(ops, "r-4") if x["state"] == "notified"],
        timeout=60,
        interval=0.3,
    )[0]
    _act(ops, a["id"], "take")
    _act(ops, a["id"], "arrive")
    worker = _scrape(ops, "worker")

    def stored() -> bool:  # the sink's lag is observed once the event is in the database
        nonlocal worker
        worker = _scrape(ops, "worker")
        return _moved(before["worker"], worker, "trygg_drainer_lag_seconds")[0] >= 1

    wait_until(stored, timeout=30, interval=0.3)
    api = _scrape(ops, "api")
    # the worker: the raise (by the event, a moment after it was sent), the notifications
    # on each channel of the built-in routing, the sink's lag
    n, s = _moved(before["worker"], worker, "trygg_alert_receipt_to_raised_seconds", severity="red")
    assert n == 1 and 0 <= s < 30, (n, s)
    n, s = _moved(
        before["worker"], worker, "trygg_alert_event_to_raised_seconds", severity="red",
        trigger="event",
    )  # fmt: skip
    assert n == 1 and 0 <= s < 30, (n, s)
    for channel in ("mqtt", "console"):
        n, s = _moved(
            before["worker"], worker, "trygg_alert_raised_to_notified_seconds", channel=channel
        )
        assert n == 1 and 0 <= s < 30, (channel, n, s)
    n, s = _moved(before["worker"], worker, "trygg_drainer_lag_seconds")
    assert n >= 1 and 0 <= s / n < 30, (n, s)
    # the API: staff's steps, as they were confirmed
    for name in (
        "trygg_alert_notified_to_acknowledged_seconds",
        "trygg_alert_acknowledged_to_arrived_seconds",
    ):
        n, s = _moved(before["api"], api, name, severity="red")
        assert n == 1 and 0 <= s < 60, (name, n, s)
    # every latency histogram is in one of the two, and the dashboard's PromQL finds
    # its metrics and labels in them (its spool panel is the embedded runner's)
    both = Scrape(worker.text + api.text)
    for name in HISTOGRAMS:
        _check_buckets(both, name)
    _check_promql(both, tmp_path, spool=False)
