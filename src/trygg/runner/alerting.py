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
- **Channels and the outbox.** Each notification is delivered in its own task,
  so a failing channel never holds back the others. The first attempt goes
  out at once; if it fails, the same task retries it (``notify.retry``: one
  policy, exponential backoff with jitter) with the same idempotency key until
  it is delivered, the alert is closed, or the channel's give-up time passes
  (``TRYGG_NOTIFY_GIVE_UP``; red: never). The first failure and the final
  outcome are recorded in ``alert_deliveries``; every attempt counts in the
  channel's health (``health``: /metrics, ``GET /api/health/channels``).
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
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import yaml

from trygg import logs
from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, Record
from trygg.alerts.contacts import Channel
from trygg.alerts.decisions import Decision
from trygg.alerts.directory import Directory
from trygg.alerts.escalation import EscalationStep, Escalator, Notification
from trygg.alerts.gates import Gatekeeper, gated
from trygg.alerts.routing_config import RoutingConfig, load_routing, parse_routing
from trygg.alerts.routing_config import parse_routing_text as _parse_routing_text
from trygg.alerts.service import (
    AccessEntry,
    ActionRequest,
    AlertDesk,
    Alerts,
)
from trygg.alerts.silences import Silence
from trygg.api.metrics import AlertLatencies
from trygg.model import Event, Signal
from trygg.notify.base import Channel as ChannelImpl
from trygg.notify.base import Delivery, deliver, health_name, payload
from trygg.notify.console import ConsoleFeed
from trygg.notify.retry import ChannelHealth, GiveUp, RetryPolicy, retry_delivery
from trygg.registry import Registry
from trygg.store import alerts as alert_store
from trygg.store import spooled

log = logs.get("trygg.alerts")

Clock = Callable[[], datetime]
DbCall = Callable[..., Awaitable[Any]]
_PENDING = object()  # not yet appended to the spool
_CLOSED = "the alert was closed"
_STOPPED = "trygg stopped"


def _now() -> datetime:
    return datetime.now(UTC)


def default_routing(*, webhook: bool = True) -> RoutingConfig:
    """The built-in routing; ``webhook=False``: without the webhook named
    ``default`` (none is configured), so every team gets its MQTT topic and the
    console only."""
    text = resources.files("trygg.alerts").joinpath("default_routing.yaml").read_text("utf-8")
    source = "built-in routing (trygg/alerts/default_routing.yaml)"
    if webhook:
        return _parse_routing_text(text, source)
    data = yaml.safe_load(text)
    data.pop("recipients", None)
    for team in data["teams"].values():
        team["on_duty"] = {}
    return parse_routing(data, source)


def routing_from(path: Any, webhooks: Iterable[str] | None = None) -> RoutingConfig:
    """The routing file at ``path``, or the built-in default when None.

    ``webhooks``: the names of the configured webhooks, when known. Without
    one named ``default``, the built-in routing has no webhook (and says so,
    once); a routing file that names a webhook not configured is warned about
    here, at start, not first at an alarm."""
    if path:
        routing = load_routing(path)
        if webhooks is not None:
            missing = sorted(
                {c.address for c in _contacts(routing) if c.channel is Channel.WEBHOOK}
                - set(webhooks)
            )
            for name in missing:
                log.error(
                    "the routing file names a webhook that is not configured: its "
                    "notifications will fail (TRYGG_WEBHOOKS, TRYGG_WEBHOOK_URL)",
                    webhook=name,
                    routing=str(path),
                )
        return routing
    if webhooks is not None and "default" not in set(webhooks):
        log.warning(
            "no webhook configured (TRYGG_WEBHOOK_URL): the built-in routing sends alerts "
            "to each team's MQTT topic and the console only"
        )
        return default_routing(webhook=False)
    return default_routing()


def _contacts(routing: RoutingConfig) -> Iterable[Any]:
    for r in routing.recipients.values():
        yield from r.contacts
    for t in routing.teams.values():
        yield from t.contacts


