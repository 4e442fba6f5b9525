"""The MQTT -> Kafka bridge: stateless, several share the device topics.

    mosquitto --$share/<group>/...--> MqttSource (manual PUBACK) --> queue
        --> Decoder (the embedded ingest's own) --> Kafka (acks=all), keyed by resident
        --> SCAIP replies on MQTT --> PUBACK, in order

Each bridge subscribes through an MQTT v5 shared subscription, so the broker
hands every message to one bridge of the group. A bridge validates and
dead-letters exactly as the embedded runner does (the same ``Decoder``),
produces each event to the events topic keyed by its resident (all of a
resident's events land on one partition, in the order the bridge sends
them) and each dead letter to the dead-letters topic. It acknowledges a
batch's MQTT messages only once Kafka has acknowledged every record of the
batch (``acks=all``): a bridge that dies before that leaves the messages
with the broker, which sends them again to another member of the group.

A bridge keeps no state but the device registry (reloaded from the database
every few seconds) and its progress: the newest event time it has forwarded
(never past its own clock). Every event carries it, and once a second, when it
moved, the bridge sends it to every partition of the events topic (``wm``;
once at start with none): the workers' event clock runs no further than the
slowest bridge (``worker.clocks.Sources``, docs/distributed.md). Duplicates (an
MQTT re-delivery, a retried batch) are dropped downstream: by the rules
agent's per-resident recent keys and by the events table's unique key.

On the wall clock each bridge also runs a relay (``trygg.distributed.relay``): an
immediate alarm it forwarded that no worker has claimed within ``relay_after_s``
(the workers rebalancing or dead) is paged by the bridge itself, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from trygg import logs
from trygg.child import stop_on_signals, unless_stopped
from trygg.distributed import codecs
from trygg.distributed.relay import Relay
from trygg.distributed.relay_build import build_relay, relay_wanted, run_relay
from trygg.heap import freeze_startup_heap
from trygg.ingest.decode import DecodeLimits, Decoder
from trygg.ingest.mqtt import Message, MqttSource
from trygg.model import Event
from trygg.registry import Registry
from trygg.repeats import RepeatLog
from trygg.retry import logged, retry_async
from trygg.settings import Settings
from trygg.store import spooled
from trygg.store.registry import RegistryReader

log = logs.get("trygg.bridge")
WM_INTERVAL_S = 1.0  # how often a bridge sends its progress to every partition (when it moved)


@dataclass
class BridgeStats:
    received: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    send_retries: int = 0
    watermarks: int = 0


def bridge_topics(settings: Settings) -> list[str]:
    share = f"$share/{settings.bridge_group}/" if settings.bridge_group else ""
    return [f"{share}trygg/{settings.site}/devices/+/{ch}" for ch in ("events", "scaip")]


def producer_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka producer options: acks=all; no idempotence (see docs/distributed.md)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 5,
        "request_timeout_ms": 30000,
    }
    if settings.kafka_producer_linger_ms is not None:
        kw["linger_ms"] = settings.kafka_producer_linger_ms
    if settings.kafka_producer_max_batch_size is not None:
        kw["max_batch_size"] = settings.kafka_producer_max_batch_size
    return kw


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = BridgeStats()
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._registry = Registry()
        self._decoder: Decoder | None = None
        self.ready = asyncio.Event()
        self.id = settings.mqtt_client_id  # unique per bridge (its MQTT session)
        self.progress: datetime | None = None  # the newest event time forwarded
        self._wm_sent: tuple[datetime | None, float] | None = None  # (progress, monotonic)
        # dead letters: the first per device and reason in full, then a count a minute
        self._dead_log = RepeatLog(log)
        self._stored_registry = RegistryReader()  # parsed again only when it changed
        self.relay: Relay | None = None  # pages stalled immediate alarms (trygg.distributed.relay)
        self._forwarded: list[Event] = []  # the events of the batch being sent (for the relay)
        self._received = datetime.now(UTC)  # when that batch was received

    # --- registry -----------------------------------------------------------
    def _load_registry(self) -> Registry:
        with psycopg.connect(self.settings.database_url, connect_timeout=10) as conn:
            return self._stored_registry.read(conn)

    def _set_registry(self, registry: Registry) -> None:
        self._registry = registry
        self._decoder = Decoder(
            self.settings.site,
            registry.device_by_id(),
            DecodeLimits(max_payload_bytes=self.settings.max_payload_bytes),
        )

    async def _reload_registry(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                registry = await asyncio.to_thread(self._load_registry)
            except psycopg.Error as exc:
                log.warning("registry reload failed", error=str(exc).strip()[:200])
                continue
            if registry != self._registry:
                self._set_registry(registry)
                if self.relay is not None:
                    self.relay.update_registry(registry)
                log.info("registry reloaded", devices=len(registry.devices))

    # --- life ---------------------------------------------------------------
    async def _start_up(self) -> tuple[Registry, AIOKafkaProducer]:
        """The registry and a started producer, each retried for as long as its
        service is away."""
        registry = await retry_async(
            lambda: asyncio.to_thread(self._load_registry),
            retry_on=psycopg.Error,
            on_retry=logged(log, "database unavailable, retrying"),
        )
        producer = AIOKafkaProducer(**producer_kwargs(self.settings))
        try:
            await retry_async(
                producer.start,
                retry_on=KafkaError,
                on_retry=logged(log, "kafka unavailable, retrying"),
            )
        except BaseException:  # a stop during the retries: nothing left open
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return registry, producer

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        # a SIGTERM while the database or Kafka is away stops the bridge at once (it was
        # ignored for as long as the outage lasted)
        started = await unless_stopped(self._start_up(), stop)
        if started is None:
            log.info("stopped during start-up")
            return
        registry, producer = started
        self._set_registry(registry)
        if relay_wanted(s):
            self.relay = build_relay(s, registry, producer)
        loop = asyncio.get_running_loop()
        source = MqttSource(
            s.mqtt_url,
            s.mqtt_client_id,
            bridge_topics(s),
            lambda m: loop.call_soon_threadsafe(self._queue.put_nowait, m),
            session_expiry=s.mqtt_session_expiry,
        )
        source.start()
        tasks = [
            asyncio.create_task(self._consume(source, producer), name="bridge"),
            asyncio.create_task(self._reload_registry(), name="registry"),
        ]
        if self.relay is not None:
            tasks.append(asyncio.create_task(run_relay(self.relay, s), name="relay"))
        await asyncio.to_thread(source.connected.wait, 30)
        self.ready.set()
        log.info("bridge running", topics=bridge_topics(s), kafka=s.kafka_bootstrap)
        await stop.wait()
        source.stop()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await producer.stop()
        self._dead_log.flush(everything=True)

    async def _next_batch(self, wait: float | None = None) -> list[Message]:
        """The next batch; empty if no message came within ``wait`` seconds."""
        try:
            batch = [await asyncio.wait_for(self._queue.get(), wait)]
        except TimeoutError:
            return []
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
        return batch

    def encode(self, batch: list[Message]) -> tuple[list[tuple[str, bytes, bytes]], list[Any]]:
        """Decode a batch into Kafka records (topic, key, value) and SCAIP replies."""
        assert self._decoder is not None
        s = self.settings
        received = datetime.now(UTC)
        out: list[tuple[str, bytes, bytes]] = []
        replies: list[tuple[str, bytes]] = []
        self._forwarded, self._received = [], received
        for msg in batch:
            self.stats.received += 1
            d = self._decoder.decode(msg.topic, msg.payload, received)
            if d.reply is not None:
                replies.append(d.reply)
            for dl in d.dead:
                self.stats.dead_letters += 1
                self._dead_log.note(dl.device, dl.reason)
                out.append(
                    (
                        s.kafka_dead_letters_topic,
                        (dl.device or "").encode(),
                        codecs.dumps(spooled.dead_letter_record(dl)),
                    )
                )
            for ev in d.events:
                self.stats.events += 1
                self._forwarded.append(ev)
                # a device clock ahead moves the progress no further than the receipt
                t = min(ev.time, received)
                if self.progress is None or t > self.progress:
                    self.progress = t
                out.append(
                    (
                        s.kafka_events_topic,
                        codecs.key_of(ev.resident),
                        codecs.dumps(codecs.event_record(ev, received, self.id, self.progress)),
                    )
                )
        return out, replies

    def watermark_due(self, now: float) -> bool:
        """Whether to send the progress now: never sent yet, or moved and the last
        one is ``WM_INTERVAL_S`` old."""
        sent = self._wm_sent
        if sent is None:
            return True
        return sent[0] != self.progress and now - sent[1] >= WM_INTERVAL_S

    async def _send(
        self, producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes, int | None]]
    ) -> None:
        """Send (topic, key, value, partition) records and await every ack, retrying
        the whole lot until Kafka takes it: at-least-once, duplicates are dropped
        downstream. The batch's MQTT messages stay unacknowledged meanwhile."""

        async def send_all() -> None:
            futures = [
                await producer.send(topic, value, key=key, partition=p)
                for topic, key, value, p in records
            ]
            await asyncio.gather(*futures)

        said = logged(log, "kafka send failed, retrying")

        def counted(exc: BaseException, wait: float) -> None:
            self.stats.send_retries += 1
            said(exc, wait)

        await retry_async(send_all, retry_on=KafkaError, on_retry=counted)

    async def _send_watermark(self, producer: AIOKafkaProducer) -> None:
        """The progress to every partition of the events topic. Sent from the one task
        that sends the events, after their acks: each partition has every event the
        bridge forwarded before it, so no later event of this bridge is older."""
        topic = self.settings.kafka_events_topic
        try:
            parts = sorted(await producer.partitions_for(topic) or ())
        except KafkaError as exc:
            log.warning("events topic unknown, progress not sent", error=str(exc)[:200])
            return
        if not parts:
            return
        progress = self.progress
        value = codecs.dumps(codecs.watermark_record(self.id, progress, datetime.now(UTC)))
        await self._send(producer, [(topic, self.id.encode(), value, p) for p in parts])
        self._wm_sent = (progress, time.monotonic())
        self.stats.watermarks += 1

    async def _consume(self, source: MqttSource, producer: AIOKafkaProducer) -> None:
        while True:
            if self.watermark_due(time.monotonic()):
                await self._send_watermark(producer)
            self._dead_log.flush()
            batch = await self._next_batch(WM_INTERVAL_S)
            if not batch:
                continue
            records, replies = self.encode(batch)
            await self._send(producer, [(t, k, v, None) for t, k, v in records])
            if self.relay is not None:
                self.relay.note(self._forwarded, self._received)
            for topic, reply in replies:
                source.publish(topic, reply, qos=1)
            for msg in batch:
                source.ack(msg)
            self.stats.batches += 1


def run_bridge(settings: Settings) -> None:
    """Run a bridge until SIGINT/SIGTERM."""

    async def main() -> None:
        bridge = Bridge(settings)
        freeze_startup_heap()  # no long full collections in the alarm path (trygg.heap)
        await bridge.run(stop_on_signals())

    asyncio.run(main())
