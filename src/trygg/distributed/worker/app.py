"""The Faust worker: agents over trygg's topics, state in changelog-backed tables.

    events  --> rules agent  (Table rules-state)  --> signals (+ resets)
    signals --> alerts agent (Table alerts-state) --> records, notifications
    notifications --> notify agent (trygg.notify channels) --> records (deliveries)
    events, dead letters, records --> sink agent --> TimescaleDB (spooled.apply)
    timers: each worker scans the partitions it owns and sends ticks to
            events / signals, which the agents apply like any other record

Everything per resident is keyed by resident, and the tables are
co-partitioned with the topics that write them, so a resident's state moves
with its partition when workers join or leave. See docs/distributed.md for
the delivery argument.

The worker is put together from parts, one module each, over the state they share
(``base.WorkerBase``): the agents' steps (``rules_agent``, ``alerts_agent``,
``notify_agent``, ``sink_agent``) around the pure cores (``rules_core``,
``alerts_core``, ``outbox``), the rules states held between commits
(``held_states``), the offset checks (``offsets``), the timer scan
(``timer_scan``) and the reloads (``reloads``); the patches of Faust internals are
in ``faust_patches``, and the production worker is built and run in ``run``.
This module builds the Faust app, its topics, tables, agents and timers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs as faust_codecs

from trygg.alerts.silences import Silence
from trygg.api.metrics import AlertLatencies, drainer_lag
from trygg.distributed.topics import ALERTS_TABLE, NOTIFY_TABLE, RULES_TABLE
from trygg.distributed.worker.alerts_agent import AlertsAgent
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.base import Sender
from trygg.distributed.worker.clocks import EventClocks, WallClocks
from trygg.distributed.worker.faust_patches import (
    _keep_records_across_rebalance,
    _patch_fetch_wait,
    _roomy_producer_buffer,
    _track_handed,
    _write_before_commit,
)
from trygg.distributed.worker.holes import Holes
from trygg.distributed.worker.notify_agent import NotifyAgent
from trygg.distributed.worker.offsets import TAIL_CHECK_S
from trygg.distributed.worker.outbox import NotifyOutbox
from trygg.distributed.worker.reloads import Reloads
from trygg.distributed.worker.rules_agent import RulesAgent
from trygg.distributed.worker.rules_core import RulesCore
from trygg.distributed.worker.sink_agent import SinkAgent
from trygg.distributed.worker.timer_scan import TimerScan
from trygg.distributed.worker.timers import TimerIndex
from trygg.registry import Registry
from trygg.rules.overlays import OverlayInputs
from trygg.runner.drain_lag import LAG_BUCKETS
from trygg.settings import Settings

SINK_WAIT_S = 0.05  # the sink's longest wait for a batch to fill (Faust: 0 waits for a full one)
SILENCE_RELOAD_S = 2.0  # how soon a silence made with `trygg api` reaches the gates


class _Str(faust_codecs.Codec):
    """Keys: the resident id as UTF-8 text (what the bridge sends)."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode() if isinstance(s, bytes | bytearray) else s


faust_codecs.register("trygg-str", _Str())


class FaustSender:
    async def send_all(self, items: Sequence[tuple[Any, Any, bytes, int | None]]) -> None:
        if not items:
            return
        futs = [
            await topic.send(key=key, value=value, partition=partition, force=True)
            for topic, key, value, partition in items
        ]
        await asyncio.gather(*futs)


def faust_settings(settings: Settings) -> dict[str, Any]:
    s = settings
    conf: dict[str, Any] = {
        "broker": [f"kafka://{h.strip()}" for h in s.kafka_bootstrap.split(",")],
        "store": "memory://",
        "datadir": str(s.worker_data_dir),
        "topic_partitions": s.kafka_partitions,
        "topic_replication_factor": s.kafka_replication,
        "producer_acks": -1,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": s.worker_web,
        "web_bind": s.worker_web_host,
        "web_host": s.worker_web_host,
        "web_port": s.worker_web_port,
        "processing_guarantee": "at_least_once",
        # Every step is idempotent (docs/distributed.md), so a rebalance need not wait
        # for the record an agent is in the middle of: it is processed again.
        "stream_wait_empty": False,
        # Faust's statistics per record, which nothing here reads (quiet_monitor)
        "Monitor": "trygg.distributed.worker.quiet_monitor:QuietMonitor",
    }
    if s.kafka_producer_max_batch_size is not None:
        conf["producer_max_batch_size"] = s.kafka_producer_max_batch_size
    if s.kafka_producer_linger_ms is not None:
        conf["producer_linger"] = s.kafka_producer_linger_ms / 1000
    # failover (docs/distributed.md, "Failover"): production values, not Faust's 60 s / 3 s
    conf["broker_session_timeout"] = s.kafka_session_timeout_s
    conf["broker_heartbeat_interval"] = s.kafka_heartbeat_interval_s
    if s.kafka_group_instance_id is not None:
        conf["consumer_group_instance_id"] = s.kafka_group_instance_id
    return conf


