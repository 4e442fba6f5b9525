"""The alert service: the pure alert core driven by the runner's clock, with I/O around it.

    signal / alarm.reset --> Gatekeeper --> Decision --> spool (records + snapshot)
                                               \\--> Escalator: due steps --> channels
    timer task: release held/silenced alerts, escalate, re-notify (same clock)
    API: staff actions and silences, in-process on the same asyncio thread

- **One writer.** Everything that changes an alert runs on the runner's event
  loop without awaiting in between, so two staff pressing *take* at once are
  serialised: the first is applied, the second gets the lifecycle's refusal
  ("alert is taken by nurse-7").
- **Alarms do not wait for the database.** Decisions are persisted through
  the runner's durable spool (``spooled.alert_change_record`` and friends),
  which one writer task appends in order; the drainer applies them to
  PostgreSQL exactly once, and every write is idempotent. Notifications are
  sent at once, in parallel with the spool append.
- **Memory before the database.** An alert closed here stays known to the
  service (``get``, ``load``, ``act``, ``live_alerts``) until the database
  holds its closing records: the gates forget it at once, and reading it back
  from PostgreSQL before the drainer has stored it would show it still open,
  and let staff act on it (a note "on" an alert already resolved, adopted as
  open again). ``stored(token)`` says whether everything up to an append's
  token (what ``spool_append`` returned) is stored; without it an append is
  taken as stored.
- **Restarts.** On start the service rebuilds the gatekeeper from the
  database (open alerts, alerts closed within the gates' lookback, silences
  not yet ended); escalation timers come back with it, since the escalator
  derives them from the records. Outbox notifications that no delivery
  reached are sent again, with the same idempotency key.
- **Channels and the outbox** (``trygg.runner.outbox``): each notification is
  delivered in its own task, retried until it is delivered, the alert is
  closed, or the channel's give-up time passes.
- **Shadow alerts** (``Signal.shadow``: a candidate catalogue in shadow
  mode, docs/rules.md) go through a gatekeeper of their own, are stored with
  ``shadow = true`` and are never routed, never on the console, never acted
  on. When a routed alert closes, the open shadow alert of the same rule,
  resident and device is cancelled with it, so that the candidate's later
  fires raise new alerts as the active catalogue's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from trygg import logs
from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, Record
from trygg.alerts.contacts import Channel
from trygg.alerts.decisions import Decision
from trygg.alerts.directory import Directory
from trygg.alerts.escalation import EscalationStep, Escalator, Notification
from trygg.alerts.gates import Gatekeeper, gated
from trygg.alerts.routing_config import RoutingConfig
from trygg.alerts.service import Alerts
from trygg.alerts.silences import Silence
from trygg.api.metrics import AlertLatencies
from trygg.model import Event, Signal
from trygg.notify.base import Channel as ChannelImpl
from trygg.notify.console import ConsoleFeed
from trygg.notify.retry import ChannelHealth, GiveUp, RetryPolicy
from trygg.registry import Registry
from trygg.runner.outbox import Outbox
from trygg.runner.staff_actions import StaffActions
from trygg.store import alerts as alert_store
from trygg.store import spooled

log = logs.get("trygg.alerts")

Clock = Callable[[], datetime]
DbCall = Callable[..., Awaitable[Any]]
_PENDING = object()  # not yet appended to the spool


def _now() -> datetime:
    return datetime.now(UTC)


class AlertService(Outbox, StaffActions):
    """The embedded runner's alert service (see the module docstring); its staff
    side is :class:`trygg.alerts.service.Alerts`, shared with the distributed one.
    Its parts: notification delivery (:class:`trygg.runner.outbox.Outbox`) and
    what staff read and do (:class:`trygg.runner.staff_actions.StaffActions`)."""

    latency: AlertLatencies  # all its histograms; staff actions are observed in AlertDesk

    def __init__(
        self,
        routing: RoutingConfig,
        *,
        spool_append: Callable[[list[spooled.Record]], Awaitable[Any]],
        db: DbCall,
        channels: dict[Channel, ChannelImpl] | None = None,
        feed: ConsoleFeed | None = None,
        clock: Clock = _now,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        on_persisted: Callable[[], None] = lambda: None,
        registry: Callable[[], Registry] | None = None,
        console_url: str | None = None,
        db_nowait: DbCall | None = None,
        stored: Callable[[Any], bool] | None = None,
        retry: RetryPolicy | None = None,
        give_up: GiveUp | None = None,
        health: ChannelHealth | None = None,
    ) -> None:
        self.routing = routing
        self.escalator = Escalator(routing)
        self.channels: dict[Channel, ChannelImpl] = channels or {}
        self.feed = feed or ConsoleFeed()
        self.clock = clock
        self._new_id = new_id
        self._spool_append = spool_append
        self._db = db
        self._db_nowait = db_nowait or db  # for API reads: fail fast rather than wait
        self._on_persisted = on_persisted
        self._registry_fn = registry
        self._registry_seen: Registry | None = None
        self.console_url = console_url
        self.gk = Gatekeeper(routing.gates, new_id=new_id)
        self.shadow_gk = Gatekeeper(routing.gates, new_id=new_id)
        self._out: list[spooled.Record] = []
        self._stored = stored or (lambda token: True)
        # Alerts closed here whose closing records the database may not hold yet:
        # id -> (alert, token of the spool append that carried them, or _PENDING).
        # The gates forget a closed alert at once; until it is stored, this is
        # the only place that knows it is closed.
        self._unstored: dict[str, tuple[Alert, Any]] = {}
        self._closing: list[Alert] = []  # closed since the last append
        self._out_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self.started = False
        self._init_outbox(retry, give_up, health)  # retries, give-up times, channel health
        # metrics
        self.alerts_by: Counter[tuple[str, str, str]] = Counter()  # (rule, severity, kind)
        # latency histograms (docs/api.md); ``cause``: the event being evaluated
        # and its receipt time, set by the runner before it passes on that
        # event's signals (None: the timer task's)
        self.latency = AlertLatencies(ch.value for ch in self.channels)
        self.cause: tuple[str, datetime] | None = None

    # ------------------------------------------------------------- life

    async def start(self, registry: Registry | None = None) -> None:
        """Rebuild the gates from the database, then run the writer and timers."""
        now = self.clock()
        directory = self._directory(registry)
        rows = await self._db(
            alert_store.load_records_for_rebuild, now - self.routing.gates.lookback
        )
        alerts: list[Alert] = []
        for recs in rows:
            try:
                alerts.append(Alert.from_records(Record.from_dict(r) for r in recs))
            except (ValueError, KeyError) as exc:
                log.warning("alert not rebuilt", alert=recs[0]["alert_id"], error=str(exc))
        silences = [
            Silence.model_validate(s) for s in await self._db(alert_store.load_silences, since=now)
        ]
        self.gk = Gatekeeper.rebuild(
            self.routing.gates, alerts, silences, new_id=self._new_id, directory=directory
        )
        shadow_alerts: list[Alert] = []
        for recs in await self._db(
            alert_store.load_records_for_rebuild,
            now - self.routing.gates.lookback,
            shadow=True,
        ):
            with contextlib.suppress(ValueError, KeyError):
                shadow_alerts.append(Alert.from_records(Record.from_dict(r) for r in recs))
        self.shadow_gk = Gatekeeper.rebuild(
            self.routing.gates, shadow_alerts, silences, new_id=self._new_id, directory=directory
        )
        pending = await self._db(alert_store.pending_notifications, now - timedelta(hours=1))
        self._writer = asyncio.create_task(self._write(), name="alerts-writer")
        self._timer = asyncio.create_task(self._timers(), name="alerts-timers")
        self.started = True
        log.info(
            "alert service started",
            open_alerts=len(self.gk.open_alerts()),
            silences=len(silences),
            resend=len(pending),
        )
        for row in pending:
            a = self.gk.get(row["alert_id"])
            if a is None or not a.is_open or a.state.is_acknowledged:
                continue
            self._send(a, Notification.from_row(row), row["address"])

    async def stop(self, grace: float = 2.0) -> None:
        """Stop the timers, finish deliveries in flight (briefly), flush the writer.
        Notifications still being retried stop now; the next start sends them again."""
        self._stopping.set()
        for ev in self._wakers.values():
            ev.set()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for t in list(self._tasks):
            t.cancel()
        if self._writer is not None:
            await self._flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for ch in self.channels.values():
            with contextlib.suppress(Exception):
                await ch.aclose()

    def _directory(self, registry: Registry | None) -> Directory:
        if registry is None and self._registry_fn is not None:
            registry = self._registry_fn()
        self._registry_seen = registry
        if registry is None:
            return Directory()
        return Directory.from_registry(registry)

    def _refresh_directory(self) -> None:
        if self._registry_fn is not None:
            reg = self._registry_fn()
            if reg is not self._registry_seen:
                self.gk.directory = self._directory(reg)
                self.shadow_gk.directory = self.gk.directory

    # ------------------------------------------------------------- persistence

    def _emit(self, *records: spooled.Record) -> None:
        self._out.extend(records)
        self._out_ready.set()

    async def _write(self) -> None:
        """The one spool writer: appends in order, in batches."""
        while True:
            await self._out_ready.wait()
            await self._flush()

    async def _flush(self) -> None:
        self._out_ready.clear()
        if not self._out:
            return
        batch, self._out = self._out, []
        closing, self._closing = self._closing, []
        token = await self._spool_append(batch)
        for a in closing:
            held = self._unstored.get(a.id)
            if held is not None and held[0] is a:
                self._unstored[a.id] = (a, token)
        self._on_persisted()

    def _forget_stored(self) -> None:
        """Drop the closed alerts the database now holds."""
        for aid, (_, token) in list(self._unstored.items()):
            if token is not _PENDING and self._stored(token):
                del self._unstored[aid]

    def _persist(self, alert: Alert, new: Iterable[Record], *, shadow: bool = False) -> None:
        snap = alert.to_dict()
        snap["shadow"] = shadow
        self._emit(spooled.alert_change_record(snap, [r.to_dict() for r in new]))
        if not shadow:
            self.feed.publish({"type": "alert", "alert": snap}, alert.team)
            if not alert.is_open:
                if (waker := self._wakers.pop(alert.id, None)) is not None:
                    waker.set()  # its notifications still being retried stop now
                self._unstored[alert.id] = (alert, _PENDING)
                self._closing.append(alert)
                self._close_shadow_twin(alert)

    def end_shadow_run(self, why: str) -> int:
        """Cancel every open shadow alert (the shadow run was promoted or stopped)."""
        now = self.clock()
        n = 0
        for a in self.shadow_gk.open_alerts():
            b = lc.cancel(a, now, "trygg-shadow", CancelReason.OTHER, note=why)
            self.shadow_gk.update(b)
            self._persist(b, b.records[a.version :], shadow=True)
            n += 1
        return n

    def _close_shadow_twin(self, alert: Alert) -> None:
        """Cancel the open shadow alert of the closed alert's rule, resident and
        device (raised before it closed), so both catalogues start afresh."""
        twin = self.shadow_gk.open_for(alert.resident, alert.rule, alert.device)
        if twin is None or twin.raised_at > (alert.closed_at or alert.last_at):
            return
        now = self.clock()
        b = lc.cancel(
            twin,
            now,
            "trygg-shadow",
            CancelReason.OTHER,
            note=f"closed with alert {alert.id} of the active catalogue",
        )
        self.shadow_gk.update(b)
        self._persist(b, b.records[twin.version :], shadow=True)

    # ------------------------------------------------------------- signals

    def on_signal(self, sig: Signal) -> None:
        """A signal from the rule engine (called on the event loop, returns at once)."""
        self._refresh_directory()
        now = self.clock()
        if getattr(sig, "shadow", False):
            d = self.shadow_gk.on_signal(sig, now)
            if d.alert is not None:
                self._persist(d.alert, d.records, shadow=True)
                self.alerts_by[(sig.rule, sig.severity.value, f"shadow-{d.kind.value}")] += 1
            return
        d = self.gk.on_signal(sig, now)
        self._decided(d, now)

    def on_event(self, event: Event) -> None:
        """A device event; only those the gates act on matter (``gates.gated``)."""
        if not gated(event):
            return
        self._refresh_directory()
        now = self.clock()
        for d in self.gk.on_event(event, now):
            self._decided(d, now)

    def _decided(self, d: Decision, now: datetime) -> None:
        if d.alert is None:
            return
        a = d.alert
        self.alerts_by[(a.rule, a.severity.value, d.kind.value)] += 1
        if d.previous_version is None:  # a new alert
            self._observe_raise(a, now)
        self._persist(a, d.records)
        log.info(
            f"alert {d.kind.value}",
            alert=a.id,
            rule=a.rule,
            resident=a.resident,
            severity=a.severity.value,
            reason=d.reason or None,
        )
        if d.route:
            for step in self.escalator.steps_due(a, now):
                self._step(step, now)
        self._wake.set()

    def _observe_raise(self, a: Alert, now: datetime) -> None:
        self.latency.observe_raise(a, now, self.cause)

    # ------------------------------------------------------------- escalation

    def tick(self, now: datetime | None = None) -> None:
        """Release held/silenced alerts and do every due escalation step."""
        now = now or self.clock()
        self._forget_stored()
        for d in self.gk.release_due(now):
            self._decided(d, now)
        for step in self.escalator.due(self.gk.open_alerts(), now):
            self._step(step, now)

    def next_deadline(self, now: datetime) -> datetime | None:
        times = [
            t
            for t in (
                self.gk.next_deadline(now),
                self.escalator.next_deadline(self.gk.open_alerts(), now),
            )
            if t is not None
        ]
        return min(times) if times else None

    async def _timers(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug here must not stop escalation for everyone else
                log.exception("alert timers failed")
            now = self.clock()
            nd = self.next_deadline(now)
            wait = 1.0 if nd is None else min(1.0, max(0.005, (nd - now).total_seconds()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # unlike wait_for, never loses a cancel
                    await self._wake.wait()

    def _step(self, step: EscalationStep, now: datetime) -> None:
        a = self.gk.get(step.alert_id)
        if a is None:
            return
        b = step.apply(a, now)
        self.gk.update(b)
        self._persist(b, b.records[a.version :])
        rows = [n.to_row(n.address.replace("{team}", a.team)) for n in step.notifications]
        if rows:
            self._emit(spooled.notifications_record(rows))
        if step.unrouted:
            log.error(
                "alert step has no address: nobody was told",
                alert=a.id,
                action=step.action,
                level=step.level,
            )
        else:
            log.info(
                f"alert {step.action}",
                alert=a.id,
                level=step.level,
                n=step.n,
                channels=len(step.notifications),
            )
        for n in step.notifications:
            self._send(b, n, n.address.replace("{team}", a.team))


_ALERTS: type[Alerts] = AlertService  # mypy: the embedded service serves the API
