"""The MQTT receiver: paho-mqtt in a process of its own, beside the runner.

    broker --PUBLISH--> receiver process --frames--> runner (decide, spool)
    broker <--PUBACK--- receiver process <--acks---- runner (after the fsync)

paho-mqtt is pure Python: reading a QoS 1 message of an MQTT v5 session
(packet, properties, the message object, the callback) costs about as much
interpreter time as everything trygg then does with it. In one process the
two take turns on one interpreter lock, and on two cores trygg reached half
the rate of a paho subscriber that does nothing (bench/RESULTS.md). Here
paho runs in its own process, on the other core, and does only what a bare
subscriber does; the runner gets the messages in batches through a pipe and
sends back, per batch, the acknowledgements (and SCAIP replies) to send once
its events are spooled. Nothing is acknowledged that the runner did not say
is handed off: at-least-once holds across the hop. If the runner dies, even
by SIGKILL, the pipe closes, the receiver disconnects without acknowledging
anything more, and the broker keeps the rest for the next session.

The pipe carries frames: a kind byte, a 4-byte length and a ``marshal``ed
list (marshal: the fastest way CPython has to pass plain tuples of str,
bytes and int between two processes of the same interpreter).

A message above the decoder's payload limit (``TRYGG_MAX_PAYLOAD_BYTES``)
crosses the pipe as (its first 64 KiB, its size, its SHA-256) instead of its
payload, and reaches the decoder as a ``PayloadHead``, which it refuses as too
large. A burst of 100 messages of 5 MB took 1.6 + 2.6 + 2.1 GB (peak RSS) in
the receiver, the runner and the drainer when they were passed on whole, and
70 + 106 + 77 MB this way (bench/bench_burst_rss.py, bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import select
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from paho.mqtt.enums import MQTTErrorCode

from trygg import logs
from trygg.child import ChildProcess, leave_stop_signals_to_the_runner
from trygg.ingest.mqtt import Message, MqttSource
from trygg.ingest.payload import MAX_PAYLOAD_BYTES, PayloadHead, head_of
from trygg.retry import BROKER

log = logs.get("trygg.ingest.receiver")

_HEAD = struct.Struct("!cI")
FRAME_MESSAGES = 256  # at most this many messages per frame to the runner
# receiver -> runner
MESSAGES, CONNECTED, DISCONNECTED = b"m", b"c", b"d"
# (takeovers, time.time() of the last or 0.0, sessions lost, retained events), when they change
COUNTS = b"n"
TAKEOVER_NOT_READY = 60.0  # seconds a session takeover keeps /readyz's mqtt check failing
# runner -> receiver
ACKS, PUBLISH = b"a", b"p"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _frame(kind: bytes, body: Any) -> bytes:
    data = marshal.dumps(body)
    return _HEAD.pack(kind, len(data)) + data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- the receiver process --------------------------------------------------------


class _Receiver:
    """paho driven from this process's one thread: read, forward, acknowledge.

    No network thread: paho's ``loop_start`` thread and a thread talking to
    the runner took turns on the interpreter lock for every message (eleven
    futex calls per message under strace, and 0.65-0.8 of a bare subscriber's
    rate with nothing else to do). One thread reads what the socket holds,
    forwards it as one frame, and carries out the runner's acknowledgements,
    using paho's documented external-loop calls (``loop_read``,
    ``loop_write``, ``loop_misc``); reconnecting is done here, with the
    same jittered backoff ``MqttSource`` gives paho's own loop.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        topics: list[str],
        session_expiry: int,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._max_payload = max_payload_bytes
        # (topic, payload or (head, size, sha256), mid, qos)
        self._batch: list[tuple[str, bytes | tuple[bytes, int, bytes], int, int]] = []
        self._status: list[bytes] = []
        self._accepted = False  # the broker accepted a connection since the last reconnect
        self._counts: tuple[int, float, int, int] = (0, 0.0, 0, 0)  # as last sent (COUNTS)
        self.source = MqttSource(
            url,
            client_id,
            topics,
            self._message,
            session_expiry=session_expiry,
            on_status=self._on_status,
        )

    def _message(self, m: Message) -> None:
        if len(m.payload) > self._max_payload:
            # The decoder will refuse it unread: the runner gets only what a dead
            # letter keeps (and so never holds the whole).
            self._batch.append((m.topic, head_of(m.payload), m.mid, m.qos))
        else:
            self._batch.append((m.topic, m.payload, m.mid, m.qos))

    def _on_status(self, connected: bool) -> None:
        self._status.append(CONNECTED if connected else DISCONNECTED)
        if connected:
            self._accepted = True

    def _current_counts(self) -> tuple[int, float, int, int]:
        s = self.source.session
        return (s.takeovers, s.last_takeover or 0.0, s.sessions_lost, self.source.retained_events)

    def _back_off(self, inp: int, delay: float) -> bool:
        """Wait ``delay`` seconds before a reconnect; False if the runner has gone."""
        ready, _, _ = select.select([inp], [], [], delay)
        return not (ready and not os.read(inp, 65536))

    def run(self, inp: int, out: int) -> None:
        client = self.source.client
        self.source.prepare()
        buf = b""
        delay = 0.0  # the first connect does not wait
        failures = 0  # reconnects tried since the broker last accepted one
        misc_at = 0.0
        while True:
            sock = client.socket()
            if sock is None:
                # trygg's retry policy for the broker (trygg.retry.BROKER: doubling to
                # 30 s with jitter, so a fleet of ingest processes does not reconnect in
                # lock-step after a broker restart), from about 1 s again once a
                # connection was accepted; a refused CONNACK also backs off.
                if self._accepted:
                    failures, self._accepted = 1, False
                    delay = BROKER.delay(failures)
                if delay and not self._back_off(inp, delay):
                    return  # the runner has gone
                failures += 1
                delay = BROKER.delay(failures)
                try:
                    client.reconnect()
                except OSError as exc:
                    log.warning(
                        "mqtt connect failed", error=str(exc)[:200], retry_in=round(delay, 1)
                    )
                    continue
                sock = client.socket()
                assert sock is not None
            fd = sock.fileno()
            # A TLS socket may hold decrypted bytes that select cannot see.
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            ready, _, _ = select.select(
                [fd, inp], [fd] if client.want_write() else [], [], 0 if buffered else 1.0
            )
            if fd in ready or buffered:
                # What the socket holds (loop_read reads one packet), up to a frame's
                # worth: with a deep queue at the broker the socket never runs dry,
                # and the runner should start on the first messages meanwhile.
                while len(self._batch) < FRAME_MESSAGES:
                    n = len(self._batch)
                    rc = client.loop_read()
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or len(self._batch) == n:
                        break
            if self._status:
                for kind in self._status:
                    _write_all(out, _frame(kind, None))
                self._status.clear()
            if (counts := self._current_counts()) != self._counts:
                self._counts = counts
                _write_all(out, _frame(COUNTS, counts))
            if self._batch:
                _write_all(out, _frame(MESSAGES, self._batch))
                self._batch = []
            if inp in ready:
                data = os.read(inp, 65536)
                if not data:
                    break  # the runner has gone: acknowledge nothing more
                buf = self._commands(buf + data)
            if client.socket() is not None and client.want_write():
                client.loop_write()
            if (now := time.monotonic()) >= misc_at:
                client.loop_misc()  # keepalive pings, and noticing a dead connection
                misc_at = now + 1.0
        client.disconnect()

    def _commands(self, buf: bytes) -> bytes:
        """Carry out the runner's whole frames in ``buf``; return what is left."""
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            kind, n = _HEAD.unpack_from(buf, pos)
            if len(buf) - pos - _HEAD.size < n:
                break
            body = marshal.loads(buf[pos + _HEAD.size : pos + _HEAD.size + n])
            pos += _HEAD.size + n
            if kind == PUBLISH:
                for topic, payload, qos, retain in body:
                    self.source.publish(topic, payload, qos=qos, retain=retain)
            elif kind == ACKS:
                for mid, qos in body:
                    self.source.ack_mid(mid, qos)
        return buf[pos:]


