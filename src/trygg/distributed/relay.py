"""The bridge's relay: an immediate alarm is paged even while the workers rebalance.

Why: a rebalance (a worker joins, leaves or dies) stops every worker's agents, and
an alarm on the stateful path (events -> rules -> signals -> alerts ->
notifications -> notify) waits for it; the test broker alone holds a rebalance
3-4 s (docs/distributed.md, "Failover"). The alarms that need no history, the
immediate rules without a guard time (a fall, a button, a pull cord, a fire), can
be judged by the bridge that forwarded them, and a bridge is in no consumer group.

How (docs/distributed.md, "The relay"):

- *Watch.* The bridge asks the engine's ``immediate`` what each event it forwarded
  raises, and notes the id the alerts agent will give that alert
  (``AlertsCore.alert_id_of``: derived from the resident and the signal).
- *Relay.* ``relay_after_s`` later, if no one has claimed the alert's first
  notification in the database (``store.claims``: the notify agent claims each one
  before it sends it), the stateful path has stalled. The relay runs the alerts
  agent's own step (``AlertsCore``) on the resident's alerts and silences read from
  the database, with the alerts it relayed itself since (a second press of a
  relayed alarm is a repeat, as it will be for the agent); if the gates let the
  alarm through, it claims the alert's first notifications, pages, stores its
  deliveries and marks the claim sent. The notify agent, finding the claim, does
  not send them again; one that finds a relay's claim unsent holds its copy until
  the relay's lease ends, then sends it itself (a relay that died mid-page).
- The database is the arbiter because it sees both sides at once: the order of a
  Kafka partition cannot, since a notification already on the topic may wait
  there for its worker's rebalance. Without the database the relay does nothing
  and the notify agent sends as before.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from trygg import logs
from trygg.alerts.gates import gated
from trygg.alerts.silences import Silence
from trygg.distributed import codecs
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.rules_core import RulesCore
from trygg.model import Event, Signal
from trygg.store import spooled

log = logs.get("trygg.relay")
KEEP_S = 600.0  # a resident's alerts the relay raised are kept this long
TICK_S = 0.05  # how often the open watches are looked at


def _routed(recs: list[dict[str, Any]]) -> bool:
    """Whether a stored alert was raised to be notified: not silenced, not held back."""
    data = recs[0].get("data") or {}
    return not data.get("suppressed_reason") and not data.get("held_until")


def _unclaimed(claim: bool | float | None) -> bool:
    """A notification no one has claimed, or a worker's claim past its lease."""
    return claim is None or claim is False


class Store(Protocol):
    """What the relay asks of the database (``relay_build`` gives it ``store`` calls)."""

    async def claims(self, alert_id: str) -> dict[str, bool | float]:
        """The alert's first notifications claimed so far, by key: True if for good; a
        worker's unsent: until when (epoch s) to wait for it, or False once past."""
        ...

    async def state(self, resident: str) -> tuple[list[list[dict[str, Any]]], list[Silence]]:
        """The resident's open and recent alerts (records per alert), and the silences."""
        ...

    async def claim(self, alert_id: str, keys: list[str]) -> bool:
        """All of ``keys`` for this relay, or none (False: taken already)."""
        ...

    async def settle(self, delivered: list[str], failed: list[str]) -> None:
        """The claimed notifications delivered are sent; those that failed are given
        back to the notify agent (its retries)."""
        ...


# (topic, key, value) records to produce, every ack awaited
Send = Callable[[list[tuple[str, str, bytes]]], Awaitable[None]]


