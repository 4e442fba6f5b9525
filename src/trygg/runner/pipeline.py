"""The embedded runner's event path, on one asyncio event loop.

    receiver process --Messages--> inbox --> consume: decode, dedup, rules, alerts
                                                 \\--> commit: spool (fsync) --> PUBACK
    timer task --> the engine's absence timers, on the receipt-corrected clock

The consumer task decodes each batch, drops re-deliveries, runs the rule
engine at once (an alarm never waits for the database, nor for the spool),
and hands the batch to the commit task, which appends it to the local spool
and only then has the receiver acknowledge its messages, in order. While the
spool's unstored backlog is at its limit, the consumer takes no more messages.

:class:`Pipeline` holds this path and its state; :class:`trygg.runner.embedded.EmbeddedRunner`
starts it, gives it what it runs with (the decoder, the spool and its drainer,
the alert service) and stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from trygg import logs
from trygg.alerts.gates import gated
from trygg.ingest.decode import Decoder, parse_topic
from trygg.ingest.dedup import RecentKeys
from trygg.ingest.health import HealthBatch, parse_status
from trygg.ingest.mqtt import Message
from trygg.ingest.receiver import ReceiverProcess
from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.repeats import RepeatLog
from trygg.runner.alerting import AlertService
from trygg.runner.drainer import DrainerProcess
from trygg.runner.shadows import Shadows
from trygg.runner.spool import Position, Spool
from trygg.runner.timer_clock import ReceiptClock
from trygg.settings import Settings
from trygg.store import spooled
from trygg.store.events import StoredEvent

log = logs.get("trygg.runner")


class RuleEngine(Protocol):
    """What the runner needs of the rule engine (trygg.rules.Engine).

    ``late_events`` counts the events ``process`` took as late (the immediate
    rules only); the runner reads it around each call to flag the stored event."""

    late_events: int

    def process(self, event: Event, received: datetime | None = None) -> list[Signal]: ...
    def advance(self, now: datetime) -> list[Signal]: ...
    def next_deadline(self) -> datetime | None: ...
    def update_registry(self, registry: Registry) -> None: ...


@dataclass
class Stats:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    late: int = 0
    stored: int = 0
    dead_letters: int = 0
    alerts: int = 0
    notified: int = 0
    spool_bytes: int = 0


@dataclass(slots=True)
class Handoff:
    """A decoded batch on its way to the spool: its messages are acknowledged after."""

    messages: list[Message]
    line: bytes  # its records as the spool writes them (``Spool.encode``)
    replies: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        """What it adds to the spool, counted against the spool's limit until written."""
        return len(self.line)


