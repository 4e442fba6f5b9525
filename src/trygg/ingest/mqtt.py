"""The MQTT edge of ingest: a paho-mqtt 2.x client with manual acknowledgement.

trygg subscribes at QoS 1 with a persistent MQTT v5 session (clean start off,
a session expiry), so the broker keeps what is published while trygg is away.
A message's PUBACK is sent only when the caller says the message's events are
durably handed off (``ack``), never automatically on receipt: a crash before
then means the broker sends it again.
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
from trygg.settings import mqtt_params

log = logs.get("trygg.ingest.mqtt")


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
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._topics])
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
        if self._on_status is not None:
            self._on_status(False)
        log.warning("mqtt disconnected", reason=str(reason))
        # paho backs off exponentially (doubling up to 30 s); jitter the base so a
        # fleet of ingest processes does not reconnect in lock-step after a broker restart.
        # (paho annotates int but sleeps on any number.)
        client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=30)  # type: ignore[arg-type]

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._on_message(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

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