class Worker(RulesAgent, AlertsAgent, NotifyAgent, SinkAgent, TimerScan, Reloads):
    """Builds the Faust app, its topics, tables and agents, around the pure cores."""

    def __init__(
        self,
        settings: Settings,
        *,
        rules: RulesCore,
        alerts: AlertsCore,
        sender: Sender | None = None,
        db: Callable[..., Awaitable[Any]] | None = None,
        claim: Callable[[str, str], Awaitable[str | float | None]] | None = None,
        claim_sent: Callable[[str], Awaitable[None]] | None = None,
        load_registry: Callable[[], Awaitable[Registry]] | None = None,
        load_silences: Callable[[], Awaitable[list[Silence]]] | None = None,
        load_overlays: Callable[[], Awaitable[OverlayInputs]] | None = None,
        channels: dict[Any, Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        applied_log: Path | None = None,
        outbox: NotifyOutbox | None = None,
    ) -> None:
        from trygg.notify.retry import GiveUp, RetryPolicy

        self.settings = s = settings
        self.rules = rules
        self.alerts = alerts
        self.sender: Sender = sender or FaustSender()
        self.db = db
        self.claim = claim
        self.claim_sent = claim_sent
        self._load_registry = load_registry
        self._load_silences = load_silences
        self._load_overlays = load_overlays
        self._silences_seen: dict[str, Silence] | None = None
        self.channels = channels or {}
        self.clock = clock
        self.rule_timers = TimerIndex()
        self.alert_timers = TimerIndex()
        self.notify_timers = TimerIndex()  # alerts with a notification to retry, by when
        # the embedded runner's retry policy and give-up times (docs/alerts.md, "The outbox")
        self.outbox = outbox or NotifyOutbox(
            RetryPolicy(s.notify_retry_initial_s, s.notify_retry_max_s),
            GiveUp.parse(s.notify_give_up),
        )
        # the rule timers' clock per partition: the bridges' progress (event) or the
        # wall clock less the receipt delay (wall); docs/distributed.md, "Timers"
        self.event_clocks = EventClocks()
        self.wall_clocks = WallClocks()
        self._parts: dict[str, frozenset[int]] = {}
        self.holes = Holes()
        self._earliest_asked: dict[Any, float] = {}  # hole key -> when the broker was asked
        self._rules_next: dict[int, int] = {}  # partition -> next offset the rules expect
        self._seen_at: dict[str, float] = {}  # agent -> when it last received a record
        # resident -> its newest rules state, not yet in the table: written at the next
        # offsets commit (flush_rules_state), one changelog record per resident per
        # commit rather than per event
        self._unwritten: dict[str, tuple[int, str]] = {}  # resident -> (partition, state)
        self._revokes = 0  # rebalances that took the partitions away (see rules_step)
        self._busy: set[str] = set()  # agents in the middle of a step
        # a line per event applied to the engine (partition, offset, device, event id): tests
        self._applied_fd = (
            os.open(applied_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if applied_log is not None
            else None
        )
        self._registry: Registry | None = None
        # The embedded runner's latency histograms, for the steps a worker does
        # (docs/api.md, "Latency histograms"); /metrics on Faust's web server.
        self.latency = AlertLatencies(getattr(c, "value", str(c)) for c in self.channels)
        self.sink_lag = drainer_lag(LAG_BUCKETS)  # the sink is this runner's drainer
        self.stats: dict[str, int] = {
            "events": 0,
            "applied": 0,  # events applied to the engine (each once: docs/distributed.md)
            "duplicates": 0,
            "signals": 0,
            "ticks": 0,
            "stored": 0,
            "records": 0,
            "notified": 0,
            "relayed": 0,  # notifications a bridge's relay sent (held here, not sent again)
        }
        if s.kafka_fetch_max_wait_ms is not None:
            _patch_fetch_wait(s.kafka_fetch_max_wait_ms)
        app = faust.App(s.worker_id, **faust_settings(s))
        _keep_records_across_rebalance(app)
        _roomy_producer_buffer(app)
        self.handed = _track_handed(app)
        self.app = app
        n = s.kafka_partitions

        def topic(name: str) -> Any:
            return app.topic(name, key_serializer="trygg-str", value_serializer="raw", partitions=n)

        self.events_topic = topic(s.kafka_events_topic)
        self.signals_topic = topic(s.kafka_signals_topic)
        self.records_topic = topic(s.kafka_records_topic)
        self.notifications_topic = topic(s.kafka_notifications_topic)
        self.dead_letters_topic = topic(s.kafka_dead_letters_topic)
        # Table keys and values are text (JSON-serialised by Faust, as its recovery expects).
        self.rules_table = app.Table(RULES_TABLE, partitions=n, key_type=str, value_type=str)
        _write_before_commit(app, self.flush_rules_state)
        tables = app.tables
        revoke = tables.on_partitions_revoked

        def on_partitions_revoked(revoked: Any) -> None:
            # first in Faust's revocation, before it flushes the producer: the states
            # (and the offsets they took in) reach the changelog while the partitions
            # are still this worker's, so the new owner skips what was applied here
            self.flush_rules_state()
            self._revokes += 1
            self.rules.forget()  # live states of partitions that may move: decoded again
            revoke(revoked)

        tables.on_partitions_revoked = on_partitions_revoked  # type: ignore[method-assign]
        self.alerts_table = app.Table(ALERTS_TABLE, partitions=n, key_type=str, value_type=str)
        self.notify_table = app.Table(NOTIFY_TABLE, partitions=n, key_type=str, value_type=str)
        sink_channel = app.topic(
            s.kafka_events_topic,
            s.kafka_dead_letters_topic,
            s.kafka_records_topic,
            key_serializer="trygg-str",
            value_serializer="raw",
        )

        async def rules_agent(stream: Any) -> None:
            async for event in stream.events():
                m = event.message
                self._busy.add("rules")
                try:
                    if await self._rules_skip(m.partition, m.offset):
                        continue  # applied already, or read again from a hole before it
                    await self.rules_step(event.key, event.value, m.partition, m.offset)
                finally:
                    self._busy.discard("rules")

        async def alerts_agent(stream: Any) -> None:
            async for event in stream.events():
                await self.alerts_step(event.key, event.value, event.message.partition)

        async def notify_agent(stream: Any) -> None:
            async for event in stream.events():
                await self.notify_step(event.key, event.value, event.message.partition)

        async def sink_agent(stream: Any) -> None:
            # Never 0: Faust's take_events then waits for a full batch (batch_max records),
            # holding them unacknowledged, so commits lagged by up to that many records
            # and the tail check took the wait for lost records (docs/distributed.md).
            wait = max(s.batch_wait_ms / 1000, SINK_WAIT_S)
            async for batch in stream.take_events(s.batch_max, within=wait):
                await self.sink_batch(
                    [
                        (e.message.topic, e.message.partition, e.message.offset, e.value)
                        for e in batch
                    ]
                )

        self.rules_agent = app.agent(self.events_topic, name="rules")(rules_agent)
        self.alerts_agent = app.agent(self.signals_topic, name="alerts")(alerts_agent)
        self.notify_agent = app.agent(self.notifications_topic, name="notify")(notify_agent)
        if db is not None:
            self.sink_agent = app.agent(sink_channel, name="sink")(sink_agent)
        app.timer(s.worker_timer_interval_s, name="trygg-timers")(self.scan_timers)

        async def metrics_view(view: Any, request: Any) -> Any:
            return view.text(self.metrics(), content_type="text/plain")

        app.page("/metrics")(metrics_view)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)
        app.timer(TAIL_CHECK_S, name="trygg-tails")(self.check_tails)
        if load_registry is not None:
            app.timer(10.0, name="trygg-registry")(self.reload_registry)
        if load_silences is not None:
            app.timer(SILENCE_RELOAD_S, name="trygg-silences")(self.reload_silences)