def _now() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    """The event path and its state: the inbox, the hand-off to the spool, the
    timers' clock, and the shadow runs fed beside the live engine. The runner
    sets ``_decoder``, ``_spool``, ``_drainer`` and ``_alerting`` as it starts
    them; the consumer and commit loops run once they are set."""

    def __init__(self, settings: Settings, engine: RuleEngine) -> None:
        self.settings = settings
        self.engine: RuleEngine = engine
        self.stats = Stats()
        self.dedup = RecentKeys()
        # The receiver's batches, waiting for the consumer.
        self._inbox: deque[Message] = deque()
        self._inbox_wake = asyncio.Event()
        self._timer_due: datetime | None = None  # when the timer task wakes next
        # Decoded batches waiting for the spool and their PUBACKs (see _commit).
        self._handoff: deque[Handoff] = deque()
        self._handoff_ready = asyncio.Event()
        # Bytes decoded and handed off but not yet in the spool (as the spool will
        # write them, ``Handoff.size``): counted with the spool's own bytes against
        # its limit, or a starved ``_commit`` thread let the consumer run ahead past
        # it (a 1 MB limit, 2.5 MB spooled under load).
        self._handoff_bytes = 0
        self._wake_timers = asyncio.Event()
        self._spool: Spool | None = None
        self._drainer: DrainerProcess | None = None
        # the timers' clock: the wall clock less the receipt delay (trygg.runner.timer_clock)
        self._receipt = ReceiptClock()
        self._decoder: Decoder | None = None
        self._alerting: AlertService | None = None
        # A dead letter is logged in full the first time per device and reason,
        # then as one line a minute with the count (trygg.repeats).
        self._dead_log = RepeatLog(log)
        # The candidates beside the live engine (trygg.runner.shadows), fed the same
        # events and ticks; bound here, so the consumer's call costs what it did.
        self._shadows = Shadows(self._signal, self._timer_clock, self._end_shadow_alerts)
        self._shadow_process = self._shadows.process
        self._shadow_advance = self._shadows.advance

    # --- receive ------------------------------------------------------------
    def _receive(self, messages: list[Message]) -> None:
        """A batch from the receiver process: queue it and wake the consumer."""
        self._inbox.extend(messages)
        self._inbox_wake.set()

    def _take(self, batch: list[Message]) -> None:
        inbox, limit = self._inbox, self.settings.batch_max
        # No batch larger than the spool check's step (a twentieth of its limit), so
        # that one batch cannot carry the spool far past it: counted here in MQTT
        # payload bytes, a fortieth, as a spooled record takes about twice its payload.
        # With the default limit (4 GB) this never binds.
        room = self._spool.max_bytes // 40 if self._spool is not None else None
        size = sum(len(m.payload) for m in batch)  # a second take adds to the first
        while inbox and len(batch) < limit and (room is None or size < room):
            m = inbox.popleft()
            batch.append(m)
            size += len(m.payload)

    async def _next_batch(self) -> list[Message]:
        """What has arrived (at most ``batch_max``), waiting ``batch_wait_ms`` for more."""
        batch: list[Message] = []
        while not self._inbox:
            self._inbox_wake.clear()
            if self._inbox:  # arrived between the check and the clear
                break
            await self._inbox_wake.wait()
        self._take(batch)
        wait = self.settings.batch_wait_ms / 1000
        if wait > 0 and len(batch) < self.settings.batch_max:
            await asyncio.sleep(wait)
            self._take(batch)
        return batch

    async def _consume(self) -> None:
        """Decode, deduplicate and evaluate each batch at once; hand it to ``_commit``.

        The consumer never waits for the spool: a batch's alarms are decided
        while the previous batch is still being written, so an alarm does not
        queue behind another batch's fsync.
        """
        assert self._spool is not None
        # The spool's size is checked (a directory listing) every 0.25 s, and sooner
        # when a twentieth of its limit was appended since: under sustained load the
        # check once waited for a pause that never came (a 2 MB limit, 10.5 MB spooled).
        checked, appended = 0.0, 0
        step = max(1, self._spool.max_bytes // 20)
        while True:
            ahead = self._spool.appended + self._handoff_bytes
            if time.monotonic() - checked >= 0.25 or ahead - appended >= step:
                await self._hold_while_spool_full()
                checked, appended = time.monotonic(), self._spool.appended + self._handoff_bytes
            batch = await self._next_batch()
            received = _now()
            assert self._decoder is not None
            records: list[spooled.Record] = []
            replies: list[tuple[str, bytes]] = []  # SCAIP <mrs>, sent once handed off
            health = HealthBatch()
            batch_lag: timedelta | None = None
            for msg in batch:
                self.stats.received += 1
                where = parse_topic(msg.topic, self.settings.site)
                if where is not None and where[1] == "status":
                    online = parse_status(msg.payload)
                    if online is not None and where[0] in self._decoder.devices:
                        health.status(where[0], online, received)
                        continue
                out = self._decoder.decode(msg.topic, msg.payload, received)
                if out.reply is not None:
                    replies.append(out.reply)
                for d in out.dead:
                    records.append(spooled.dead_letter_record(d))
                    self._dead_log.note(d.device, d.reason)
                for ev in out.events:
                    self.stats.events += 1
                    if self.dedup.seen(ev.key):
                        self.stats.duplicates += 1
                        continue
                    health.seen(ev, received)
                    # Late for its own device: stored flagged, and evaluated by the
                    # immediate rules only (an alarm is never dropped for being late).
                    # The flag is what the engine did, not a guess made before it.
                    late0 = self.engine.late_events
                    sigs = self.engine.process(ev, received)
                    late = self.engine.late_events != late0
                    if late:
                        self.stats.late += 1
                    records.append(spooled.event_record(StoredEvent(ev, received, late)))
                    lag = received - ev.time
                    if not late and (batch_lag is None or lag < batch_lag):
                        batch_lag = lag
                    for sig in sigs:
                        if self._alerting is not None:  # the latency histograms (/metrics)
                            self._alerting.cause = (ev.id, received)
                        self._signal(sig)
                    self._alert_event(ev)  # after: an alarm's position goes on its alert
                    self._shadow_process(ev, received)
            if self._alerting is not None:
                self._alerting.cause = None  # what the timer task raises has no event
            if health.devices:
                records.append(
                    spooled.health_record(
                        {
                            d: (
                                h.last_seen.isoformat() if h.last_seen else None,
                                h.battery,
                                h.online,
                            )
                            for d, h in health.devices.items()
                        }
                    )
                )
            if batch_lag is not None:
                self._note_lag(batch_lag)
            # Wake the timer task only for a deadline earlier than it will wake anyway.
            due = self.engine.next_deadline()
            if due is not None and (self._timer_due is None or due < self._timer_due):
                self._wake_timers.set()
            # Encoded here, not in the writer: what waits for the writer then counts
            # against the spool's limit in the bytes it will take on disk (counted as
            # the MQTT payloads, about half of that, a starved writer once let a 1 MiB
            # spool reach 1.5 MiB).
            h = Handoff(batch, Spool.encode(records), replies)
            self._handoff.append(h)
            self._handoff_bytes += h.size
            self._handoff_ready.set()
            await asyncio.sleep(0)  # let I/O (webhooks, the console feed) go on between batches

    async def _commit(self, source: ReceiverProcess) -> None:
        """Append handed-off batches to the spool (write + fsync), then acknowledge.

        One append for everything waiting (group commit), in arrival order;
        PUBACKs and SCAIP replies only after the fsync, so at-least-once holds.
        What waits here counts against the spool's limit (``_handoff_bytes``), so the
        consumer stops taking messages at the limit even when this task is starved;
        a broker with no in-flight limit would not bound it otherwise.
        """
        assert self._spool is not None
        while True:
            await _wait_or_timeout(self._handoff_ready, 1.0)
            if not self._handoff:
                continue
            done: list[Handoff] = []
            while self._handoff:
                done.append(self._handoff.popleft())
            await asyncio.to_thread(self._spool.append_encoded, [h.line for h in done])
            self._handoff_bytes -= sum(h.size for h in done)
            for h in done:
                for topic, reply in h.replies:
                    source.publish(topic, reply, qos=1)
                for msg in h.messages:
                    source.ack(msg)
            self._stored_soon()

    async def _timers(self) -> None:
        while True:
            # Deadlines are compared with the timer clock, not the wall clock: while
            # a backlog holds the timer clock back, a deadline that is past on the
            # wall clock is not yet due, and waiting on the wall clock would spin.
            clock = self._timer_clock()
            deadline = self.engine.next_deadline()
            wait = 1.0
            if deadline is not None:
                wait = max(0.0, min(wait, (deadline - clock).total_seconds()))
            self._timer_due = clock + timedelta(seconds=wait)
            await _wait_or_timeout(self._wake_timers, wait)
            for sig in self.engine.advance(self._timer_clock()):
                self._signal(sig)
            self._shadow_advance()

    def _timer_clock(self) -> datetime:
        """How far absence timers may run: the wall clock, unless catching up
        (the receipt-delay correction, ``trygg.runner.timer_clock``)."""
        return self._receipt.clock(_now(), time.monotonic())

    def _note_lag(self, lag: timedelta) -> None:
        """Record a batch's smallest delay (receipt time - event time)."""
        self._receipt.note(lag, time.monotonic())

    # --- the spool's backlog (the drainer process stores it) -------------------
    def pending_bytes(self) -> int:
        """The spool's unstored backlog: from where the drainer has stored to, or,
        before it could tell (no database since start), the whole spool."""
        if self._spool is None:
            return 0
        since = self._drainer.position if self._drainer is not None else None
        if since is None:
            segs = self._spool.segments()
            since = Position(segs[0] if segs else 0, 0)
        pending = self._spool.pending_bytes(since)
        self.stats.spool_bytes = pending
        return pending

    async def _hold_while_spool_full(self) -> None:
        """While the spool is at its limit, take no more messages: the broker keeps
        them (it sends no more than its in-flight limit unacknowledged)."""
        assert self._spool is not None
        if self.pending_bytes() + self._handoff_bytes < self._spool.max_bytes:
            return
        log.warning(
            "spool full: holding messages at the broker until the database catches up",
            pending_bytes=self.stats.spool_bytes,
            limit_bytes=self._spool.max_bytes,
        )
        began = time.monotonic()
        while self.pending_bytes() + self._handoff_bytes >= self._spool.max_bytes:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        log.info(
            "spool below its limit again: taking messages",
            held_s=round(time.monotonic() - began, 1),
            pending_bytes=self.stats.spool_bytes,
        )

    def _stored(self, stored: int, dead: int) -> None:
        """The drainer stored a run: statistics and the spool's fill level."""
        self.stats.stored += stored
        self.stats.dead_letters += dead
        self.pending_bytes()

    def _stored_soon(self) -> None:
        """Something was appended to the spool: the drainer should look."""
        if self._drainer is not None:
            self._drainer.wake()

    # --- alerts -------------------------------------------------------------
    def _end_shadow_alerts(self, why: str) -> None:
        if self._alerting is not None:
            n = self._alerting.end_shadow_run(why)
            if n:
                log.info("open shadow alerts cancelled", count=n, why=why)

    def _alert_event(self, ev: Event) -> None:
        if self._alerting is not None and gated(ev):
            self._alerting.on_event(ev)

    def _signal(self, sig: Signal) -> None:
        assert self._alerting is not None
        self._alerting.on_signal(sig)


async def _wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass, then clear it.

    Cheaper than ``asyncio.wait_for(event.wait(), …)``, which makes a task
    per call; this loop runs once per timer tick or wake-up.
    """
    if seconds > 0 and not event.is_set():
        handle = asyncio.get_running_loop().call_later(seconds, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()
    event.clear()
