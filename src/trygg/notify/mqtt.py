"""MQTT channel: alerts to staff devices on ``trygg/{site}/teams/{team}/alerts``.

Published at QoS 1 on a client of its own (not the ingest client), and the
delivery counts as done when the broker's PUBACK arrives. paho re-sends what
was in flight after a reconnect; a message the broker did not acknowledge
within the timeout is reported as failed (and the alert service records it).
A takeover of its session (another client with its client id) is logged and
counted as an error, as for ingest (``trygg.mqtt_session``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from trygg import logs
from trygg.alerts.escalation import Notification
from trygg.mqtt_session import SessionWatch
from trygg.notify.base import Delivery
from trygg.settings import mqtt_params

log = logs.get("trygg.notify.mqtt")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def team_topic(site: str, team: str) -> str:
    return f"trygg/{site}/teams/{team}/alerts"


class MqttAlerts:
    def __init__(self, url: str, client_id: str, site: str, timeout: float = 5.0) -> None:
        self.site = site
        self.timeout = timeout
        host, port, user, password, tls = mqtt_params(url)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set()
        c.reconnect_delay_set(1, 5)
        c.max_inflight_messages_set(100)
        c.on_publish = self._on_publish
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self._client = c
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}
        self._lock = threading.Lock()
        self._acked_early: set[int] = set()
        self._abandoned: set[int] = set()
        self.connected = threading.Event()
        # Clean start: no session to lose, only one to have taken over.
        self.session = SessionWatch(client_id, log, persistent=False)
        c.connect_async(host, port)
        c.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self.session.disconnected(reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        # paho's thread, possibly with paho's own locks held: only take ours briefly
        with self._lock:
            w = self._waiting.pop(mid, None)
            if w is None:
                if mid in self._abandoned:
                    self._abandoned.discard(mid)
                else:
                    self._acked_early.add(mid)
                return
        loop, fut = w
        loop.call_soon_threadsafe(_resolve, fut)

    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery:
        topic = team_topic(self.site, address)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # Never call into paho while holding our lock: paho calls _on_publish with
        # its own locks held, and the two orders would deadlock.
        info = self._client.publish(topic, body, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return Delivery(False, 1, None, f"publish failed: {mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                fut.set_result(None)
            else:
                self._waiting[info.mid] = (loop, fut)
        try:
            async with asyncio.timeout(self.timeout):
                await fut
        except TimeoutError:
            with self._lock:
                if self._waiting.pop(info.mid, None) is not None:
                    self._abandoned.add(info.mid)
            return Delivery(False, 1, None, f"no PUBACK within {self.timeout:g} s")
        return Delivery(True, 1)

    async def aclose(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
