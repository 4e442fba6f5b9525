"""A session takeover (DISCONNECT reason code 142) is counted, logged as an error
and reported by the runner; a reconnect that finds no session is counted too.

mosquitto 2.0.11 (Debian 12, this machine) closes a taken-over connection
without a DISCONNECT; 2.0.15 and later send reason code 142. So the takeover
itself is played by a small fake broker here that does what a newer
mosquitto does; the lost session is checked on the real mosquitto.
tests/test_broker_sessions.py checks that no device can take the session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tests.helpers import wait_until
from trygg import logs
from trygg.api.exposition import render
from trygg.devenv import PrivateMosquitto
from trygg.ingest.mqtt import MqttSource
from trygg.ingest.receiver import TAKEOVER_NOT_READY, ReceiverProcess
from trygg.mqtt_session import SessionWatch, is_takeover

CONNACK = b"\x20\x03\x00\x00\x00"  # v5, no session present, success, no properties
TAKEN_OVER = b"\xe0\x02\x8e\x00"  # v5 DISCONNECT, reason 0x8E = 142, no properties
PINGRESP = b"\xd0\x00"


class TakeoverBroker:
    """Just enough of an MQTT v5 broker: accepts connections and subscriptions, and
    drops the first connection with DISCONNECT 142 ("Session taken over") once it
    has subscribed, as mosquitto >= 2.0.15 does when another client takes the
    session. Later connections stay up."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            threading.Thread(target=self._serve, args=(conn, first), daemon=True).start()

    @staticmethod
    def _packet(conn: socket.socket) -> tuple[int, bytes] | None:
        head = conn.recv(1)
        if not head:
            return None
        length, shift = 0, 0
        while True:
            b = conn.recv(1)[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                return None
            body += chunk
        return head[0] & 0xF0, body

    def _serve(self, conn: socket.socket, take_over: bool) -> None:
        with conn:
            while (packet := self._packet(conn)) is not None:
                kind, body = packet
                if kind == 0x10:  # CONNECT
                    conn.sendall(CONNACK)
                elif kind == 0x80:  # SUBSCRIBE: grant QoS 1 to each filter
                    pos = 2 + 1 + body[2]  # packet id, properties (short, unparsed)
                    granted = b""
                    while pos < len(body):
                        pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + 1
                        granted += b"\x01"
                    ack = body[:2] + b"\x00" + granted
                    conn.sendall(bytes([0x90, len(ack)]) + ack)
                    if take_over:
                        time.sleep(0.1)
                        conn.sendall(TAKEN_OVER)
                        return
                elif kind == 0xC0:  # PINGREQ
                    conn.sendall(PINGRESP)
                elif kind == 0xE0:  # DISCONNECT
                    return

    def close(self) -> None:
        self._stop.set()
        self._server.close()


@pytest.fixture
def takeover_broker() -> Any:
    b = TakeoverBroker()
    yield b
    b.close()


TOPICS = ["trygg/oslo/devices/+/events", "trygg/oslo/devices/+/status"]


def _logged(capfd: Any, event: str) -> list[dict[str, Any]]:
    """The JSON log lines (``logs.configure("json")``) of one event."""
    lines = capfd.readouterr().err.splitlines()
    return [
        d
        for d in map(json.loads, (ln for ln in lines if ln.startswith("{")))
        if d["event"] == event
    ]


@pytest.fixture
def json_logs() -> None:
    logs.configure("json", "INFO")


def test_reason_142_is_a_takeover_and_nothing_else_is() -> None:
    assert is_takeover(ReasonCode(PacketTypes.DISCONNECT, identifier=142))
    assert not is_takeover(ReasonCode(PacketTypes.DISCONNECT, identifier=0))
    assert not is_takeover(ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"))
    assert not is_takeover(None)


def test_a_takeover_is_counted_and_logged_as_an_error(takeover_broker, capfd, json_logs) -> None:  # type: ignore[no-untyped-def]
    source = MqttSource(
        f"mqtt://127.0.0.1:{takeover_broker.port}", "trygg-ingest", TOPICS, lambda m: None
    )
    before = time.time()
    source.start()
    try:
        wait_until(lambda: source.session.takeovers == 1, 10)
        wait_until(lambda: takeover_broker.connections >= 2, 10)  # and it reconnects
    finally:
        source.stop()
    assert source.session.last_takeover is not None
    assert before <= source.session.last_takeover <= time.time()
    [line] = _logged(capfd, "mqtt session taken over")  # once, as an error
    assert line["level"] == "error" and line["client_id"] == "trygg-ingest"
    assert line["takeovers"] == 1


def test_the_runner_knows_of_a_takeover_in_the_receiver_process(takeover_broker) -> None:  # type: ignore[no-untyped-def]
    async def main() -> ReceiverProcess:
        rp = ReceiverProcess(
            f"mqtt://127.0.0.1:{takeover_broker.port}",
            "trygg-ingest",
            TOPICS,
            lambda messages: None,
            session_expiry=60,
            log_format="json",
            log_level="INFO",
        )
        assert rp.not_ready_reason() == "not connected to the broker yet"
        await rp.start()
        try:
            for _ in range(200):
                if rp.takeovers and rp.connected.is_set():
                    break
                await asyncio.sleep(0.05)
        finally:
            rp.stop()
            await rp.wait_stopped()
        return rp

    rp = asyncio.run(main())
    assert rp.takeovers == 1 and rp.last_takeover is not None
    # Not ready for a minute after the takeover, connected again or not.
    rp.connected.set()
    reason = rp.not_ready_reason()
    assert reason is not None and reason.startswith("session taken over by another client at ")
    assert rp.not_ready_reason(now=rp.last_takeover + TAKEOVER_NOT_READY + 1) is None
    rp.connected.clear()
    rp.disconnected_at = rp.last_takeover
    later = rp.not_ready_reason(now=rp.last_takeover + TAKEOVER_NOT_READY + 1)
    assert later is not None and later.startswith("disconnected from the broker since ")


def test_counts_from_a_restarted_receiver_add_up() -> None:
    rp = ReceiverProcess(
        "mqtt://127.0.0.1:1", "trygg-x", TOPICS, lambda m: None, 60, "json", "INFO"
    )
    rp._count(1, 100.0, 0, 3)
    rp._count(2, 200.0, 1, 3)
    rp._forget()  # the receiver died; the next one counts from zero
    rp._count(1, 300.0, 0, 1)
    assert (rp.takeovers, rp.last_takeover, rp.sessions_lost, rp.retained_events) == (
        3,
        300.0,
        1,
        4,
    )


def test_metrics_export_takeovers_lost_sessions_and_retained_events() -> None:
    source = SimpleNamespace(
        takeovers=2, last_takeover=1700000000.0, sessions_lost=1, retained_events=5
    )
    notify = SimpleNamespace(session=SessionWatch("trygg-ingest-notify", None, persistent=False))
    service = SimpleNamespace(
        alerts_by={},
        deliveries_by={},
        open_alerts=lambda: [],
        feed=SimpleNamespace(subscribers=0),
        channels={"mqtt": notify, "webhook": object()},
    )
    text = render(SimpleNamespace(_source=source), service)
    assert 'trygg_mqtt_session_takeovers_total{client="ingest"} 2.0' in text
    assert 'trygg_mqtt_session_takeovers_total{client="notify"} 0.0' in text
    assert 'trygg_mqtt_session_takeover_last_timestamp_seconds{client="ingest"} 1.7e+09' in text
    assert "trygg_mqtt_sessions_lost_total 1.0" in text
    assert "trygg_retained_events_total 5.0" in text


def test_a_lost_session_is_counted_on_real_mosquitto(capfd, json_logs) -> None:  # type: ignore[no-untyped-def]
    """What mosquitto 2.0.11 shows of a takeover by a client that started clean:
    nothing at the moment, and no session at trygg's reconnect."""
    with PrivateMosquitto() as broker:  # anonymous, no client-id protection
        source = MqttSource(broker.url, "trygg-lost", TOPICS, lambda m: None, session_expiry=600)
        source.start()
        try:
            wait_until(source.connected.is_set, 10)
            subprocess.run(
                [
                    *("mosquitto_pub", "-p", str(broker.port), "-i", "trygg-lost"),
                    *("-t", "trygg/oslo/devices/x/events", "-m", "{}"),
                ],
                check=True,
                timeout=10,
            )
            wait_until(lambda: source.session.sessions_lost == 1, 15)
            wait_until(source.connected.is_set, 10)
        finally:
            source.stop()
    assert source.session.takeovers == 0  # 2.0.11 sends no reason code
    [line] = _logged(capfd, "mqtt session lost")
    assert line["level"] == "error" and line["client_id"] == "trygg-lost"
