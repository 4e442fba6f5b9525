"""The embedded runner: the whole pipeline in one asyncio process.

    paho thread --Message--> queue --> decode --> dedup --> rules --> alerts --> notify
                                           \\--> spool (fsync) --> PUBACK
                                                  spool --> drainer --> store (exactly once)

The paho network thread only enqueues. The consumer task drains the queue in
batches: it decodes, drops re-deliveries, runs the rule engine at once (an
alarm never waits for the database), appends the batch to the local spool,
and only then acknowledges the batch's messages, in order. The drainer
writes the spool to PostgreSQL whenever PostgreSQL is there; while it is not,
the spool grows (bounded) and alerting goes on. A timer task drives the
engine's absence timers from the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from trygg import logs
from trygg.ingest.decode import Decoder
from trygg.ingest.dedup import RecentKeys
from trygg.ingest.mqtt import Message, MqttSource
from trygg.model import Event, EventType, Severity, Signal, SignalAction
from trygg.notify.webhook import Webhook
from trygg.registry import Registry
from trygg.runner.spool import Position, Spool
from trygg.settings import Settings
from trygg.store import spooled
from trygg.store.events import StoredEvent
from trygg.store.registry import load_registry

log = logs.get("trygg.runner")


class RuleEngine(Protocol):
    """What the runner needs of the rule engine (trygg.rules)."""

    def process(self, event: Event) -> list[Signal]: ...
    def advance(self, now: datetime) -> list[Signal]: ...
    def next_deadline(self) -> datetime | None: ...
    def update_registry(self, registry: Registry) -> None: ...


class FallOnly:
    """The walking skeleton's one rule: ``fall.detected`` raises 4.1 red."""

    version = "skeleton"

    def process(self, event: Event) -> list[Signal]:
        if event.type is EventType.FALL_DETECTED:
            return [
                Signal(
                    SignalAction.FIRE,
                    "fall",
                    event.resident,
                    event.time,
                    "4.1",
                    Severity.RED,
                    self.version,
                    (event.id,),
                    title="Fall detected",
                )
            ]
        return []

    def advance(self, now: datetime) -> list[Signal]:
        return []

    def next_deadline(self) -> datetime | None:
        return None

    def update_registry(self, registry: Registry) -> None:
        pass


@dataclass
class Stats:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    stored: int = 0
    dead_letters: int = 0
    alerts: int = 0
    notified: int = 0
    spool_bytes: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