class AlertService(AlertDesk):
    """The embedded runner's alert service (see the module docstring); its staff
    side is :class:`trygg.alerts.service.Alerts`, shared with the distributed one."""

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
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self.started = False
        # the outbox: retries, give-up times, channel health
        self.retry = retry or RetryPolicy()
        self.give_up = give_up or GiveUp()
        self.health = health or ChannelHealth()
        for ch, impl in self.channels.items():
            names = getattr(impl, "names", None)
            if ch is Channel.WEBHOOK:
                for name in names or ():
                    self.health.register(health_name(ch, name))
            elif ch is not Channel.APPRISE:  # apprise: one name per service, when used
                self.health.register(ch.value)
        self._retrying: set[str] = set()  # keys of notifications being retried
        self._stopping = asyncio.Event()
        # alert id -> woken when the alert closes (or trygg stops): its retries end now
        self._wakers: dict[str, asyncio.Event] = {}
        # metrics
        self.alerts_by: Counter[tuple[str, str, str]] = Counter()  # (rule, severity, kind)
        self.deliveries_by: Counter[tuple[str, str]] = Counter()  # (channel, ok|failed)
        self.last_delivery_ms: dict[str, float] = {}
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

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    def _send(self, alert: Alert, n: Notification, address: str) -> None:
        p = payload(alert.to_dict(), n, address)
        if self.console_url:
            p["console_url"] = self.console_url
        self._spawn(self._deliver(n, address, p))

    @property
    def retrying(self) -> int:
        """Notifications not yet delivered that are being retried."""
        return len(self._retrying)

    async def _deliver(self, n: Notification, address: str, p: dict[str, Any]) -> None:
        """Send at once; if that fails, retry off the hot path (same task, same key)."""
        if n.key in self._retrying:
            return  # already being retried (sent again on start while in flight)
        name = health_name(n.channel, address)
        d, ms = await deliver(self.channels, n, address, p)
        self.health.attempt(name, d)
        self.last_delivery_ms[n.channel.value] = ms
        if not d.ok and d.retry and self._wanted(n) and not self._stopping.is_set():
            self._record(n, address, d, ms)  # seen at once: the first failure
            log.warning(
                "notification not delivered, retrying",
                alert=n.alert_id,
                channel=n.channel.value,
                address=address,
                error=d.error,
            )
            self._retrying.add(n.key)
            try:
                d, ms = await self._retry(n, address, p, name, d)
            finally:
                self._retrying.discard(n.key)
        self._final(n, address, d, ms)

    def _wanted(self, n: Notification) -> bool:
        """Whether the alert still needs this notification: it is open."""
        a = self.gk.get(n.alert_id)
        return a is not None and a.is_open

    async def _retry(
        self, n: Notification, address: str, p: dict[str, Any], name: str, first: Delivery
    ) -> tuple[Delivery, float]:
        a = self.gk.get(n.alert_id)
        severity = a.severity.value if a is not None else str(p.get("severity", ""))
        limit = self.give_up.after(n.channel.value, severity)
        t0 = time.monotonic()
        attempts = first.attempts
        why: list[str] = []
        last_ms = [0.0]

        last = first

        async def attempt() -> Delivery:
            nonlocal attempts, last
            if self._stopping.is_set():  # woken by the stop: no attempt during shutdown
                why.append(_STOPPED)
                return Delivery(False, attempts, last.status, last.error, False)
            if not self._wanted(n):
                why.append(_CLOSED)
                return Delivery(False, attempts, None, f"not delivered: {_CLOSED}", False)
            d, ms = await deliver(self.channels, n, address, p)
            attempts += max(1, d.attempts)
            last_ms[0] = ms
            self.health.attempt(name, d)
            last = d
            if d.ok:
                log.info(
                    "notification delivered after retries",
                    alert=n.alert_id,
                    channel=n.channel.value,
                    address=address,
                    attempts=attempts,
                )
            return Delivery(d.ok, attempts, d.status, d.error, d.retry)

        def stop(_: Any) -> bool:
            if self._stopping.is_set():
                why.append(_STOPPED)
                return True
            if limit is not None and time.monotonic() - t0 >= limit.total_seconds():
                why.append(f"gave up after {limit}")
                return True
            return False

        waker = self._wakers.setdefault(n.alert_id, asyncio.Event())

        async def sleep(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await waker.wait()

        d = await retry_delivery(
            attempt, self.retry, stop=stop, sleep=sleep, already=max(1, first.attempts)
        )
        if not d.ok and why and d.error and why[-1] not in d.error:
            d = Delivery(False, d.attempts, d.status, f"{d.error} ({why[-1]})"[:300], False)
        return d, last_ms[0]

    def _final(self, n: Notification, address: str, d: Delivery, ms: float) -> None:
        closed = not d.ok and (d.error or "").endswith(_CLOSED)
        outcome = "ok" if d.ok else "cancelled" if closed else "failed"
        self.deliveries_by[(n.channel.value, outcome)] += 1
        if d.ok and n.action == "notify":  # the first level: raised -> notified
            seconds = (self.clock() - n.due_at).total_seconds()
            self.latency.raised_to_notified.observe(seconds, n.channel.value)
        if closed:
            log.info("notification dropped: the alert was closed", alert=n.alert_id)
        elif not d.ok and (d.error or "").endswith(f"({_STOPPED})"):
            log.warning(
                "notification not delivered before trygg stopped: sent again at the next start",
                alert=n.alert_id,
                channel=n.channel.value,
                address=address,
            )
        elif not d.ok:
            log.error(
                "notification not delivered",
                alert=n.alert_id,
                channel=n.channel.value,
                address=address,
                attempts=d.attempts,
                error=d.error,
            )
        self._record(n, address, d, ms)

    def _record(self, n: Notification, address: str, d: Delivery, ms: float) -> None:
        self._emit(
            spooled.delivery_record(
                key=n.key,
                alert_id=n.alert_id,
                channel=n.channel.value,
                address=address,
                at=self.clock(),
                attempts=d.attempts,
                ok=d.ok,
                status=d.status,
                error=d.error,
                latency_ms=round(ms, 3),
            )
        )

    # ------------------------------------------------------------- staff actions

    def get(self, alert_id: str) -> Alert | None:
        """The live alert: an open one, or one closed here that the database may
        not hold yet (newer than what a database read would give)."""
        a = self.gk.get(alert_id)
        if a is None:
            held = self._unstored.get(alert_id)
            if held is not None:
                a = held[0]
        return a

    def open_alerts(self) -> list[Alert]:
        return self.gk.open_alerts()

    def live_alerts(self) -> list[Alert]:
        """The open alerts and those closed here but perhaps not yet stored: where
        a database row of one of them differs, this is the newer."""
        self._forget_stored()
        out = self.gk.open_alerts()
        out.extend(a for a, _ in self._unstored.values() if self.gk.get(a.id) is None)
        return sorted(out, key=lambda a: (a.raised_at, a.id))

    async def _stored_records(self, alert_id: str) -> list[dict[str, Any]]:
        if self.shadow_gk.get(alert_id) is not None:
            return []  # shadow alerts are not shown nor acted on
        recs: list[dict[str, Any]] = await self._db_nowait(
            alert_store.alert_records, alert_id, include_shadow=False
        )
        return recs

    async def _acting_on(self, alert_id: str) -> Alert | None:
        a = await self.load(alert_id)
        if a is None:
            return None
        # a closed alert: act() refuses with "alert is already resolved"; an
        # open one that is not in memory (cannot normally happen) is adopted.
        # Memory again after the read: the alert may have changed meanwhile.
        return self.get(alert_id) or a

    async def _apply(self, a: Alert, req: ActionRequest) -> Alert:
        """Applied here, at once: the gates hold it, the spool stores it."""
        b = req.apply(a, self.clock())
        self.gk.update(b)
        self._persist(b, b.records[a.version :])
        log.info("alert " + req.action, alert=b.id, actor=req.actor, state=b.state.value)
        self._wake.set()
        return b

    # ------------------------------------------------------------- silences

    def add_silence(self, s: Silence) -> Silence:
        self.gk.add_silence(s)
        self.shadow_gk.add_silence(s)  # the candidate sees the same silences
        self._emit(spooled.silence_record(s.model_dump(mode="json")))
        log.info("silence created", silence=s.id, scope=s.scope.value, by=s.created_by)
        self._wake.set()
        return s

    def end_silence(self, silence_id: str, actor: str) -> Silence:
        s = self.gk.end_silence(silence_id, self.clock(), actor)  # KeyError if unknown
        with contextlib.suppress(KeyError):
            self.shadow_gk.end_silence(silence_id, self.clock(), actor)
        self._emit(spooled.silence_record(s.model_dump(mode="json")))
        log.info("silence ended", silence=s.id, by=actor)
        self._wake.set()
        return s

    def _held_silences(self) -> list[Silence]:
        return self.gk.silences()

    # ------------------------------------------------------------- access log

    def _write_access(self, entry: AccessEntry) -> None:
        self._emit(
            spooled.access_record(
                entry.at, entry.actor, entry.role, entry.action, entry.resident, entry.detail
            )
        )


_ALERTS: type[Alerts] = AlertService  # mypy: the embedded service serves the API
