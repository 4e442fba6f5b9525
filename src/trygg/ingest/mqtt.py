"""The MQTT edge of ingest: a paho-mqtt 2.x client with manual acknowledgement.

trygg subscribes at QoS 1 with a persistent MQTT v5 session (clean start off,
a session expiry), so the broker keeps what is published while trygg is away.
A message's PUBACK is sent only when the caller says the message's events are
durably handed off (``ack``), never automatically on receipt: a crash before
then means the broker sends it again.

Retained messages on device topics (docs/ingest.md, "Retained messages"): a
device's ``status`` is retained by design (its last will) and comes at every
subscription; an event or SCAIP message should never be retained, but a
misconfigured device may do it. The broker then re-sends the last one at
every subscription, which would replay an old alarm after each restart. So
``events`` and ``scaip`` are subscribed with retain handling 1 (retained
messages only when the subscription is new, i.e. trygg had lost its session
and the retained copy may be the only one) and retain-as-published (a device
that publishes retained is seen at its first such message, not only at a
replay); each such message is counted and its device warned about once.

Session takeovers and lost sessions are logged and counted
(``trygg.mqtt_session``).
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from trygg import logs
from trygg.mqtt_session import SessionWatch
from trygg.settings import mqtt_params

log = logs.get("trygg.ingest.mqtt")

STATUS_CHANNEL = "status"  # the one device channel that is retained by design
_WARNED_MAX = 10_000  # devices warned about retained events (bounded on an open broker)


def subscription(topic: str) -> SubscribeOptions:
    """QoS 1; retained messages on a device's ``status`` at every subscription, on
    ``events`` and ``scaip`` only when the subscription is new (module docstring)."""
    if topic.rsplit("/", 1)[-1] == STATUS_CHANNEL:
        return SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    return SubscribeOptions(
        qos=1,
        retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB,
        retainAsPublished=True,
    )


@dataclass(slots=True)  # not frozen: one per message, built on paho's thread
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


class MqttSource:
    """Subscribes to device topics and hands each message to ``on_message``.

    ``on_message`` runs on paho's network thread and must be quick (put the
    message on a queue). Call ``ack(message)`` once it is safe to forget it.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        topics: list[str],
        on_message: Callable[[Message], object],
        session_expiry: int = 3600,
        on_status: Callable[[bool], object] | None = None,
    ) -> None:
        host, port, user, password, tls = mqtt_params(url)
        self._host, self._port = host, port
        self._topics = topics
        self._on_message = on_message
        self._on_status = on_status
        self._session_expiry = session_expiry
        self.connected = threading.Event()
        self.session = SessionWatch(client_id, log)
        self.retained_events = 0  # retained messages seen on events/scaip topics
        self._warned: set[str] = set()
        if user and not client_id.startswith(f"{user}-"):
            # The credentials generator reserves "<service user>-" for trygg's own ids.
            log.warning(
                "mqtt client id outside the reserved prefix",
                client_id=client_id,
                reserved=f"{user}-",
                why="a device may be named like this client id and take its session",
            )
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        c.manual_ack_set(True)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set()
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._connected
        c.on_disconnect = self._disconnected
        c.on_message = self._message
        c.on_socket_open = self._socket_open
        self._client = c

    def _socket_open(self, client: mqtt.Client, userdata: object, sock: object) -> None:
        # Without TCP_NODELAY a single alarm can wait ~5 ms for Nagle's algorithm.
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _connected(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("mqtt connect refused", reason=str(reason))
            return
        log.info(
            "mqtt connected",
            host=self._host,
            port=self._port,
            session_present=flags.session_present,
        )
        self.session.connected(flags.session_present)
        client.subscribe([(t, subscription(t)) for t in self._topics])
        self.connected.set()
        if self._on_status is not None:
            self._on_status(True)

    def _disconnected(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.connected.clear()
        if not self.session.disconnected(reason):
            log.warning("mqtt disconnected", reason=str(reason))
        if self._on_status is not None:
            self._on_status(False)
        # paho backs off exponentially (doubling up to 30 s); jitter the base so a
        # fleet of ingest processes does not reconnect in lock-step after a broker restart.
        # (paho annotates int but sleeps on any number.)
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=30)  # type: ignore[arg-type]

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            self._retained(msg.topic)
        self._on_message(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _retained(self, topic: str) -> None:
        """Count a retained message on an event topic; warn once per device."""
        parts = topic.split("/")
        if parts[-1] == STATUS_CHANNEL:
            return
        self.retained_events += 1
        device = parts[-2] if len(parts) >= 2 else topic
        if device not in self._warned and len(self._warned) < _WARNED_MAX:
            self._warned.add(device)
            log.warning(
                "retained event from device",
                device=device,
                channel=parts[-1],
                why="events must be published with retain off; the broker re-sends a "
                "retained message at every new subscription (docs/ingest.md)",
            )

    @property
    def client(self) -> mqtt.Client:
        """The paho client, for a caller that drives its loop itself (trygg.ingest.receiver)."""
        return self._client

    def prepare(self) -> None:
        """Set the connection up (persistent session) without connecting yet."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry
        self._client.connect_async(
            self._host, self._port, keepalive=30, clean_start=False, properties=props
        )

    def start(self) -> None:
        """Connect and run paho's network thread."""
        self.prepare()
        self._client.loop_start()

    def ack(self, message: Message) -> None:
        self.ack_mid(message.mid, message.qos)

    def ack_mid(self, mid: int, qos: int) -> None:
        if qos > 0:
            self._client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