class EmbeddedRunner:
    def __init__(self, settings: Settings, engine: RuleEngine | None = None) -> None:
        self.settings = settings
        self.engine: RuleEngine = engine or FallOnly()
        self.stats = Stats()
        self.dedup = RecentKeys()
        self.spool_name = settings.mqtt_client_id
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._wake_timers = asyncio.Event()
        self._wake_drain = asyncio.Event()
        self.ready = asyncio.Event()
        self._pool: ConnectionPool | None = None
        self._spool: Spool | None = None
        self._stored_to: Position | None = None
        self._registry: Registry = Registry()
        self._decoder: Decoder | None = None
        self._teams: dict[str, str] = {}
        self._webhook: Webhook | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- database -----------------------------------------------------------
    def _db(self, fn: Any, *args: Any) -> Any:
        assert self._pool is not None
        with self._pool.connection() as conn:
            return fn(conn, *args)

    async def _db_retry(self, what: str, fn: Any, *args: Any) -> Any:
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(self._db, fn, *args)
            except (
                psycopg.OperationalError,
                psycopg.errors.AdminShutdown,
                psycopg.errors.QueryCanceled,
            ) as exc:
                log.warning(
                    "database unavailable, retrying",
                    what=what,
                    error=str(exc).strip()[:200],
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _set_registry(self, registry: Registry) -> None:
        self._registry = registry
        self._decoder = Decoder(self.settings.site, registry.device_by_id())
        self._teams = {r.id: r.team for r in registry.residents}
        self.engine.update_registry(registry)

    # --- life ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self._pool = ConnectionPool(
            s.database_url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
            timeout=10,
        )
        self._pool.open(wait=False)
        self._spool = Spool(s.spool_dir / self.spool_name, max_bytes=s.spool_max_mb << 20)
        # The registry is the one thing we cannot start without.
        self._set_registry(await self._db_retry("load registry", load_registry))
        log.info(
            "registry loaded",
            residents=len(self._registry.residents),
            devices=len(self._registry.devices),
        )
        loop = asyncio.get_running_loop()
        self._webhook = Webhook(s.webhook_url, s.webhook_secret) if s.webhook_url else None
        source = MqttSource(
            s.mqtt_url,
            s.mqtt_client_id,
            [f"trygg/{s.site}/devices/+/events"],
            lambda m: loop.call_soon_threadsafe(self._queue.put_nowait, m),
            session_expiry=s.mqtt_session_expiry,
        )
        source.start()
        tasks = [
            asyncio.create_task(self._consume(source), name="consume"),
            asyncio.create_task(self._drain(), name="drain"),
            asyncio.create_task(self._timers(), name="timers"),
            asyncio.create_task(self._reload_registry(), name="registry"),
        ]
        await asyncio.to_thread(source.connected.wait, 30)
        self.ready.set()
        await stop.wait()
        source.stop()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain_once(), 5)  # best effort; the spool keeps the rest
        if self._webhook:
            await self._webhook.aclose()
        self._spool.close()
        self._pool.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- receive ------------------------------------------------------------
    async def _next_batch(self) -> list[Message]:
        batch = [await self._queue.get()]
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

    async def _consume(self, source: MqttSource) -> None:
        assert self._spool is not None
        while True:
            while self._stored_to is not None and self._spool.full(self._stored_to):
                log.warning(
                    "spool full: holding messages at the broker until the database catches up"
                )
                await asyncio.sleep(1)
            batch = await self._next_batch()
            received = _now()
            assert self._decoder is not None
            records: list[spooled.Record] = []
            for msg in batch:
                self.stats.received += 1
                out = self._decoder.decode(msg.topic, msg.payload, received)
                for d in out.dead:
                    records.append(spooled.dead_letter_record(d))
                    log.info("dead letter", device=d.device, reason=d.reason)
                for ev in out.events:
                    self.stats.events += 1
                    if self.dedup.seen(ev.key):
                        self.stats.duplicates += 1
                        continue
                    records.append(spooled.event_record(StoredEvent(ev, received)))
                    for sig in self.engine.process(ev):
                        self._signal(sig)
            self._wake_timers.set()
            await asyncio.to_thread(self._spool.append, records)
            for msg in batch:
                source.ack(msg)
            self._wake_drain.set()

    async def _timers(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            wait = 1.0
            if deadline is not None:
                wait = max(0.0, min(wait, (deadline - _now()).total_seconds()))
            self._wake_timers.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_timers.wait(), wait)
            for sig in self.engine.advance(_now()):
                self._signal(sig)

    async def _reload_registry(self) -> None:
        """Pick up registry and care-plan changes without a restart."""
        while True:
            await asyncio.sleep(10)
            try:
                registry = await asyncio.to_thread(self._db, load_registry)
            except psycopg.Error as exc:
                log.warning("registry reload failed", error=str(exc).strip()[:200])
                continue
            if registry != self._registry:
                self._set_registry(registry)
                log.info(
                    "registry reloaded",
                    residents=len(registry.residents),
                    devices=len(registry.devices),
                )

    # --- store --------------------------------------------------------------
    async def _drain_once(self) -> int:
        assert self._spool is not None
        if self._stored_to is None:
            cp = await self._db_retry("read spool checkpoint", spooled.checkpoint, self.spool_name)
            segs = self._spool.segments()
            self._stored_to = Position(*cp) if cp else Position(segs[0] if segs else 1, 0)
        records, upto = await asyncio.to_thread(self._spool.read, self._stored_to)
        if records:
            stored, dead = await self._db_retry(
                "write spool", spooled.apply, self.spool_name, records, (upto.segment, upto.offset)
            )
            self.stats.stored += stored
            self.stats.dead_letters += dead
        self._stored_to = upto
        self._spool.release(upto)
        self.stats.spool_bytes = self._spool.pending_bytes(upto)
        return len(records)

    async def _drain(self) -> None:
        while True:
            if await self._drain_once() == 0:
                self._wake_drain.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_drain.wait(), 1.0)

    # --- alerts -------------------------------------------------------------
    def _signal(self, sig: Signal) -> None:
        if sig.action is SignalAction.FIRE:
            self._spawn(self._raise(sig))

    async def _raise(self, sig: Signal) -> None:
        assert self._spool is not None
        alert_id = str(uuid.uuid4())
        raised_at = _now()
        team = self._teams.get(sig.resident, "unassigned")
        alert = {
            "id": alert_id,
            "resident": sig.resident,
            "team": team,
            "rule": sig.rule,
            "catalogue_version": sig.catalogue_version,
            "code": sig.code,
            "severity": sig.severity.value,
            "events": list(sig.events),
            "device": sig.device,
            "title": sig.title,
            "raised_at": raised_at.isoformat(),
            "at": sig.at.isoformat(),
            "state": "raised",
        }
        self.stats.alerts += 1
        log.info(
            "alert raised",
            alert=alert_id,
            rule=sig.rule,
            resident=sig.resident,
            severity=sig.severity.value,
        )
        raised = [
            spooled.alert_insert_record(
                id=alert_id,
                resident=sig.resident,
                team=team,
                rule=sig.rule,
                catalogue_version=sig.catalogue_version,
                code=sig.code,
                severity=sig.severity.value,
                events=list(sig.events),
                raised_at=raised_at,
                state="raised",
                device=sig.device,
                title=sig.title,
            ),
            spooled.lifecycle_record(
                alert_id, "raised", raised_at, "trygg", data={"signal_at": sig.at.isoformat()}
            ),
        ]
        recorded = asyncio.create_task(asyncio.to_thread(self._spool.append, raised))
        if self._webhook is not None:
            delivery = await self._webhook.send(alert, idempotency_key=f"{alert_id}:raised")
            await recorded
            if delivery.ok:
                self.stats.notified += 1
                await asyncio.to_thread(
                    self._spool.append,
                    [
                        spooled.lifecycle_record(
                            alert_id,
                            "notified",
                            _now(),
                            "trygg:webhook",
                            state="notified",
                            data={"attempts": delivery.attempts, "status": delivery.status},
                        )
                    ],
                )
            else:
                log.error("alert not delivered", alert=alert_id, error=delivery.error)
        else:
            await recorded
        self._wake_drain.set()


def run_forever(settings: Settings, engine: RuleEngine | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        await EmbeddedRunner(settings, engine).run(stop)

    asyncio.run(main())