def main() -> None:
    """Entry point of ``python -m trygg.ingest.receiver`` (started by trygg run).

    Its settings come from the environment the runner gives it, so that the
    broker's password is not on a command line."""
    logs.configure(
        os.environ.get("TRYGG_LOG_FORMAT", "console"), os.environ.get("TRYGG_LOG_LEVEL", "INFO")
    )
    leave_stop_signals_to_the_runner()  # the runner says when to stop: EOF on stdin
    r = _Receiver(
        os.environ["TRYGG_MQTT_URL"],
        os.environ["TRYGG_MQTT_CLIENT_ID"],
        orjson.loads(os.environ["TRYGG_RECEIVER_TOPICS"]),
        int(os.environ.get("TRYGG_MQTT_SESSION_EXPIRY", "3600")),
        int(os.environ.get("TRYGG_MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES)),
    )
    with contextlib.suppress(BrokenPipeError):  # the runner has gone mid-write
        r.run(sys.stdin.fileno(), sys.stdout.fileno())


# --- the runner's side -----------------------------------------------------------


class ReceiverProcess:
    """The runner's handle on the receiver: the same interface as ``MqttSource``
    (``connected``, ``ack``, ``publish``, ``stop``), messages in batches.

    It also keeps what the receiver counts of its session (takeovers, the time of
    the last, lost sessions, retained event messages), summed over restarts of
    the receiver, for ``/metrics`` and ``/readyz``."""

    def __init__(
        self,
        url: str,
        client_id: str,
        topics: list[str],
        on_messages: Callable[[list[Message]], None],
        session_expiry: int,
        log_format: str,
        log_level: str,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        env = {
            **os.environ,
            "TRYGG_MQTT_URL": url,
            "TRYGG_MQTT_CLIENT_ID": client_id,
            "TRYGG_RECEIVER_TOPICS": orjson.dumps(topics).decode(),
            "TRYGG_MQTT_SESSION_EXPIRY": str(session_expiry),
            "TRYGG_LOG_FORMAT": log_format,
            "TRYGG_LOG_LEVEL": log_level,
            "TRYGG_MAX_PAYLOAD_BYTES": str(max_payload_bytes),
        }
        self._child = ChildProcess(
            "MQTT receiver",
            "trygg.ingest.receiver",
            [],
            env,
            self._follow,
            on_exit=self._forget,
            limit=1 << 24,
        )
        self._on_messages = on_messages
        self.connected = threading.Event()  # threading: the API and start-up wait on it
        self.disconnected_at: float | None = None  # time.time() the connection was lost
        self.takeovers = 0
        self.last_takeover: float | None = None  # time.time()
        self.sessions_lost = 0
        self.retained_events = 0
        self._child_counts = (0, 0, 0)  # the running receiver's own, as last reported
        self._acks: list[tuple[int, int]] = []
        self._pubs: list[tuple[str, bytes, int, bool]] = []
        self._flush_due = False

    async def start(self) -> None:
        await self._child.start()

    async def _follow(self, out: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, n = _HEAD.unpack(await out.readexactly(_HEAD.size))
                body = marshal.loads(await out.readexactly(n))
                if kind == MESSAGES:
                    self._on_messages(
                        [
                            Message(t, p if type(p) is bytes else PayloadHead(*p), mid, qos)
                            for t, p, mid, qos in body
                        ]
                    )
                elif kind == CONNECTED:
                    self.connected.set()
                    self.disconnected_at = None
                elif kind == DISCONNECTED:
                    self._lost()
                elif kind == COUNTS:
                    self._count(*body)
        finally:
            self._lost()

    def _lost(self) -> None:
        if self.connected.is_set() or self.disconnected_at is None:
            self.disconnected_at = time.time()
        self.connected.clear()

    def _count(self, takeovers: int, last: float, lost: int, retained: int) -> None:
        """The receiver's counts since it started, added to the totals."""
        was_takeovers, was_lost, was_retained = self._child_counts
        self.takeovers += takeovers - was_takeovers
        self.sessions_lost += lost - was_lost
        self.retained_events += retained - was_retained
        self._child_counts = (takeovers, lost, retained)
        if last:
            self.last_takeover = last

    def not_ready_reason(self, now: float | None = None) -> str | None:
        """Why ingest is not ready (``/readyz``), or None: not connected to the broker,
        or a session takeover within the last ``TAKEOVER_NOT_READY`` seconds."""
        now = time.time() if now is None else now
        if self.last_takeover is not None and now - self.last_takeover < TAKEOVER_NOT_READY:
            return f"session taken over by another client at {_iso(self.last_takeover)}"
        if not self.connected.is_set():
            if self.disconnected_at is None:
                return "not connected to the broker yet"
            return f"disconnected from the broker since {_iso(self.disconnected_at)}"
        return None

    def _forget(self) -> None:
        # Acknowledgements for a connection that is gone: the broker sends those
        # messages again to the next receiver.
        self._acks.clear()
        self._pubs.clear()
        self._child_counts = (0, 0, 0)  # the next receiver counts from zero

    def ack(self, message: Message) -> None:
        if message.qos > 0:
            self._acks.append((message.mid, message.qos))
            self._schedule()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._pubs.append((topic, payload, qos, retain))
        self._schedule()

    def _schedule(self) -> None:
        # One write for everything a commit acknowledges, not one per message.
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        # Replies first: a SCAIP unit gets its <mrs> before the PUBACK, as before.
        if self._pubs:
            self._child.write(_frame(PUBLISH, self._pubs))
            self._pubs = []
        if self._acks:
            self._child.write(_frame(ACKS, self._acks))
            self._acks = []

    def stop(self) -> None:
        """Close the pipe: the receiver disconnects and exits."""
        self._flush()
        self._child.close_input()

    async def wait_stopped(self, within: float = 5.0) -> None:
        await self._child.stop(within)


if __name__ == "__main__":
    main()
