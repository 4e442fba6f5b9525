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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import faust
from faust.serializers import codecs as faust_codecs

from trygg import logs
from trygg.alerts.gates import Silence
from trygg.api.metrics import AlertLatencies, drainer_lag, render_histograms
from trygg.distributed import codecs
from trygg.distributed.topics import ALERTS_TABLE, NOTIFY_TABLE, RULES_TABLE
from trygg.distributed.worker.core import (
    AlertsCore,
    Attempt,
    EventClocks,
    Holes,
    NotifyOutbox,
    Outcome,
    RulesCore,
    TimerIndex,
    WallClocks,
    applied_floors,
)
from trygg.registry import Registry
from trygg.rules.overlays import OverlayInputs
from trygg.runner.drainer import LAG_BUCKETS, receipt_lags
from trygg.settings import Settings

log = logs.get("trygg.worker")
TAIL_CHECK_S = 2.0  # how often a worker looks for records missed at a partition's end
SINK_WAIT_S = 0.05  # the sink's longest wait for a batch to fill (Faust: 0 waits for a full one)
SILENCE_RELOAD_S = 2.0  # how soon a silence made with `trygg api` reaches the gates
CLOSED = "the alert was closed"  # a notification dropped for it (as the embedded runner says)


class _Str(faust_codecs.Codec):
    """Keys: the resident id as UTF-8 text (what the bridge sends)."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode() if isinstance(s, bytes | bytearray) else s


faust_codecs.register("trygg-str", _Str())


class Sender(Protocol):
    async def send_all(self, items: Sequence[tuple[Any, Any, bytes, int | None]]) -> None:
        """Send (topic, key, value, partition) records; return once the broker acked all."""


class FaustSender:
    async def send_all(self, items: Sequence[tuple[Any, Any, bytes, int | None]]) -> None:
        if not items:
            return
        futs = [
            await topic.send(key=key, value=value, partition=partition, force=True)
            for topic, key, value, partition in items
        ]
        await asyncio.gather(*futs)


def _patch_fetch_wait(ms: int) -> None:
    """Faust 0.15 passes fetch_max_wait_ms=1500 to aiokafka; tansu only answers a
    waiting fetch when the wait is over, so tests lower it (TEST ONLY)."""
    from faust.transport.drivers import aiokafka as drv

    orig = drv.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(orig, "_trygg_wait", None) == ms:
        return
    base = getattr(orig, "_trygg_orig", orig)

    def create(self: Any, transport: Any) -> Any:
        consumer = base(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create._trygg_wait = ms  # type: ignore[attr-defined]
    create._trygg_orig = base  # type: ignore[attr-defined]
    drv.AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def _keep_records_across_rebalance(app: faust.App) -> None:
    """Clear the agents' queues *before* seeking to the committed offsets, not after.

    After a rebalance Faust 0.15 seeks every partition to its committed offset and
    then resumes flow, and resuming clears every agent's queue. Records the fetcher
    delivered between the seek and the resume are dropped while the consumer's read
    position has already moved past them, so no agent ever sees them (measured in the
    take-over test: 38 consecutive events of one partition never reached the rules or
    the sink, and the sink's checkpoint then moved past them). Clearing first and
    then seeking loses nothing: whatever was queued is fetched again from the
    committed offset, and every step here is idempotent (docs/distributed.md).
    Revocation still clears the queues (Faust's own ``flow_control.clear()``)."""
    from faust.transport.consumer import Consumer

    fc = app.flow_control

    def resume() -> None:
        fc._suspend.clear()
        fc._resume.set()

    fc.resume = resume  # type: ignore[method-assign]
    if getattr(Consumer.perform_seek, "_trygg", False):
        return
    seek = Consumer.perform_seek

    async def perform_seek(self: Any) -> None:
        self.app.flow_control.clear()
        await seek(self)

    perform_seek._trygg = True  # type: ignore[attr-defined]
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]


def _write_before_commit(app: faust.App, flush: Callable[[], None]) -> None:
    """Call ``flush`` (sync) at the start of every offsets commit, before Faust picks
    the offsets to commit.

    The rules agent keeps each resident's newest state in memory and writes it to
    its table (so to the changelog) only here (``Worker.flush_rules_state``): every
    commit, Faust's timer's or a rebalance's, goes through ``Consumer._commit_tps``,
    which computes the committable offsets before its first ``await`` and then
    flushes the producer before committing them. So the states written here, which
    took in every record acknowledged so far, reach the changelog before the offsets
    they guard are committed (docs/distributed.md, "The rules state, written once
    per commit")."""
    from faust.transport.consumer import Consumer

    hooks = app.__dict__.setdefault("_trygg_before_commit", [])
    hooks.append(flush)
    if getattr(Consumer._commit_tps, "_trygg", False):
        return
    commit_tps = Consumer._commit_tps

    async def _commit_tps(self: Any, tps: Any, start_new_transaction: bool) -> bool:
        for fn in self.app.__dict__.get("_trygg_before_commit", ()):
            fn()
        return await commit_tps(self, tps, start_new_transaction)

    _commit_tps._trygg = True  # type: ignore[attr-defined]
    _commit_tps._trygg_orig = commit_tps  # type: ignore[attr-defined]
    Consumer._commit_tps = _commit_tps  # type: ignore[method-assign]


class Handed:
    """Per topic partition, the offset of the last record the consumer handed to the
    agents' queues (Faust's conductor), and whether one is being handed right now."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, int], int] = {}
        self.inflight: set[tuple[str, int]] = set()

    def get(self, topic: str, partition: int) -> int | None:
        """The last offset handed over (None: none yet, or one is on its way)."""
        tp = (topic, partition)
        return None if tp in self.inflight else self.last.get(tp)

    def clear(self) -> None:
        self.last.clear()


def _track_handed(app: faust.App) -> Handed:
    """Wrap the conductor's ``on_message`` (the consumer's callback, taken when the
    consumer is built) to note what the consumer handed to the agents. A record that
    was handed over and that an idle agent never received was lost on the way
    (``Worker.check_tails``); the consumer's own read offset cannot say that, as it
    is also the next offset to read after a seek."""
    handed = Handed()
    conductor = app.topics
    deliver = conductor.on_message

    async def on_message(message: Any) -> None:
        tp = (message.topic, message.partition)
        handed.inflight.add(tp)
        try:
            await deliver(message)
        finally:
            handed.inflight.discard(tp)
            handed.last[tp] = message.offset

    conductor.on_message = on_message
    return handed


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


class Worker:
    """Builds the Faust app, its topics, tables and agents, around the pure cores."""

    def __init__(
        self,
        settings: Settings,
        *,
        rules: RulesCore,
        alerts: AlertsCore,
        sender: Sender | None = None,
        db: Callable[..., Awaitable[Any]] | None = None,
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
        # partition -> the next offset the rules state has not taken in (read at a take-over)
        self._rules_floor: dict[int, int] | None = None
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
        }
        if s.kafka_fetch_max_wait_ms is not None:
            _patch_fetch_wait(s.kafka_fetch_max_wait_ms)
        app = faust.App(s.worker_id, **faust_settings(s))
        _keep_records_across_rebalance(app)
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
        app.timer(TAIL_CHECK_S, name="trygg-tails")(self.check_tails)
        if load_registry is not None:
            app.timer(10.0, name="trygg-registry")(self.reload_registry)
        if load_silences is not None:
            app.timer(SILENCE_RELOAD_S, name="trygg-silences")(self.reload_silences)

    # ------------------------------------------------------------------ rules

    async def rules_step(
        self, key: Any, value: bytes, partition: int, offset: int | None = None
    ) -> None:
        rid = key.decode() if isinstance(key, bytes) else key
        rec = codecs.loads(value)
        op = rec.get("op")
        on_events = self.settings.worker_clock == "event"
        if op == "wm":  # a bridge's progress (codecs.watermark_record)
            if on_events:
                self.event_clocks.see(partition, rec)
            return
        if op not in ("ev", "tick"):
            return
        sources, release, lag = None, None, 0.0
        if on_events:
            # events wait in the state until the slowest bridge has reached them (RulesCore)
            if op == "ev":
                self.event_clocks.see(partition, rec)
            sources = self.event_clocks.state(partition)
            clock = self.event_clocks.clock(partition)
            release = clock if clock is not None else float("-inf")
            lag = self.settings.worker_event_clock_lag_s
        revokes = self._revokes
        res = self.rules.step(
            rid,
            self.rules_state(rid),
            rec,
            partition,
            sources,
            release=release,
            lag=lag,
            offset=offset,
        )
        if res.duplicate:
            self.stats["duplicates"] += 1
            return
        if res.applied:
            self.stats["applied"] += len(res.applied)
            if self._applied_fd is not None:
                at = "" if offset is None else offset
                lines = "".join(f"{partition}\t{at}\t{d}\t{i}\n" for d, i in res.applied)
                os.write(self._applied_fd, lines.encode())
        if op == "ev":
            self.stats["events"] += 1
            if not on_events and res.event_at is not None and not res.late:
                # The receipt delay: from the event's time to the engine, at least to the
                # bridge's receipt (a backlog at mosquitto or at Kafka, e.g. a take-over).
                got = self.clock()
                rx = rec.get("rx")
                if rx:
                    got = max(got, datetime.fromisoformat(rx))
                self.wall_clocks.note(partition, got - res.event_at, time.monotonic())
        else:
            self.stats["ticks"] += 1
        # An event's signals say which event they were evaluated for and its receipt
        # (the alerts agent's latency histograms: trigger=event, receipt -> raised).
        cause = {"by": rec.get("i"), "brx": rec.get("rx")} if op == "ev" else {}
        out = [
            (self.signals_topic, rid, codecs.dumps({**codecs.signal_record(sig), **cause}), None)
            for sig in res.signals
        ]
        out += [
            (self.signals_topic, rid, codecs.dumps(codecs.reset_record(ev)), None)
            for ev in res.resets
        ]
        # The signals must be in Kafka before the state that says they fired.
        await self.sender.send_all(out)
        self.stats["signals"] += len(res.signals)
        assert res.state is not None
        if revokes != self._revokes:
            # the partitions were taken away while this step sent its signals: the new
            # owner reads from the committed offset and applies the record again (its
            # state, never written, is lost with this application)
            return
        self._unwritten[rid] = (partition, res.state.decode())
        self.rule_timers.update(partition, rid, res.deadline, res.wm)

    def rules_state(self, resident: str) -> str | None:
        """The resident's newest rules state: one not yet written to the table, else
        the table's."""
        kept = self._unwritten.get(resident)
        return kept[1] if kept is not None else self.rules_table.get(resident)

    def rules_items(self) -> list[tuple[str, str]]:
        """Every resident's newest rules state (the table's, and those not yet in it)."""
        items = dict(self.rules_table.items())
        items.update((rid, st) for rid, (_, st) in self._unwritten.items())
        return list(items.items())

    def flush_rules_state(self) -> None:
        """Write the rules states kept since the last commit to the table (so to its
        changelog, through Faust's producer buffer): at the start of every offsets
        commit and of a revocation (``_write_before_commit``). A resident's events
        between two commits cost one changelog record, not one each; the committed
        offsets never run ahead of the states in the changelog."""
        if not self._unwritten:
            return
        items, self._unwritten = self._unwritten, {}
        table = self.rules_table
        # ``table[rid] = state`` takes the changelog partition from the record being
        # processed (Faust's current event), which a commit has not: the value goes
        # into the store (memory://) and to the resident's own partition as Faust's
        # ``Table.on_key_set`` sends it
        for rid, (partition, state) in items.items():
            table.data[rid] = state
            table.send_changelog(partition, rid, state)

    # ------------------------------------------------------------------ alerts

    def _alerts_now(self, rec: dict[str, Any]) -> datetime:
        if self.settings.worker_clock == "event" and rec.get("at"):
            return datetime.fromisoformat(rec["at"])
        return self.clock()

    async def alerts_step(self, key: Any, value: bytes, partition: int) -> None:
        rid = key.decode() if isinstance(key, bytes) else key
        rec = codecs.loads(value)
        res = self.alerts.step(
            rid, self.alerts_table.get(rid), rec, partition, self._alerts_now(rec)
        )
        if res.duplicate:
            return
        self._observe_raised(rec, res.decisions)
        out = [(self.records_topic, rid, codecs.dumps(r), None) for r in res.records]
        out += [
            (self.notifications_topic, n["row"]["alert_id"], codecs.dumps(n), None)
            for n in res.notifications
        ]
        # a closed alert's notifications still being retried are dropped (NotifyOutbox)
        out += [
            (self.notifications_topic, aid, codecs.dumps({"op": "cls", "id": aid}), None)
            for aid in res.closed
        ]
        await self.sender.send_all(out)
        self.stats["records"] += len(res.records)
        assert res.state is not None
        self.alerts_table[rid] = res.state.decode()
        self.alert_timers.update(partition, rid, res.deadline, None)

    def _observe_raised(self, rec: dict[str, Any], decisions: Sequence[Any]) -> None:
        """New alerts into the latency histograms, as the embedded service counts them."""
        cause = None
        if rec.get("op") == "sig" and rec.get("by"):
            rx = rec.get("brx")
            cause = (str(rec["by"]), datetime.fromisoformat(rx) if isinstance(rx, str) else None)
        now = self.clock()
        for d in decisions:
            if d.alert is not None and d.previous_version is None:
                self.latency.observe_raise(d.alert, now, cause)

    def metrics(self) -> str:
        """The worker's /metrics: the latency histograms of the steps it does (the
        raise, the notifications, the sink's lag); staff's are the API's."""
        lat = self.latency
        return render_histograms(
            [lat.receipt_to_raised, lat.event_to_raised, lat.raised_to_notified, self.sink_lag]
        )

    # ------------------------------------------------------------------ notify

    async def notify_step(self, key: Any, value: bytes, partition: int = 0) -> None:
        """One record of the notifications topic, keyed by alert id (``NotifyOutbox``):
        ``ntf`` a notification to send, ``rty`` the timer scan's word that a retry is
        due, ``cls`` the alert closed. One attempt per notification, never a wait: a
        failed one is kept in the ``notify-outbox`` table and tried again when due."""
        from trygg.alerts.routing import Notification
        from trygg.notify.base import deliver, payload
        from trygg.store import spooled

        aid = key.decode() if isinstance(key, bytes) else key
        rec = codecs.loads(value)
        op = rec.get("op")
        ob = self.outbox
        doc = ob.load(self.notify_table.get(aid), partition)
        now = self.clock().timestamp()
        records: list[tuple[str, dict[str, Any]]] = []  # (resident, delivery record)

        def record(
            at: Attempt, attempts: int, ok: bool, status: Any, error: Any, ms: float
        ) -> None:
            row = at.row
            records.append(
                (
                    at.alert.get("resident") or "",
                    spooled.delivery_record(
                        key=at.key,
                        alert_id=row["alert_id"],
                        channel=row["channel"],
                        address=row["address"],
                        at=self.clock(),
                        attempts=attempts,
                        ok=ok,
                        status=status,
                        error=error,
                        latency_ms=round(ms, 3),
                    ),
                )
            )

        if op == "ntf":
            first = ob.take(doc, rec)
            if first is None:
                self.stats["duplicates"] += 1
                return  # sent (or given up) already: a record read again; or the alert closed
            todo = [first]
        elif op == "rty":
            if ob.expired(doc, now):
                del self.notify_table[aid]
                self.notify_timers.update(partition, aid, None, None)
                return
            todo = ob.due(doc, now)
        elif op == "cls":
            for at in ob.close(doc, now):
                record(at, at.attempts, False, None, f"not delivered: {CLOSED}", 0.0)
                log.info("notification dropped: the alert was closed", alert=aid)
            todo = []
        else:
            return
        for at in todo:
            row = at.row
            n = Notification.from_row(row)
            d, ms = await deliver(
                self.channels, n, row["address"], payload(at.alert, n, row["address"])
            )
            tries = at.attempts + max(1, d.attempts)
            final = ob.settle(
                doc, at, Outcome(tries, d.ok, d.retry, d.error), self.clock().timestamp()
            )
            if final is None:
                if at.first_failed is None:  # the first failure is recorded at once, as embedded
                    record(at, tries, False, d.status, d.error, ms)
                    log.warning(
                        "notification not delivered, retrying",
                        alert=aid,
                        channel=row["channel"],
                        address=row["address"],
                        error=d.error,
                    )
                continue
            self.stats["notified"] += 1
            if d.ok and n.action == "notify":  # the first level: raised -> notified
                seconds = (self.clock() - n.due_at).total_seconds()
                self.latency.raised_to_notified.observe(seconds, n.channel.value)
            record(at, tries, d.ok, d.status, d.error if d.ok or final == d.error else final, ms)
            if d.ok and at.first_failed is not None:
                log.info(
                    "notification delivered after retries",
                    alert=aid,
                    channel=row["channel"],
                    address=row["address"],
                    attempts=tries,
                )
            elif not d.ok:
                log.error(
                    "notification not delivered",
                    alert=aid,
                    channel=row["channel"],
                    address=row["address"],
                    attempts=tries,
                    error=final,
                )
        out = [(self.records_topic, rid, codecs.dumps(r), None) for rid, r in records]
        # The deliveries must be in Kafka before the state that says they were made.
        await self.sender.send_all(out)
        state = ob.dump(doc)
        self.notify_table[aid] = state.decode()
        self.notify_timers.update(partition, aid, doc["next"], None)

    # ------------------------------------------------------------------ sink

    async def sink_batch(self, batch: list[tuple[str, int, int, bytes]]) -> None:
        from trygg.distributed.worker.sink import apply_batch

        assert self.db is not None
        by_tp: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]] = {}
        for topic, partition, offset, value in batch:
            by_tp.setdefault((topic, partition), []).append((offset, codecs.loads(value)))
        self._seen_at["sink"] = time.monotonic()
        self._busy.add("sink")
        try:
            accept = frozenset([tp for tp in by_tp if await self._gone("sink", *tp)])
            stored, holes = await self.db(apply_batch, by_tp, accept)
            self.stats["stored"] += stored
            events = [
                r
                for tp, recs in by_tp.items()
                if tp[0] == self.settings.kafka_events_topic and tp not in holes
                for _, r in recs
            ]
            lags = receipt_lags(events, time.time())  # receipt -> stored, as the drainer
            if lags is not None:
                self.sink_lag.add(lags["n"], lags["sum"])
            for tp in by_tp:
                if tp not in holes:
                    self.holes.closed(("sink", *tp))
            for (topic, partition), offset in holes.items():
                await self._read_again("sink", topic, partition, offset)
        finally:
            self._seen_at["sink"] = time.monotonic()
            self._busy.discard("sink")

    async def _rules_skip(self, partition: int, offset: int) -> bool:
        """Whether the rules agent skips this record of ``partition``.

        Below the next offset it expects: taken in already (a partition read again for
        the sink's sake, or from its committed offset after a take-over). After a
        take-over that offset is where the rules state leaves off (the newest offset
        its residents' states hold, ``core.applied_floors``): the committed offset
        can be far behind it. Above it: a hole, and the partition is read again from
        the first missing record. (Each resident's state checks its own offset too:
        this only saves decoding the states of a long replay.)"""
        want = self._rules_next.get(partition)
        topic = self.settings.kafka_events_topic
        key = ("rules", topic, partition)
        self._seen_at["rules"] = time.monotonic()
        if want is None:
            if self._rules_floor is None:
                self._rules_floor = applied_floors(
                    self.rules_items(), self._owned(topic) | {partition}
                )
            want = self._rules_floor.get(partition)
            if want is not None:
                self._rules_next[partition] = want
        if want is not None and offset < want:
            return True
        if want is not None and offset > want:
            if not await self._gone("rules", topic, partition):
                await self._read_again("rules", topic, partition, want)
                return True
            log.error("events missing from the topic", partition=partition, missing=offset - want)
        self.holes.closed(key)
        self._rules_next[partition] = offset + 1
        return False

    async def _gone(self, agent: str, topic: str, partition: int) -> bool:
        """Whether the agent's pending hole in the partition is no longer in the topic: asked for
        several times, and the broker's earliest offset is past it (retention)."""
        from faust.types import TP

        key = (agent, topic, partition)
        hole = self.holes.pending(key)
        if hole is None or not self.holes.stubborn(key):
            return False
        now = time.monotonic()
        if now - self._earliest_asked.get(key, 0.0) < 1.0:
            return False  # asked the broker a moment ago
        self._earliest_asked[key] = now
        tp = TP(topic, partition)
        try:
            earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp)
        except Exception as exc:  # the broker will say next time
            log.warning("earliest offset unknown", topic=topic, error=str(exc)[:200])
            return False
        return earliest is not None and earliest > hole

    async def check_tails(self) -> None:
        """Read again a record the consumer fetched that never reached an agent.

        A record lost on its way to an agent at the end of a partition leaves no hole
        for a later record to show (a dead letter is often the only record of its
        partition for a while). So every ``TAIL_CHECK_S`` an agent that is idle (no
        step under way, nothing received for as long, so nothing is queued for it)
        is compared with the consumer: if the consumer has handed the agents the
        partition's records up to or past the agent's next offset (``Handed``), that
        record was lost, and the
        partition is read again from it. An agent behind is not short: a busy agent,
        or records the consumer has not fetched yet (it will), are left alone. (This
        used to compare with the broker's end offset and count only the time since the
        agent's last record: a step or a database write taking 2 s under load, or the
        sink waiting to fill a batch, sought partitions back with no rebalance going
        on, hundreds of times a run.)"""
        from trygg.distributed.worker.sink import checkpoints

        if not self._ready():
            return
        s = self.settings
        now = time.monotonic()

        def idle(key: str) -> bool:
            return key not in self._busy and now - self._seen_at.get(key, 0.0) > TAIL_CHECK_S

        events = s.kafka_events_topic
        if idle("rules"):
            for p in self._owned(events):
                want, read = self._rules_next.get(p), self.handed.get(events, p)
                if want is not None and read is not None and want <= read:
                    await self._read_again("rules", events, p, want, end=read + 1)
        if self.db is None or not idle("sink"):
            return
        topics = (events, s.kafka_dead_letters_topic, s.kafka_records_topic)
        tps = [(t, p) for t in topics for p in sorted(self._owned(t))]
        reads = {tp: self.handed.get(*tp) for tp in tps}
        tps = [tp for tp in tps if reads[tp] is not None]
        if not tps:
            return
        cps = await self.db(checkpoints, tps)
        if not idle("sink"):
            return  # a batch came meanwhile
        for topic, p in tps:
            have, read = cps.get((topic, p)) or 0, reads[(topic, p)]
            if read is not None and have <= read:
                await self._read_again("sink", topic, p, have, end=read + 1)

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kw: Any) -> None:
        """A new owner reads from the committed offset: forget where the rules were
        (the next assignment reads it from the recovered table again)."""
        self._rules_next.clear()
        self._rules_floor = None
        self.handed.clear()

    async def _read_again(
        self, agent: str, topic: str, partition: int, offset: int, *, end: int | None = None
    ) -> None:
        """Seek a partition back to a record an agent never received.

        Faust can drop a record on its way to one agent but not another (a delivery
        cut short when a rebalance suspends the flow) and still commit past it; an
        agent that sees the hole in the offsets reads the partition again from there.
        Every agent sees those records again; each step is idempotent."""
        from faust.types import TP

        key = (agent, topic, partition)
        if not self.holes.ask(key, offset, time.monotonic()):
            return  # asked already; the re-read records are on their way
        log.warning(
            "records missed, reading again",
            agent=agent,
            topic=topic,
            partition=partition,
            missed=(end - offset) if end is not None else "a hole",
        )
        await self.app.consumer.seek(TP(topic, partition), offset)

    # ------------------------------------------------------------------ timers

    def _owned(self, topic: str) -> frozenset[int]:
        return frozenset(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
        )

    def _ready(self) -> bool:
        app = self.app
        return not (app.rebalancing or getattr(app, "in_recovery", False))

    async def scan_timers(self) -> None:
        """Tick every owned resident whose next deadline has come (rules, then alerts)."""
        if not self._ready():
            return
        s = self.settings
        wall = self.clock()
        now = wall.timestamp()
        mono = time.monotonic()
        lag = s.worker_event_clock_lag_s
        # rules timers
        parts = self._owned(s.kafka_events_topic)
        if parts != self._parts.get("rules"):
            items = self.rules_items()
            self.rule_timers.rebuild(set(parts), items)
            if s.worker_clock == "event":
                self.event_clocks.rebuild(set(parts), items)
            else:
                self.wall_clocks.assigned(set(parts), self.rule_timers.wm, mono)
            self._parts["rules"] = parts
            log.info(
                "partitions owned",
                partitions=sorted(parts),
                residents_with_timers=len(self.rule_timers.due),
                applied=self.stats["applied"],
                duplicates=self.stats["duplicates"],
            )
        out: list[tuple[Any, str, bytes, int | None]] = []
        for p in parts:
            if s.worker_clock == "event":
                # the slowest bridge's progress on the partition (core.Sources)
                wm = self.event_clocks.clock(p)
                if wm is None:
                    continue
                clock = wm - lag
            else:
                # the wall clock less the partition's receipt delay (runner.timer_clock)
                clock = self.wall_clocks.clock(p, wall, mono).timestamp()
            at = datetime.fromtimestamp(clock, UTC)
            for rid in self.rule_timers.pop_due(p, clock):
                out.append((self.events_topic, rid, codecs.dumps(codecs.tick_record(rid, at)), p))
        # alert timers (the wall clock: they are about people answering)
        if s.worker_clock == "wall":
            parts = self._owned(s.kafka_signals_topic)
            if parts != self._parts.get("alerts"):
                self.alert_timers.rebuild(set(parts), list(self.alerts_table.items()))
                self._parts["alerts"] = parts
            at = datetime.fromtimestamp(now, UTC)
            for p in parts:
                for rid in self.alert_timers.pop_due(p, now):
                    out.append(
                        (self.signals_topic, rid, codecs.dumps(codecs.tick_record(rid, at)), p)
                    )
        # notifications to retry (the wall clock: a receiver coming back is real time)
        parts = self._owned(s.kafka_notifications_topic)
        if parts != self._parts.get("notify"):
            self.notify_timers.rebuild(set(parts), list(self.notify_table.items()))
            self._parts["notify"] = parts
        at = datetime.fromtimestamp(now, UTC)
        for p in parts:
            for aid in self.notify_timers.pop_due(p, now):
                rty = codecs.dumps({"op": "rty", "at": at.isoformat()})
                out.append((self.notifications_topic, aid, rty, p))
        if out:
            await self.sender.send_all(out)

    async def reload_registry(self) -> None:
        assert self._load_registry is not None
        try:
            registry = await self._load_registry()
        except Exception as exc:
            log.warning("registry reload failed", error=str(exc).strip()[:200])
            return
        if registry != self._registry:
            self.set_registry(registry)
        if self._load_overlays is not None:
            await self.reload_overlays()

    async def reload_overlays(self) -> None:
        """District overlays changed beside the rules or in the database (trygg rules
        promote --district): taken into use without a restart, as registry changes
        are; a refused one keeps the overlays in force, and says so in the log."""
        from trygg.rules import CarePlanError
        from trygg.rules.overlays import OverlayError

        assert self._load_overlays is not None
        try:
            texts, stored = await self._load_overlays()
            changed = self.rules.update_overlays(texts, stored)
        except (OverlayError, CarePlanError) as exc:
            log.error(
                "district overlays refused: the ones in force are kept",
                problems=str(exc)[:1000],
            )
            return
        except Exception as exc:
            log.warning("district overlays not read", error=str(exc).strip()[:200])
            return
        if changed:
            log.info("district overlays taken into use", districts=self.rules.overlays.describe())

    def set_registry(self, registry: Registry) -> None:
        self._registry = registry
        self.rules.update_registry(registry)
        self.alerts.update_registry(registry)

    async def reload_silences(self) -> None:
        """Give the alerts core the database's silences (written by ``trygg api``).

        A silence that was ended or changed also gets its resident a ``tick`` on the
        signals topic, so an alert it suppressed is released now, not at its old end
        (every worker sends one; a tick is idempotent)."""
        assert self._load_silences is not None
        try:
            silences = await self._load_silences()
        except Exception as exc:
            log.warning("silence reload failed", error=str(exc).strip()[:200])
            return
        seen = {s.id: s for s in silences}
        before, self._silences_seen = self._silences_seen, seen
        if seen == before:
            return
        self.alerts.update_silences(silences)
        log.info("silences reloaded", silences=len(silences))
        changed = [s for sid, s in (before or {}).items() if seen.get(sid) != s]
        residents = sorted({r for s in changed if (r := self.alerts.resident_of(s))})
        at = self.clock()
        out = [
            (self.signals_topic, rid, codecs.dumps(codecs.tick_record(rid, at)), None)
            for rid in residents
        ]
        await self.sender.send_all(out)


