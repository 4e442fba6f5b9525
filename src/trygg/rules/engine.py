"""The pure rule engine: events and a clock in, signals out.

No I/O, no wall clock, no globals: the live runner calls ``advance`` from its
clock, replay calls it with event time, Faust keeps ``snapshot`` bytes in a
table. See docs/rules.md for the semantics of each rule kind and the
late-event policy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from trygg.model import Event, Signal
from trygg.registry import DEFAULT_TIMEZONE, Registry, Resident
from trygg.rules.catalogue import Catalogue
from trygg.rules.clock_verdict import clock_verdict, runs_ahead, tolerance, wrong_clocks
from trygg.rules.dispatch import Dispatch, Dispatches
from trygg.rules.kinds import (
    NEVER,
    EventRule,
    Res,
    Rule,
    device_clock,
    device_clocks,
    load_device_clocks,
    set_device_clock,
)
from trygg.rules.snapshots import (
    dump_states,
    load_snapshot,
    load_states,
    read_snapshot,
    snapshot_of,
)
from trygg.rules.timers import Timers
from trygg.rules.windows import LocalClock

DEFAULT_LATENESS = timedelta(minutes=2)


class CarePlanError(ValueError):
    """One or more care plans that do not fit the catalogue; one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Engine(Timers):
    """Evaluates the catalogue for every resident of a registry.

    Timers: each resident keeps the earliest timer hint of its rules in
    ``Res.next``; a global heap of ``(hint, resident)`` wakes residents in
    deadline order. ``process`` fires the event's resident's timers due at or
    before the event time, then evaluates the event; ``advance`` fires every
    resident's timers due at or before ``now``.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        registry: Registry,
        *,
        allowed_lateness: timedelta = DEFAULT_LATENESS,
    ) -> None:
        self.catalogue = catalogue
        self.version = catalogue.version
        self.lateness = allowed_lateness.total_seconds()
        super().__init__()  # the residents' states and timers, heartbeats, device places
        self._clocks: dict[str, LocalClock] = {}
        self.late_events = 0
        self._residents: dict[str, Resident] = {}
        self._plans: dict[str, tuple[Rule | None, ...]] = {}
        self._devices: dict[str, tuple[str, ...]] = {}
        self._dispatch = Dispatches(catalogue.index)
        # The catalogue's clock rule (kind: clock), if it has one: how far ahead a
        # device clock may run, and the alert that says one does.
        self._clock_idx = next(
            (i for i, sp in enumerate(catalogue.specs) if sp.kind == "clock"), None
        )
        self.clock_ahead_events = 0  # events judged at the home's clock, not their own
        self.update_registry(registry)

    # --------------------------------------------------------- registry --
    def update_registry(self, registry: Registry) -> None:
        """Take a new registry (devices, time zones, care plans) into use now.

        Raises CarePlanError, leaving the engine unchanged, if any care plan
        does not fit the catalogue."""
        problems: list[str] = []
        plans: dict[str, tuple[Rule | None, ...]] = {}
        cache: dict[str, tuple[Rule | None, ...]] = {}
        for r in registry.residents:
            if not r.overrides:
                continue
            key = json.dumps(r.overrides, sort_keys=True, default=str)
            if key not in cache:
                try:
                    cache[key] = self.catalogue.with_overrides(r.overrides)
                except ValueError as exc:
                    problems.append(f"resident {r.id!r}: care plan: {exc}")
                    continue
            plans[r.id] = cache[key]
        if problems:
            raise CarePlanError(problems)
        devices: dict[str, list[str]] = {}
        for d in registry.devices:
            devices.setdefault(d.resident, []).append(d.id)
        self._residents = registry.resident_by_id()
        self._plans = plans
        self._devices = {k: tuple(v) for k, v in devices.items()}
        self._hb = {d.id: d.heartbeat.total_seconds() for d in registry.devices}
        self._hbs = {}
        self.pos = {d: i for devs in self._devices.values() for i, d in enumerate(devs)}
        for rid, res in self._res.items():
            rules = plans.get(rid, self.catalogue.compiled)
            clock = self._clock(self._residents.get(rid))
            devs = self._devices.get(rid, ())
            if rules is not res.rules or clock is not res.clock or devs != res.devices:
                if devs != res.devices:  # re-key per-device state to the new device list
                    dumped = dump_states(self.catalogue, res)
                    clocks = device_clocks(res)
                    res.devices = devs
                    load_device_clocks(res, self.pos, clocks)
                    load_states(self.catalogue, res, dumped)
                res.rules, res.clock = rules, clock
                res.dispatch, res.late_dispatch = self._dispatch.of(rules)
                res.tol = tolerance(self.catalogue.compiled, self._clock_idx, rules)
                self._rearm(res)
        live = {id(self.catalogue.compiled)} | {id(r.rules) for r in self._res.values()}
        self._dispatch.keep(live)

    def set_care_plan(self, resident_id: str, overrides: dict[str, dict[str, Any]]) -> None:
        """Change one resident's care plan now (raises CarePlanError if it does not fit)."""
        try:
            rules = self.catalogue.with_overrides(overrides)
        except ValueError as exc:
            raise CarePlanError([f"resident {resident_id!r}: care plan: {exc}"]) from None
        if overrides:
            self._plans[resident_id] = rules
        else:
            self._plans.pop(resident_id, None)
        res = self._res.get(resident_id)
        if res is not None:
            res.rules = rules
            res.dispatch, res.late_dispatch = self._dispatch.of(rules)
            res.tol = tolerance(self.catalogue.compiled, self._clock_idx, rules)
            self._rearm(res)

    def dispatch_for(self, rules: tuple[Rule | None, ...]) -> Dispatch:
        """Event type -> bound handlers of the enabled rules listening to it."""
        return self._dispatch.of(rules)[0]

    def _clock(self, resident: Resident | None) -> LocalClock:
        name = resident.timezone if resident is not None else DEFAULT_TIMEZONE
        c = self._clocks.get(name)
        if c is None:
            c = self._clocks[name] = LocalClock(ZoneInfo(name))
        return c

    def _make_res(self, rid: str) -> Res:
        rules = self._plans.get(rid, self.catalogue.compiled)
        dispatch, late = self._dispatch.of(rules)
        res = Res(
            rid,
            self._clock(self._residents.get(rid)),
            rules,
            self._devices.get(rid, ()),
            dispatch,
        )
        res.late_dispatch = late
        res.tol = tolerance(self.catalogue.compiled, self._clock_idx, rules)
        return res

    def _new_res(self, rid: str) -> Res:
        res = self._res[rid] = self._make_res(rid)
        return res

    def immediate_types(self) -> frozenset[Any]:
        """The event types an immediate rule (kind: event) of any care plan listens
        to: the only events ``immediate`` need be asked about."""
        plans = [self.catalogue.compiled, *self._plans.values()]
        return frozenset(
            t for rules in plans for r in rules if isinstance(r, EventRule) for t in r.types
        )

    def immediate(self, event: Event) -> list[Signal]:
        """What the resident's immediate rules (kind: event, no guard time) say of
        ``event`` by itself, on a scratch state that is neither read nor kept: the
        alarms that need no history (a fall, a button, a pull cord, a fire). The
        distributed bridge's relay pages these when the stateful path has stalled
        (docs/distributed.md, "The relay"). A rule with a guard time is left out:
        it fires from its timer, which only the resident's state has."""
        res = self._make_res(event.resident)
        ts = event.time.timestamp()
        out: list[Signal] = []
        for rule in res.rules:
            if isinstance(rule, EventRule) and rule.guard <= 0 and event.type in rule.types:
                sigs = rule.on_event(self, res, event, ts)
                if sigs:
                    out.extend(sigs)
        return out

    # ------------------------------------------------------------- drive --
    def process(self, event: Event, received: datetime | None = None) -> list[Signal]:
        """Fire the resident's timers due before the event, then evaluate it.

        The late-event policy (docs/rules.md):

        - Lateness is judged per device: an event more than the allowed
          lateness behind the newest event of its own device is *late*. A late
          event is evaluated by the immediate rules only (kind: event: a fall,
          a button), never dropped; the timers and sequences do not see it,
          and it counts in ``late_events``.
        - A device clock more than the clock rule's ``ahead`` before the
          reference (``received``, the receiver's clock, when given; else the
          home's clock, see ``clock_verdict.runs_ahead``) is wrong: its event is evaluated
          as if observed at the reference time, does not move the home's
          clock, and the clock rule alerts once per device (and clears when
          the clock is right again).
        - "More than" is strict: timers due exactly at the event's time fire
          after it, so an event at a deadline is in time.

        This runs for every event. In a replay without receipt times where
        nothing ever arrived out of order in the home (the usual case), no
        clock is judged (``_judge_clock`` would find nothing) and the device's
        clock costs a few array reads and writes.
        """
        ts = event.time.timestamp()
        rid = event.resident
        res = self._res.get(rid)
        out: list[Signal] = []
        dev = event.device
        new = res is None
        if res is None:
            res = self._new_res(rid)
        # The device's own clock: its newest time (NEVER: none yet) and its place
        # in receipt order (device_clock/set_device_clock, inlined).
        dwm = res.dwm
        try:
            i = res.devices.index(dev)  # a scan of a few devices: cheaper than a lookup
        except ValueError:
            i = -1
            prev = device_clock(res, self.pos, dev)[0]
            last = NEVER if prev is None else prev
        else:
            last = dwm[i]
        seq = res.seq + 1
        res.seq = seq
        own = ts
        ref: float | None = None
        if received is not None or res.back:
            ref, event, last = self._judge_clock(res, event, received, ts, last, i, out)
            if ref is not None:
                ts = ref
        hi = res.hi
        if own > hi:
            res.hi = own
        elif own < hi - res.tol:  # (the tolerance is > 0: these two exclude each other)
            res.back = seq  # well behind another device's clock: evidence for runs_ahead
        if i >= 0:
            if own > last:
                dwm[i] = own
            res.dseq[i] = seq
        else:
            set_device_clock(res, self.pos, dev, own if own > last else last, seq)
        if ts < last - self.lateness and ref is None:
            # Late for its own device: the immediate rules only.
            self.late_events += 1
            for handler in res.late_dispatch[event.type]:
                sigs = handler(self, res, event, ts)
                if sigs:
                    out.extend(sigs)
            return out
        if new:
            res.wm = ts
            for rule in res.rules:
                if rule is not None and rule.starts:
                    rule.on_start(self, res, ts)
        else:
            wm = res.wm
            if wm is None or ts > wm:
                res.wm = ts
            nxt = res.next
            if nxt is not None and nxt < ts:
                self._fire(res, math.nextafter(ts, -math.inf), out)
        for handler in res.dispatch[event.type]:
            sigs = handler(self, res, event, ts)
            if sigs:
                out.extend(sigs)
        return out

    def _judge_clock(
        self,
        res: Res,
        event: Event,
        received: datetime | None,
        ts: float,
        last: float,
        i: int,
        out: list[Signal],
    ) -> tuple[float | None, Event, float]:
        """``process``'s verdict on the device's clock, when there is something to
        judge it by (a receipt time, or events of the home out of order): the
        reference time if it runs ahead (else None), the event as evaluated
        (timed at the reference), and the device's newest time (``last``;
        NEVER when a clock known wrong is right again: its old times no longer
        count). Tells the clock rule (``out``). ``ts``: the event's time;
        ``i``: the device's place in ``res.devices``, -1 if not registered there."""
        dev = event.device
        ci = self._clock_idx
        mine = res.dseq[i] if i >= 0 else device_clock(res, self.pos, dev)[1]
        ref = runs_ahead(res, ci, dev, ts, received, None if last == NEVER else last, mine)
        if ref is not None:
            # A clock ahead: judged at the reference clock, its own time kept apart.
            self.clock_ahead_events += 1
            event = dataclasses.replace(event, time=datetime.fromtimestamp(ref, UTC))
            clock_verdict(res, ci, event, True, out)
        elif dev in wrong_clocks(res, ci) and clock_verdict(res, ci, event, False, out):
            # A clock set right again: its old (wrong) times no longer count.
            last = NEVER
            res.hi = max((t for d, (t, _) in device_clocks(res).items() if d != dev), default=NEVER)
        return ref, event, last

    def watermark(self) -> datetime | None:
        """The latest event time seen for any resident (UTC)."""
        wms = [r.wm for r in self._res.values() if r.wm is not None]
        return datetime.fromtimestamp(max(wms), UTC) if wms else None

    # ---------------------------------------------------------- state --
    def residents(self) -> list[str]:
        return list(self._res)

    def snapshot(self, resident_id: str) -> bytes:
        """The resident's rule state as bytes (empty state if never seen)."""
        return snapshot_of(self.catalogue, self._res.get(resident_id))

    def restore(self, resident_id: str, data: bytes) -> None:
        """Replace the resident's rule state with a snapshot (state of rules the
        catalogue no longer has, or whose kind changed, is dropped)."""
        doc = read_snapshot(data)
        self._res.pop(resident_id, None)
        if doc["wm"] is None and not doc["st"]:
            return
        res = self._new_res(resident_id)
        load_snapshot(self.catalogue, self.pos, res, doc)
        self._rearm(res)

    def detach(self, resident_id: str) -> Res | None:
        """Take the resident's live state out of the engine (None: none), as
        ``restore`` with an empty snapshot forgets it, but without decoding one.

        With ``attach`` a caller that holds one resident at a time (the
        distributed worker) keeps the state between steps instead of a
        snapshot/restore round trip per event. A detached state does not follow
        ``update_registry``: the holder drops it when the registry changes."""
        return self._res.pop(resident_id, None)

    def attach(self, res: Res) -> None:
        """Put a state taken out with ``detach`` back (replacing any the resident has),
        its next deadline into the engine's wake-ups."""
        self._res[res.id] = res
        if res.next is not None:
            self._push(res.next, res.id)