def _as_read(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the alerts agent reads it from Kafka (times as text)."""
    return codecs.loads(codecs.dumps(record))


def _now() -> datetime:
    return datetime.now(UTC)


Receipt = tuple[float, float]  # (epoch s the bridge received it, its place in that order)


@dataclass
class Watch:
    resident: str
    signal: Signal
    alert_id: str  # the id the alerts agent gives the alert the signal raises
    due: float  # monotonic s: when the stateful path is taken to have stalled
    received: float  # epoch s: when the bridge received the alarm
    seq: int = 0  # its place in the bridge's order of receipt (a batch shares ``received``)


class Watches:
    """The pure part: the immediate alarms whose time to be notified has not come.

    At most one open watch per resident and rule: a device pressing on and on (a
    stuck button, a flood) makes one alarm, whose later presses are repeats of it for
    the gates anyway, so the relay's work is bounded by residents x rules, not by
    what a device sends."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.open: dict[str, Watch] = {}
        self._by_rule: set[tuple[str, str]] = set()  # (resident, rule) of the open ones

    def watch(
        self, resident: str, signals: Iterable[Signal], now: float, rx: float, seq: int = 0
    ) -> None:
        for sig in signals:
            aid = AlertsCore.alert_id_of(resident, sig)
            if aid in self.open or (resident, sig.rule) in self._by_rule:
                continue
            self.open[aid] = Watch(resident, sig, aid, now + self.after_s, rx, seq)
            self._by_rule.add((resident, sig.rule))

    def again(self, w: Watch, due: float) -> None:
        """Watch ``w`` again until ``due`` (monotonic s)."""
        self.open[w.alert_id] = replace(w, due=due)
        self._by_rule.add((w.resident, w.signal.rule))

    def due(self, now: float) -> list[Watch]:
        """The watches whose time has come, taken out."""
        out = [w for w in self.open.values() if w.due <= now]
        for w in out:
            del self.open[w.alert_id]
            self._by_rule.discard((w.resident, w.signal.rule))
        return out


class Relay:
    """Watches the immediate alarms a bridge forwards and pages those the stateful
    path has not claimed within ``after_s`` (module docstring). One per bridge."""

    def __init__(
        self,
        settings: Any,
        *,
        rules: RulesCore,
        alerts: AlertsCore,
        channels: dict[Any, Any],
        store: Store,
        send: Send,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.alerts = alerts
        self.channels = channels
        self.store = store
        self.send = send
        self.id = settings.mqtt_client_id  # the claimant's name: unique per bridge
        self.watches = Watches(settings.relay_after_s)
        self.types = rules.engine.immediate_types()
        # resident -> (alerts state after the relay's last step for them, monotonic s)
        self.relayed: dict[str, tuple[bytes, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # resident -> the resets, aborts and cancels forwarded (their receipt, event)
        self.gated: dict[str, list[tuple[Receipt, Event]]] = {}
        self.alarm_rx: dict[str, Receipt] = {}  # an alarm event's id -> its receipt
        self._seq = itertools.count()  # the order of receipt, within a batch too
        # one relay at a time per resident: a second press waits for the first's page,
        # then sees its alert (a repeat), as the alerts agent would
        self._locks: dict[str, asyncio.Lock] = {}
        self.stats = {"watched": 0, "relayed": 0, "gated": 0, "claimed": 0, "failed": 0}

    def update_registry(self, registry: Any) -> None:
        self.rules.update_registry(registry)
        self.alerts.update_registry(registry)
        self.types = self.rules.engine.immediate_types()

    # --- watch ----------------------------------------------------------------
    def note(self, events: Iterable[Event], received: datetime) -> None:
        """Events the bridge has forwarded (Kafka acked them), received at ``received``.
        Never raises: the bridge's forwarding must not stop for the relay (the stateful
        path pages an alarm the relay could not watch)."""
        now = time.monotonic()
        rx = received.timestamp()
        for ev in events:
            # A batch shares its receipt time: an alarm and its reset 50 ms later often
            # come in one (more often the more the bridge is loaded), and only their
            # order then says that the reset closes the alarm (``_state``).
            at = (rx, next(self._seq))
            try:
                if gated(ev):  # a reset, abort or cancel: the gates may need it (``_state``)
                    self.gated.setdefault(ev.resident, []).append((at, ev))
                if ev.type in self.types:
                    sigs = self.rules.engine.immediate(ev)
                    if sigs:
                        self.alarm_rx[ev.id] = at
                        self.stats["watched"] += len(sigs)
                        self.watches.watch(ev.resident, sigs, now, rx, at[1])
            except Exception as exc:
                log.error("relay: event not watched", event_id=ev.id, error=repr(exc)[:300])

    # --- relay ----------------------------------------------------------------
    def tick(self) -> None:
        """Start a relay for every watch whose time has come (every ``TICK_S``)."""
        now = time.monotonic()
        for w in self.watches.due(now):
            task = asyncio.create_task(self._relay_logged(w), name="relay")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if int(now) % 60 == 0:  # forget what is old (some ticks of that second)
            self.relayed = {k: v for k, v in self.relayed.items() if now - v[1] < KEEP_S}
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            old = time.time() - KEEP_S
            self.alarm_rx = {k: v for k, v in self.alarm_rx.items() if v[0] > old}
            self.gated = {
                k: kept for k, v in self.gated.items() if (kept := [g for g in v if g[0][0] > old])
            }

    async def _relay_logged(self, w: Watch) -> None:
        lock = self._locks.setdefault(w.resident, asyncio.Lock())
        try:
            async with lock:
                await self.relay(w)
        except Exception as exc:  # the stateful path still has the alarm: it pages it
            self.stats["failed"] += 1
            log.warning("alarm not relayed", alert=w.alert_id, error=repr(exc)[:300])

    def _state(self, resident: str, stored: list[list[dict[str, Any]]], before: Receipt) -> bytes:
        """The resident's alerts as the alerts agent will hold them when it reaches the
        alarm received at ``before``: the stored ones and those the relay
        raised itself that are not stored yet, then each reset (abort, cancel) the
        bridge received before the alarm applied to the alerts raised before that
        reset was received. While the workers stall, the sink stores nothing: a reset
        the agent took just before the stall may not be stored, and without it a new
        alarm would look like a repeat of the closed one. A reset received before an
        alert was raised is left alone (the agent may have taken it first): at worst
        the relay then holds back an alarm the agent pages after the stall."""
        alerts = [orjson.loads(orjson.dumps(recs)) for recs in stored]
        mine = self.relayed.get(resident)
        if mine is not None:
            known = {recs[0]["alert_id"] for recs in stored if recs}
            alerts += [
                recs
                for recs in orjson.loads(mine[0])["alerts"]
                if recs and recs[0]["alert_id"] not in known
            ]
        for rx, ev in self.gated.get(resident, ()):
            if rx >= before:
                break  # kept in the order received: what came after the alarm is not its past
            older = [a for a in alerts if a and self._raised_rx(a) < rx]
            if not older:
                continue
            doc = {"v": 1, "alerts": older, "sil": [], "seen": []}
            step = self.alerts.step(
                resident, orjson.dumps(doc), _as_read(codecs.reset_record(ev)), 0, _now()
            )
            if step.state is not None:
                ids = {a[0]["alert_id"] for a in older}
                alerts = [a for a in alerts if a[0]["alert_id"] not in ids]
                alerts += orjson.loads(step.state)["alerts"]
        return orjson.dumps({"v": 1, "alerts": alerts, "sil": [], "seen": []})

    def _raised_rx(self, recs: list[dict[str, Any]]) -> Receipt:
        """When the alarm that raised an alert reached this bridge, if this bridge
        forwarded it; else when the alert was raised (later: a reset received in
        between is then not taken as after the alarm, the safe side), after every
        event received in that same instant."""
        events = recs[0]["data"].get("events") or ()
        known = [self.alarm_rx[e] for e in events if e in self.alarm_rx]
        if known:
            return min(known)
        return (datetime.fromisoformat(recs[0]["at"]).timestamp(), math.inf)

    async def relay(self, w: Watch) -> None:
        """Page ``w``'s alarm, or those of its first notifications no one has claimed,
        unless the stateful path (or the gates) has it."""
        held = await self.store.claims(w.alert_id)
        sig = _as_read(codecs.signal_record(w.signal))
        state: bytes | None = None
        stored: list[list[dict[str, Any]]] = []
        if not held:
            stored, silences = await self.store.state(w.resident)
        raised = [recs for recs in stored if recs and recs[0]["alert_id"] == w.alert_id]
        if held or (raised and _routed(raised[0])):
            # The alerts agent raised this very alert, and the gates let it through
            # there: a worker's notify agent has claimed some of its first notifications
            # (it sent the console's, then stalled before the webhook's), or the sink
            # stored it before the notify agent reached it (a worker catching up after
            # a take-over). What no one has claimed is the relay's, without the gates
            # again: to them the stored alert would be an open alert this alarm repeats.
            # The keys come from the routing as it is now: across a change of shift they
            # can name another team's address than the worker's, and both are paged.
            step = self.alerts.step(w.resident, None, sig, 0, _now())  # no prior alerts
        elif raised:  # raised silenced or held back by a red alert: the agent's to page
            self.stats["gated"] += 1
            log.info("alarm not relayed: raised by a worker, not routed", alert=w.alert_id)
            return
        else:
            self.alerts.update_silences(silences)
            step = self.alerts.step(
                w.resident,
                self._state(w.resident, stored, (w.received, w.seq)),
                sig,
                0,
                _now(),
            )
            state = step.state
        ntfs = [n for n in step.notifications if n["row"]["alert_id"] == w.alert_id]
        if not ntfs:
            self.stats["gated"] += 1  # a repeat of an open alert, a silence: no page
            log.info(
                "alarm not relayed: held by the gates",
                alert=w.alert_id,
                rule=w.signal.rule,
                # what the gates decided and why (their words name no resident)
                decided=[f"{d.kind.value}: {d.reason}" for d in step.decisions][:4],
                worker_claims=len(held),
            )
            return
        # a worker still sending one (its claim unsent, its lease not over): look again
        # when the claim ends; the rest is paged now
        waits = [v for n in ntfs if isinstance(v := held.get(n["row"]["key"]), float)]
        ntfs = [n for n in ntfs if _unclaimed(held.get(n["row"]["key"]))]
        if waits:
            self.watches.again(w, time.monotonic() + max(0.0, min(waits) - time.time()))
            log.info("alarm being sent by a worker: looked at again", alert=w.alert_id)
        if not ntfs:
            if not waits:
                self.stats["claimed"] += 1  # the notify agent has it (the usual case)
                log.debug("alarm left to the workers: claimed", alert=w.alert_id)
            return
        if not await self.store.claim(w.alert_id, [n["row"]["key"] for n in ntfs]):
            self.stats["claimed"] += 1
            log.info("alarm left to the workers: claimed meanwhile", alert=w.alert_id)
            return
        sent = await self._page(ntfs)
        await self.send(
            [(self.settings.kafka_records_topic, w.resident, codecs.dumps(r)) for r in sent]
        )
        await self.store.settle(
            [r["key"] for r in sent if r["ok"]], [r["key"] for r in sent if not r["ok"]]
        )
        if state is not None:  # the alert the relay raised itself (not one a worker raised)
            self.relayed[w.resident] = (state, time.monotonic())
        self.stats["relayed"] += 1
        log.info(
            "alarm relayed: no worker had claimed it"
            if not held
            else "alarm relayed: a worker claimed some of its notifications, not all",
            alert=w.alert_id,
            rule=w.signal.rule,
            after_s=self.settings.relay_after_s,
            # from the bridge's receipt to the page: the relay's own delay, to watch
            paged_after_s=round(time.time() - w.received, 3),
            delivered=sum(bool(r["ok"]) for r in sent),
            claimed_by_workers=len(held),
        )

    async def _page(self, ntfs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send each notification once, all at once; their delivery records. The relay
        does not retry: one that failed is recorded so and given back to the notify
        agent."""
        from trygg.alerts.escalation import Notification
        from trygg.notify.base import deliver, payload

        async def one(nd: dict[str, Any]) -> dict[str, Any]:
            row = nd["row"]
            n = Notification.from_row(row)
            d, ms = await deliver(
                self.channels, n, row["address"], payload(nd["alert"], n, row["address"])
            )
            return spooled.delivery_record(
                key=row["key"],
                alert_id=row["alert_id"],
                channel=row["channel"],
                address=row["address"],
                at=_now(),
                attempts=max(1, d.attempts),
                ok=d.ok,
                status=d.status,
                error=d.error,
                latency_ms=round(ms, 3),
            )

        # at once, not one after another: the webhook does not wait for the MQTT send
        return list(await asyncio.gather(*(one(nd) for nd in ntfs)))