def build_worker(settings: Settings, applied_log: Path | None = None) -> Worker:
    """The production worker: catalogue, registry and routing from the settings and database."""
    import psycopg
    from psycopg_pool import ConnectionPool

    from trygg.check import NotStarted, care_plan_lines
    from trygg.notify.console import ConsoleFeed
    from trygg.retry import logged, retry_async
    from trygg.rules import load_catalogue
    from trygg.rules.catalogue import default_rules_dir
    from trygg.rules.overlays import overlay_inputs
    from trygg.runner.alerting import routing_from
    from trygg.runner.wiring import build_channels, webhook_urls
    from trygg.store import DB_AWAY
    from trygg.store.registry import load_registry

    s = settings
    rules_dirs = [Path(s.rules_dir) if s.rules_dir else default_rules_dir()]
    catalogue = load_catalogue(rules_dirs)
    pool = ConnectionPool(
        s.database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}, timeout=10
    )
    pool.open(wait=False)

    def _call(fn: Any, *args: Any) -> Any:
        with pool.connection() as conn:
            return fn(conn, *args)

    async def db(fn: Any, *args: Any) -> Any:
        return await retry_async(
            lambda: asyncio.to_thread(_call, fn, *args),
            retry_on=DB_AWAY,
            on_retry=logged(log, "database unavailable, retrying"),
        )

    def _registry() -> Registry:
        with psycopg.connect(s.database_url, connect_timeout=10) as conn:
            return load_registry(conn)

    def _silences() -> list[Silence]:
        from trygg.store.alerts import load_silences

        with psycopg.connect(s.database_url, connect_timeout=10) as conn:
            rows = load_silences(conn, since=datetime.now(UTC))
        return [Silence.model_validate(r) for r in rows]

    def _overlay_inputs() -> OverlayInputs:
        return overlay_inputs(rules_dirs, s.database_url)

    registry = _registry()
    # The stored care plans against the catalogue that runs: refused in trygg check's words.
    problems = care_plan_lines(catalogue, None, registry)
    if problems:
        raise NotStarted(problems)
    routing = routing_from(s.routing, webhooks=webhook_urls(s))
    # District overlays: a bad one refuses the start, naming file:line (OverlayError).
    rules = RulesCore.layered(catalogue, registry, *_overlay_inputs())
    alerts = AlertsCore(routing)
    alerts.update_registry(registry)
    w = Worker(
        s,
        rules=rules,
        alerts=alerts,
        db=db,
        load_registry=lambda: asyncio.to_thread(_registry),
        load_silences=lambda: asyncio.to_thread(_silences),
        load_overlays=lambda: asyncio.to_thread(_overlay_inputs),
        # one MQTT client id per worker process (workers run side by side)
        channels=build_channels(
            s,
            ConsoleFeed(),
            mqtt_client_id=f"{s.mqtt_client_id}-{socket.gethostname()}-{os.getpid()}-notify",
        ),
        applied_log=applied_log,
    )
    w._registry = registry
    return w


def run_worker(settings: Settings, applied_log: Path | None = None) -> None:
    """Run a worker until SIGINT/SIGTERM (Faust's own worker loop)."""
    from faust.worker import Worker as FaustWorker

    w = build_worker(settings, applied_log)
    log.info(
        "worker starting",
        kafka=settings.kafka_bootstrap,
        partitions=settings.kafka_partitions,
        web=f"{settings.worker_web_host}:{settings.worker_web_port}"
        if settings.worker_web
        else None,
        clock=settings.worker_clock,
    )
    fw = FaustWorker(
        w.app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        # trygg's logging, not mode's (docs/distributed.md, "Logs"): its records
        # through trygg.logs' handler, and stdout/stderr left alone (mode would
        # wrap each of trygg's own lines into a "[WARNING] ..." record).
        logging_config=logs.dict_config(settings.log_level),
        redirect_stdouts=False,
    )
    fw.spinner = None  # a terminal spinner: escape codes in a log that is no terminal
    with contextlib.suppress(SystemExit):
        fw.execute_from_commandline()
