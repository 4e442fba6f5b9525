"""The alert service behind ``trygg api``, the HTTP API and care-staff console
for the distributed runner (served by :mod:`trygg.distributed.api`).

In the embedded runner the API (``trygg.api.app.create_app``) sits on the
in-process ``AlertService``. In the distributed stack the alert state lives in
the Faust workers (``AlertsCore``, keyed by resident), so this module gives
``create_app`` a service with the same surface, built from what the stack
already has (both implement ``trygg.alerts.service.Alerts``, sharing ``AlertDesk``):

- **Reads** come from TimescaleDB, where the workers' sink stores every alert
  change. The open, non-shadow alerts are kept in memory, refreshed by a short
  poll (``POLL_S``); only alerts whose stored version moved are re-read. The
  same poll drives the live feed: every alert it sees change is published on
  the ``ConsoleFeed`` as ``{"type": "alert", "alert": <snapshot>}``, the
  message the embedded service publishes. Polling the database rather than
  consuming the records topic keeps the API a plain database client (no
  consumer group, nothing to rebalance) and shows staff only what is stored,
  which is what every later read returns too.
- **Staff actions** are checked against the stored alert with the pure
  lifecycle (``trygg.alerts.lifecycle.act``), so a refused action gets the
  embedded API's 409 and reason without touching Kafka. An allowed one is
  produced (``acks=all``) as ``codecs.action_record`` to the signals topic,
  keyed by resident, for the alerts agent that owns the resident, which
  applies it in order with everything else that happens to the alert. The API
  then waits (``ACT_TIMEOUT_S``) until the database shows the alert at a newer
  version: with the action's record, it returns the alert (200); without it,
  and with the action now refused on the newer alert, another actor's change
  came first and the API gives that refusal (409, "alert is taken by …"),
  exactly what the embedded service tells the second of two staff. Waiting
  for the stored version keeps the answer honest: a 200 means the action is
  in the alert's records.
- **Silences** are rows of the ``silences`` table, written here at once; the
  workers reload them every few seconds (``Worker.reload_silences``) and use
  them in the gates.
- **The access log** is written straight to the database (retried briefly in
  the background, since ``log_access`` may not block the request).

See docs/distributed.md ("The API and console").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi import HTTPException

from trygg import logs
from trygg.alerts.alert import OPEN_STATES, Alert, Record
from trygg.alerts.escalation import Escalator
from trygg.alerts.service import (
    AccessEntry,
    ActionRequest,
    AlertDesk,
    Alerts,
    alert_from_records,
)
from trygg.alerts.silences import Silence
from trygg.api.context import db_unreachable
from trygg.api.metrics import AlertLatencies, Histogram
from trygg.distributed import codecs
from trygg.notify.console import ConsoleFeed
from trygg.registry import Registry
from trygg.retry import retry_async
from trygg.settings import Settings
from trygg.store import access_log as access_store
from trygg.store import alerts as alert_store

log = logs.get("trygg.api")

POLL_S = 0.5  # how often the open alerts (and the live feed) are refreshed
ACT_TIMEOUT_S = 10.0  # how long an action waits for the worker's records in the database
ACT_POLL_S = 0.1  # how often it looks meanwhile
ACCESS_RETRY_S = 60.0  # how long an access-log write is retried before it is given up

DbCall = Callable[..., Awaitable[Any]]
SyncDbCall = Callable[..., Any]
Send = Callable[[str, bytes, bytes], Awaitable[None]]

_OPEN = sorted(s.value for s in OPEN_STATES)


def _now() -> datetime:
    return datetime.now(UTC)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------- the poll


@dataclass
class Changes:
    """One poll's view of the database: what changed since the versions we hold."""

    versions: dict[str, int] = field(default_factory=dict)  # open alert id -> stored version
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # changed ones
    closed: list[dict[str, Any]] = field(default_factory=list)  # snapshots that left the set
    silences: list[dict[str, Any]] = field(default_factory=list)


def read_changes(
    conn: psycopg.Connection, known: dict[str, int], now: datetime, limit: int = 100_000
) -> Changes:
    """The open alerts' versions, the records of those not at ``known`` versions, the
    final snapshots of alerts no longer open, and the silences not yet over.

    Only changed alerts are re-read, so a quiet poll is one indexed query."""
    out = Changes()
    for snap in alert_store.query_alerts(conn, states=_OPEN, limit=limit):
        if snap.get("shadow"):
            continue  # shadow alerts are never shown (docs/rules.md)
        aid = str(snap["id"])
        out.versions[aid] = int(snap.get("version") or 0)
        if known.get(aid) != out.versions[aid]:
            out.records[aid] = alert_store.alert_records(conn, aid, include_shadow=False)
    for aid in known.keys() - out.versions.keys():
        closed = alert_store.get_snapshot(conn, aid)
        if closed is not None:
            out.closed.append(closed)
    out.silences = alert_store.load_silences(conn, since=now)
    return out


