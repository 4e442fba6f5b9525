"""Device identity on a real mosquitto with the files ``trygg devices credentials`` writes.

The broker runs ingest/mosquitto.conf (``allow_anonymous false``, a device
listener and a service listener) with the generated password files and ACL;
trygg runs as its own process with the service user's credentials, on the
service listener. tests/test_broker_sessions.py checks the client ids.
A device can only publish as itself and read only its own SCAIP responses.
Also SCAIP end to end: an ``<mrq>`` in, events stored, an ``<mrs>`` back.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker import ProductionMosquitto
from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, event_json, wait_until
from trygg.ingest.scaip import parse_mrs
from trygg.model import session_of

SITE = "oslo"
REGISTRY = """
residents:
  - {id: r-0001, team: stovner-nord}
  - {id: r-0002, team: grorud-sor}
devices:
  - {id: dev-a, resident: r-0001, kind: button, room: livingroom}
  - {id: dev-b, resident: r-0002, kind: button, room: bedroom}
"""


class Client:
    """A paho MQTT v5 client for one user, run from the test process."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{user}-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        self.connack: Any = None
        self.subacks: dict[int, list[Any]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._connected = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self._connected.wait(10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if self.connack is None:
            self.connack = rc
        self._connected.set()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[Any], props: Any) -> None:
        self.subacks[mid] = rcs

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> list[Any]:
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        acks: list[Any] = wait_until(lambda: self.subacks.get(mid), 10)
        return acks

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the PUBACK (whatever its reason code).

        mosquitto 2.0.11 answers a denied QoS 1 PUBLISH with PUBACK "Not
        authorized", after which paho 2.2 drops the connection and reconnects:
        wait for the connection before each publish, and retry one whose
        connection went away before its PUBACK.
        """
        for _ in range(5):
            wait_until(self.c.is_connected, 10)
            try:
                self.c.publish(topic, payload, qos=1).wait_for_publish(10)
                return
            except RuntimeError:  # the connection dropped under it
                time.sleep(0.2)
        raise AssertionError(f"could not publish to {topic}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def secured(tmp_path: Path, db: str) -> Iterator[tuple[ProductionMosquitto, dict[str, str]]]:
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    out = tmp_path / "broker"
    trygg_cli("devices", "credentials", "--registry", str(reg), "--site", SITE, "--out", str(out))
    with (out / "credentials.csv").open() as f:
        creds = {row["user"]: row["password"] for row in csv.DictReader(f)}
    with ProductionMosquitto(generated=out) as broker:
        yield broker, creds


def _trygg(broker: ProductionMosquitto, db: str, creds: dict[str, str]) -> TryggProcess:
    return TryggProcess(
        {
            "TRYGG_MQTT_URL": broker.service_url("trygg", creds["trygg"]),
            "TRYGG_DATABASE_URL": db,
            "TRYGG_SITE": SITE,
            "TRYGG_MQTT_CLIENT_ID": f"trygg-test-{time.monotonic_ns()}",
        }
    )


def _rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as c:
        return c.execute(sql).fetchall()


def _topic(device: str, channel: str) -> str:
    return f"trygg/{SITE}/devices/{device}/{channel}"


def test_a_device_publishes_only_as_itself(secured, db: str) -> None:  # type: ignore[no-untyped-def]
    broker, creds = secured
    now = datetime.now(UTC).isoformat()
    with _trygg(broker, db, creds) as trygg:
        trygg.wait_connected()
        a = Client(broker.port, "dev-a", creds["dev-a"])
        assert a.accepted
        try:
            # A pretends to be B, on both channels; then sends its own event.
            a.publish(_topic("dev-b", "events"), event_json("spoof-1", "button.pressed", now))
            a.publish(
                _topic("dev-b", "scaip"),
                b"<mrq><ref>spoof2</ref><cid>1</cid><dty>3</dty><stc>10</stc></mrq>",
            )
            a.publish(_topic("dev-a", "events"), event_json("own-1", "button.pressed", now))
            wait_until(lambda: _rows(db, "SELECT event_id FROM events"), 20)
            time.sleep(0.5)  # anything that got through would have arrived by now
            assert _rows(db, "SELECT device, event_id FROM events") == [("dev-a", "own-1")]
            assert _rows(db, "SELECT count(*) FROM dead_letters") == [(0,)]
        finally:
            a.close()


def test_anonymous_and_wrong_password_are_refused(secured) -> None:  # type: ignore[no-untyped-def]
    broker, creds = secured
    for user, password in [(None, None), ("dev-a", "wrong"), ("dev-a", creds["dev-b"])]:
        c = Client(broker.port, user, password)
        try:
            assert c.connack is not None and c.connack.is_failure, (user, c.connack)
        finally:
            c.close()
    ok = Client(broker.port, "dev-b", creds["dev-b"])
    assert ok.accepted
    ok.close()


def test_a_device_reads_only_its_own_responses(secured) -> None:  # type: ignore[no-untyped-def]
    broker, creds = secured
    a = Client(broker.port, "dev-a", creds["dev-a"])
    service = Client(broker.service_port, "trygg", creds["trygg"])
    try:
        # mosquitto 2.0 may grant the SUBACK (the read ACL is enforced on every
        # message it would deliver), so what counts is what A receives.
        a.subscribe(_topic("dev-b", "scaip/response"))
        a.subscribe(f"trygg/{SITE}/devices/+/scaip/response")
        a.subscribe(f"trygg/{SITE}/#")
        [own] = a.subscribe(_topic("dev-a", "scaip/response"))
        assert not own.is_failure, own
        service.publish(_topic("dev-b", "scaip/response"), b"<mrs><ref>b</ref><snu>0</snu></mrs>")
        service.publish(f"trygg/{SITE}/teams/grorud-sor/alerts", b"{}")
        service.publish(_topic("dev-a", "scaip/response"), b"<mrs><ref>a</ref><snu>0</snu></mrs>")
        wait_until(lambda: a.messages, 10)
        time.sleep(0.3)
        assert [t for t, _ in a.messages] == [_topic("dev-a", "scaip/response")] * len(a.messages)
        assert {parse_mrs(p)[0] for _, p in a.messages} == {"a"}
    finally:
        a.close()
        service.close()


def test_scaip_end_to_end(secured, db: str) -> None:  # type: ignore[no-untyped-def]
    broker, creds = secured
    with _trygg(broker, db, creds) as trygg:
        trygg.wait_connected()
        a = Client(broker.port, "dev-a", creds["dev-a"])
        try:
            assert not a.subscribe(_topic("dev-a", "scaip/response"))[0].is_failure
            for body in [
                b"<mrq><ref>B1</ref><cid>10149471</cid><dty>3</dty><stc>10</stc>"
                b"<crd>gsm:+4712345678</crd></mrq>",
                b"<mrq><ref>H1</ref><mty>PI</mty><cid>10149471</cid><dty>02</dty></mrq>",
                b"<mrq><ref>M1</ref><dty>3</dty></mrq>",  # no cid
                b"this is not xml",
            ]:
                a.publish(_topic("dev-a", "scaip"), body)
            wait_until(lambda: len(a.messages) >= 4, 20)
            replies = [parse_mrs(p)[:2] for _, p in a.messages]
            assert replies == [("B1", 0), ("H1", 0), ("M1", 7), ("", 2)]
            wait_until(lambda: len(_rows(db, "SELECT 1 FROM dead_letters")) >= 2, 20)
            wait_until(lambda: len(_rows(db, "SELECT 1 FROM events")) >= 2, 20)
            events = _rows(
                db, "SELECT event_id, type, device, resident, room FROM events ORDER BY 1"
            )
            # an alarm's id is its session's ref plus the message's digest (docs/ingest.md)
            assert events[0][0].startswith("B1~ME~")
            assert [(session_of(events[0][0]), *events[0][1:]), *events[1:]] == [
                ("B1", "button.pressed", "dev-a", "r-0001", "livingroom"),
                ("H1", "heartbeat", "dev-a", "r-0001", "livingroom"),
            ]
            reasons = [r[0] for r in _rows(db, "SELECT reason FROM dead_letters ORDER BY id")]
            assert "mandatory tag missing: cid" in reasons[0]
            assert "not XML" in reasons[1]
        finally:
            a.close()


def test_trygg_refused_by_the_broker_backs_off(secured, db: str) -> None:  # type: ignore[no-untyped-def]
    """A wrong password must not turn into a reconnect storm against the broker."""
    broker, _ = secured
    env = {
        "TRYGG_MQTT_URL": broker.service_url("trygg", "wrong"),
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": f"trygg-test-{time.monotonic_ns()}",
    }
    with TryggProcess(env) as trygg:
        wait_until(lambda: "mqtt connect refused" in trygg.output(), timeout=60)
        time.sleep(4)
        refusals = trygg.output().count("mqtt connect refused")
        assert trygg.proc is not None and trygg.proc.poll() is None  # still running, retrying
    # Backoff from ~1 s, doubling: about 3 attempts in 4 s; a tight loop makes hundreds.
    assert 2 <= refusals <= 5, refusals
