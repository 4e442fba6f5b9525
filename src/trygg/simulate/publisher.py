"""Publishing simulated traffic to an MQTT broker, paced by event time.

Each event goes to ``trygg/{site}/devices/{device}/events`` at QoS 1 over
MQTT v5, as one JSON object or, with ``batch`` > 1, as JSON arrays per device
(the way gateways batch). Malformed payloads are published raw on the topic
of their device. Pacing follows event time: ``speed`` simulated seconds per
real second (1.0 is real time), or ``None`` for as fast as the broker takes
them. At most ``window`` messages are unacknowledged at any time; paho keeps
them and re-sends after a reconnect, so a broker restart loses nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from trygg.simulate.events import SimEvent
from trygg.simulate.mqtturl import MqttUrl, parse_mqtt_url


def event_topic(site: str, device: str) -> str:
    return f"trygg/{site}/devices/{device}/events"


@dataclass(slots=True)
class PublishStats:
    events: int = 0
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    acked: int = 0
    failed: int = 0
    seconds: float = 0.0


class _Acks:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.acked = 0
        self.failed = 0
        self.connected = threading.Event()
        self.connect_error: str | None = None

    def on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if getattr(rc, "is_failure", False):
            self.connect_error = str(rc)
        else:
            self.connect_error = None
            self.connected.set()

    def on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self.cond:
            self.acked += 1
            if getattr(rc, "is_failure", False):
                self.failed += 1
            self.cond.notify_all()


def publish(
    events: Iterable[SimEvent],
    mqtt_url: str | MqttUrl,
    site: str,
    speed: float | None = 1.0,
    *,
    batch: int = 1,
    batch_wait: float = 30.0,
    qos: int = 1,
    client_id: str | None = None,
    window: int = 2000,
    connect_timeout: float = 15.0,
    drain_timeout: float = 120.0,
    stop: threading.Event | None = None,
    on_progress: Callable[[PublishStats], None] | None = None,
) -> PublishStats:
    """Publish ``events`` to the broker and wait until all are acknowledged.

    ``batch_wait`` (simulated seconds) bounds how long an event waits in a
    per-device batch. Raises ConnectionError if the broker cannot be reached
    or refuses the connection, TimeoutError if acknowledgements stop coming.
    """
    url = parse_mqtt_url(mqtt_url) if isinstance(mqtt_url, str) else mqtt_url
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive (or None for as fast as possible)")
    acks = _Acks()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or f"trygg-sim-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()
    client.on_connect = acks.on_connect
    client.on_publish = acks.on_publish
    client.max_inflight_messages_set(min(window, 65000))
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=8)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect_async(url.host, url.port, keepalive=30, clean_start=True, properties=props)
    client.loop_start()
    st = PublishStats()
    t_begin = time.monotonic()
    try:
        if not acks.connected.wait(connect_timeout):
            why = acks.connect_error or "no answer"
            raise ConnectionError(f"cannot connect to MQTT broker {url.redacted()}: {why}")
        _run(
            client, acks, events, site, speed, batch, batch_wait, qos, window, stop, on_progress, st
        )
        deadline = time.monotonic() + drain_timeout
        with acks.cond:
            last = acks.acked
            while acks.acked < st.messages:
                acks.cond.wait(0.5)
                if acks.acked != last:
                    last = acks.acked
                    deadline = time.monotonic() + drain_timeout
                elif time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{st.messages - acks.acked} messages not acknowledged by the broker"
                    )
    finally:
        st.acked, st.failed = acks.acked, acks.failed
        st.seconds = time.monotonic() - t_begin
        client.disconnect()
        client.loop_stop()
    return st


def _run(
    client: mqtt.Client,
    acks: _Acks,
    events: Iterable[SimEvent],
    site: str,
    speed: float | None,
    batch: int,
    batch_wait: float,
    qos: int,
    window: int,
    stop: threading.Event | None,
    on_progress: Callable[[PublishStats], None] | None,
    st: PublishStats,
) -> None:
    sim0: int | None = None
    wall0 = time.monotonic()
    # device -> (time of its oldest buffered event, payloads); insertion-ordered
    pending: dict[str, tuple[int, list[str]]] = {}
    prefix = f"trygg/{site}/devices/"
    next_progress = time.monotonic() + 5.0

    def send(topic: str, payload: bytes) -> None:
        if st.messages - acks.acked >= window:
            with acks.cond:
                while st.messages - acks.acked >= window:
                    acks.cond.wait(1.0)
        client.publish(topic, payload, qos=qos)
        st.messages += 1

    def flush(dev: str) -> None:
        entry = pending.pop(dev, None)
        if entry:
            items = entry[1]
            send(prefix + dev + "/events", ("[" + ",".join(items) + "]").encode())

    for ev in events:
        if stop is not None and stop.is_set():
            break
        if speed is not None:
            if sim0 is None:
                sim0, wall0 = ev.ts, time.monotonic()
            delay = wall0 + (ev.ts - sim0) / speed - time.monotonic()
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        break
                else:
                    time.sleep(delay)
        if ev.raw is not None:
            st.malformed += 1
            send(prefix + ev.device + "/events", ev.raw)
            continue
        st.events += 1
        if ev.duplicate:
            st.duplicates += 1
        if batch == 1:
            send(prefix + ev.device + "/events", ev.payload_json().encode())
        else:
            entry = pending.get(ev.device)
            if entry is None:
                entry = pending[ev.device] = (ev.ts, [])
            entry[1].append(ev.payload_json())
            if len(entry[1]) >= batch:
                flush(ev.device)
            while pending:
                oldest = next(iter(pending))
                if pending[oldest][0] >= ev.ts - batch_wait:
                    break
                flush(oldest)
        if on_progress is not None and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + 5.0
            st.acked = acks.acked
            on_progress(st)
    for dev in list(pending):
        flush(dev)