# --------------------------------------------------------------------- the service


class ApiRunner:
    """What ``create_app`` reads from its ``runner``: the registry (teams of residents
    and devices) and a readiness flag. ``_source`` stands for the runner's MQTT link in
    the embedded runner; here it is the Kafka producer the actions go out on."""

    def __init__(self) -> None:
        self._registry = Registry()
        self._source = Link()


class Link:
    """Set while the Kafka producer the staff actions go out on is connected."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()


class StaffLatencies(AlertLatencies):
    """The latency histograms of the steps that happen in the API: notified ->
    acknowledged and acknowledged -> arrived (staff act through it). The raise,
    the notifications and the sink's lag are the workers' (their /metrics)."""

    def all(self) -> tuple[Histogram, ...]:
        return (self.notified_to_acknowledged, self.acknowledged_to_arrived)


class DistributedAlertService(AlertDesk):
    """The alert service that ``trygg.api.app.create_app`` uses (``Alerts``), over the
    database and Kafka instead of an in-process gatekeeper (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: DbCall,
        db_sync: SyncDbCall,
        send: Send,
        runner: ApiRunner,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        from trygg.runner.routing import routing_from

        self.settings = settings
        self.routing = routing_from(settings.routing)
        self.escalator = Escalator(self.routing)
        self.feed = ConsoleFeed()
        self.clock = clock
        self.runner = runner
        self._db = db
        self._db_sync = db_sync
        self._send = send
        self._alerts: dict[str, Alert] = {}
        self._silences: dict[str, Silence] = {}
        self._polled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # metrics (the names the embedded service exports)
        self.alerts_by: Counter[tuple[str, str, str]] = Counter()
        self.deliveries_by: Counter[tuple[str, str]] = Counter()  # delivered by the workers
        self.latency = StaffLatencies()  # staff answering, observed as actions are confirmed
        self.access_failed = 0

    @property
    def started(self) -> bool:
        """Ready to serve: the open alerts are loaded and actions can be sent."""
        return self._polled and self.runner._source.connected.is_set()

    # ------------------------------------------------------------- the poll

    async def poll(self) -> None:
        """Refresh the open alerts and silences; publish every alert that changed."""
        known = {aid: a.version for aid, a in self._alerts.items()}
        ch: Changes = await self._db(read_changes, known, self.clock())
        publish = self._polled  # the first load is the state, not news
        for recs in ch.records.values():
            a = alert_from_records(recs)
            if a is None or not a.is_open:
                continue  # closed between the two reads: the next poll sees it closed
            self._adopt(a, publish=publish)
        for aid in set(self._alerts) - ch.versions.keys():
            del self._alerts[aid]
        for snap in ch.closed:
            if publish:
                self.feed.publish({"type": "alert", "alert": snap}, snap.get("team"))
        self._silences = {s.id: s for s in map(Silence.model_validate, ch.silences)}
        self._polled = True

    def _adopt(self, a: Alert, *, publish: bool = True) -> None:
        """Hold ``a`` if it is newer than what we hold; tell the console if it changed."""
        cur = self._alerts.get(a.id)
        if cur is not None and cur.version >= a.version:
            return
        if a.is_open:
            self._alerts[a.id] = a
        else:
            self._alerts.pop(a.id, None)
        if publish:
            snap = a.to_dict()
            snap["shadow"] = False
            self.feed.publish({"type": "alert", "alert": snap}, a.team)

    async def run_poll(self) -> None:
        """Poll until cancelled; a database outage only makes the data older."""
        failing = False
        while True:
            try:
                await self.poll()
                if failing:
                    log.info("database reachable again")
                failing = False
            except (psycopg.Error, OSError) as exc:
                if not failing:
                    log.warning("alert poll failed", error=str(exc).strip()[:200])
                failing = True
            await asyncio.sleep(POLL_S)

    # ------------------------------------------------------------- reads

    def get(self, alert_id: str) -> Alert | None:
        """The open alert as of the last poll (or the last action through this API)."""
        return self._alerts.get(alert_id)

    def open_alerts(self) -> list[Alert]:
        return sorted(self._alerts.values(), key=lambda a: (a.raised_at, a.id))

    def live_alerts(self) -> list[Alert]:
        """As ``AlertService.live_alerts``: here actions are confirmed from the
        database, so memory holds nothing newer than it but the open alerts."""
        return self.open_alerts()

    async def _stored_records(self, alert_id: str) -> list[dict[str, Any]]:
        if not _is_uuid(alert_id):
            return []
        recs: list[dict[str, Any]] = await self._db(
            alert_store.alert_records, alert_id, include_shadow=False
        )
        return recs

    # ------------------------------------------------------------- actions

    async def _acting_on(self, alert_id: str) -> Alert | None:
        return await self._stored_alert(alert_id)

    async def _apply(self, a: Alert, req: ActionRequest) -> Alert:
        """Checked here, applied by the owning alerts agent, confirmed from the
        database. Raises TransitionError or ConflictError like the embedded service,
        and HTTPException 503/504 when Kafka or the worker is away."""
        mine = req.apply(a, self.clock()).records[-1]
        rec = codecs.action_record(
            a.id,
            a.resident,
            req.action,
            req.actor,
            note=req.note,
            at=self.clock().isoformat(),
            **req.options(),
        )
        await self._produce(a.resident, rec)
        b = await self._confirm(a, mine, req)
        self._adopt(b)
        log.info("alert " + req.action, alert=b.id, state=b.state.value)
        return b

    async def _produce(self, resident: str, rec: dict[str, Any]) -> None:
        if not self.runner._source.connected.is_set():
            raise HTTPException(503, "Kafka is not reachable now; the action was not sent")
        try:
            async with asyncio.timeout(ACT_TIMEOUT_S):
                await self._send(
                    self.settings.kafka_signals_topic, codecs.key_of(resident), codecs.dumps(rec)
                )
        except Exception as exc:  # KafkaError, timeout: the action is not sent
            log.warning("action not sent", error=type(exc).__name__)
            raise HTTPException(503, "Kafka did not take the action; try again") from None

    async def _confirm(self, a: Alert, mine: Record, req: ActionRequest) -> Alert:
        """Wait until the stored alert is newer than ``a``: ours if it holds our record,
        the lifecycle's refusal if another change came first and now refuses ours."""
        deadline = time.monotonic() + ACT_TIMEOUT_S
        while True:
            cur = await self._stored_alert(a.id)
            if cur is not None and cur.version > a.version:
                if _has(cur.records[a.version :], mine):
                    return cur
                req.apply(cur, self.clock())  # raises: another change won
            if time.monotonic() >= deadline:
                raise HTTPException(
                    504,
                    f"the alerts worker has not confirmed the {req.action} within "
                    f"{ACT_TIMEOUT_S:.0f} s; it may still be applied, look at the alert again",
                )
            await asyncio.sleep(ACT_POLL_S)

    # ------------------------------------------------------------- silences

    def _held_silences(self) -> Iterable[Silence]:
        return self._silences.values()

    def add_silence(self, s: Silence) -> Silence:
        """Store a silence; the workers pick it up within ``SILENCE_RELOAD_S``."""
        self._save_silence(s)
        log.info("silence created", silence=s.id, scope=s.scope.value)
        return s

    def end_silence(self, silence_id: str, actor: str) -> Silence:
        """End a silence now (KeyError if unknown); the workers release what it held."""
        s = self._silences[silence_id]
        end = max(min(s.end, self.clock()), s.start + timedelta(microseconds=1))
        ended = s.model_copy(update={"end": end, "ended_by": actor})
        self._save_silence(ended)
        log.info("silence ended", silence=s.id)
        return ended

    def _save_silence(self, s: Silence) -> None:
        """Written before the request returns (create_app calls this synchronously, so
        it blocks the loop for one short statement): staff must know the silence holds."""
        try:
            self._db_sync(alert_store.save_silence, s.model_dump(mode="json"))
        except (psycopg.Error, OSError) as exc:
            raise db_unreachable(exc) from None
        self._silences[s.id] = s

    # ------------------------------------------------------------- access log

    def _write_access(self, entry: AccessEntry) -> None:
        """Write one access-log row in the background (retried for ``ACCESS_RETRY_S``)."""
        task = asyncio.ensure_future(self._store_access(entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store_access(self, entry: AccessEntry) -> None:
        try:
            await retry_async(
                lambda: self._db(access_store.log_access, **asdict(entry)),
                retry_on=(psycopg.Error, OSError),
                give_up_after=ACCESS_RETRY_S,
            )
        except (psycopg.Error, OSError) as exc:
            self.access_failed += 1
            log.error("access log entry lost", action=entry.action, error=type(exc).__name__)

    async def flush(self) -> None:
        """Let background access-log writes finish (on shutdown, for a few seconds)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3.0)


_ALERTS: type[Alerts] = DistributedAlertService  # mypy: it serves the API as the embedded one


def _has(records: Iterable[Record], mine: Record) -> bool:
    """Whether the action's last record (step, actor, note) is among ``records``."""
    return any(
        r.step == mine.step and r.actor == mine.actor and r.note == mine.note for r in records
    )
