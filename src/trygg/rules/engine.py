"""The pure rule engine: events and a clock in, signals out.

No I/O, no wall clock, no globals: the live runner calls ``advance`` from its
clock, replay calls it with event time, Faust keeps ``snapshot`` bytes in a
table. See docs/rules.md for the semantics of each rule kind and the
late-event policy.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from trygg.model import Event, EventType, Signal
from trygg.registry import DEFAULT_TIMEZONE, Registry, Resident
from trygg.rules.catalogue import Catalogue
from trygg.rules.kinds import (
    NEVER,
    ClockRule,
    ClockState,
    EventRule,
    Res,
    Rule,
    device_clock,
    device_clocks,
    load_device_clocks,
    set_device_clock,
)
from trygg.rules.windows import LocalClock

DEFAULT_LATENESS = timedelta(minutes=2)
DEFAULT_AHEAD = 120.0  # seconds a clock may run ahead when the catalogue has no clock rule
Handler = Callable[[Any, Res, Event, float], "list[Signal] | None"]
Dispatch = dict[EventType, tuple[Handler, ...]]
_SNAPSHOT_VERSION = 1


class CarePlanError(ValueError):
    """One or more care plans that do not fit the catalogue; one problem a line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Engine:
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
        self._index = catalogue.index
        self._res: dict[str, Res] = {}
        self._wake: list[tuple[float, str]] = []
        self._clocks: dict[str, LocalClock] = {}
        self.late_events = 0
        self.now: float | None = None
        self._residents: dict[str, Resident] = {}
        self._plans: dict[str, tuple[Rule | None, ...]] = {}
        self._devices: dict[str, tuple[str, ...]] = {}
        self._hb: dict[str, float] = {}
        # each device's place among its resident's registered devices
        self.pos: dict[str, int] = {}
        # per distinct rules tuple (care plan): event type -> the on_event handlers
        self._dispatch: dict[int, tuple[tuple[Rule | None, ...], Dispatch, Dispatch]] = {}
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
        self._hbs: dict[int, tuple[tuple[str, ...], list[float]]] = {}
        self.pos = {d: i for devs in self._devices.values() for i, d in enumerate(devs)}
        for rid, res in self._res.items():
            rules = plans.get(rid, self.catalogue.compiled)
            clock = self._clock(self._residents.get(rid))
            devs = self._devices.get(rid, ())
            if rules is not res.rules or clock is not res.clock or devs != res.devices:
                if devs != res.devices:  # re-key per-device state to the new device list
                    dumped = self._dump_states(res)
                    clocks = device_clocks(res)
                    res.devices = devs
                    load_device_clocks(res, self.pos, clocks)
                    self._load_states(res, dumped)
                res.rules, res.clock = rules, clock
                res.dispatch, res.late_dispatch = self._dispatches(rules)
                res.tol = self._tolerance(rules)
                self._rearm(res)
        live = {id(self.catalogue.compiled)} | {id(r.rules) for r in self._res.values()}
        self._dispatch = {k: v for k, v in self._dispatch.items() if k in live}

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
            res.dispatch, res.late_dispatch = self._dispatches(rules)
            res.tol = self._tolerance(rules)
            self._rearm(res)

    def dispatch_for(self, rules: tuple[Rule | None, ...]) -> Dispatch:
        """Event type -> bound handlers of the enabled rules listening to it."""
        return self._dispatches(rules)[0]

    def _dispatches(self, rules: tuple[Rule | None, ...]) -> tuple[Dispatch, Dispatch]:
        """The handlers for an event in time, and for a late one: only the
        immediate rules (kind: event), which judge an event by itself and so
        are evaluated whatever its delay."""
        hit = self._dispatch.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1], hit[2]
        d: Dispatch = {}
        late: Dispatch = {}
        for t, idxs in self._index.items():
            d[t] = tuple(r.handler() for i in idxs if (r := rules[i]) is not None)
            late[t] = tuple(r.handler() for i in idxs if isinstance(r := rules[i], EventRule))
        self._dispatch[id(rules)] = (rules, d, late)
        return d, late

    def _clock(self, resident: Resident | None) -> LocalClock:
        name = resident.timezone if resident is not None else DEFAULT_TIMEZONE
        c = self._clocks.get(name)
        if c is None:
            c = self._clocks[name] = LocalClock(ZoneInfo(name))
        return c

    def _new_res(self, rid: str) -> Res:
        rules = self._plans.get(rid, self.catalogue.compiled)
        dispatch, late = self._dispatches(rules)
        res = Res(
            rid,
            self._clock(self._residents.get(rid)),
            rules,
            self._devices.get(rid, ()),
            dispatch,
        )
        res.late_dispatch = late
        res.tol = self._tolerance(rules)
        self._res[rid] = res
        return res

    # ---------------------------------------------------- timer plumbing --
    def heartbeat(self, device: str) -> float:
        return self._hb.get(device, 300.0)

    def heartbeats(self, devices: tuple[str, ...]) -> list[float]:
        """Heartbeat intervals (s) of a resident's registered devices, cached per tuple."""
        hit = self._hbs.get(id(devices))
        if hit is not None and hit[0] is devices:
            return hit[1]
        hb = [self._hb.get(d, 300.0) for d in devices]
        self._hbs[id(devices)] = (devices, hb)
        return hb

    def arm(self, res: Res, st: Any, when: float) -> None:
        """Ask to be woken for ``st`` at ``when`` (keeps the earliest hint)."""
        h = st.hint
        if h is not None and h <= when:
            return
        st.hint = when
        if res.next is None or when < res.next:
            res.next = when
            self._push(when, res.id)

    def _push(self, when: float, rid: str) -> None:
        wake = self._wake
        heapq.heappush(wake, (when, rid))
        if len(wake) > 2 * len(self._res) + 64:  # drop stale wake-ups (amortised O(1))
            self._wake = [(r.next, r.id) for r in self._res.values() if r.next is not None]
            heapq.heapify(self._wake)

    def _recompute_next(self, res: Res) -> None:
        nxt: float | None = None
        for st in res.states:
            if st is not None:
                h = st.hint
                if h is not None and (nxt is None or h < nxt):
                    nxt = h
        if nxt != res.next:
            res.next = nxt
            if nxt is not None:
                self._push(nxt, res.id)

    def _rearm(self, res: Res) -> None:
        for i, st in enumerate(res.states):
            if st is None or not hasattr(st, "hint"):
                continue
            st.hint = None
            rule = res.rules[i]
            if rule is None:
                continue
            d = rule.deadline(self, res, st)
            if d is not None:
                st.hint = d
        res.next = None
        self._recompute_next(res)

    def _fire(self, res: Res, upto: float, out: list[Signal]) -> None:
        """Fire the resident's timers due at or before ``upto``, in deadline order."""
        states = res.states
        rules = res.rules
        while res.next is not None and res.next <= upto:
            best_i = -1
            best = upto
            for i, st in enumerate(states):
                if st is not None:
                    h = st.hint
                    if h is not None and h <= upto and (best_i < 0 or h < best):
                        best, best_i = h, i
            if best_i < 0:
                res.next = None
                self._recompute_next(res)
                break
            st = states[best_i]
            st.hint = None
            rule = rules[best_i]
            if rule is not None:
                sigs = rule.on_timer(self, res, st, best)
                if sigs:
                    out.extend(sigs)
            self._recompute_next(res)

    # ------------------------------------------------------------- drive --
    def _clock_rule(self, res: Res) -> ClockRule | None:
        i = self._clock_idx
        if i is None:
            return None
        r = res.rules[i]
        return r if isinstance(r, ClockRule) else None

    def _tolerance(self, rules: tuple[Rule | None, ...]) -> float:
        """How far ahead a device clock may run under these rules (the clock rule's
        ``ahead``, also when a care plan switches its alert off)."""
        i = self._clock_idx
        if i is not None:
            r = rules[i] or self.catalogue.compiled[i]
            if isinstance(r, ClockRule):
                return r.ahead
        return DEFAULT_AHEAD

    def _ahead(
        self,
        res: Res,
        dev: str,
        ts: float,
        received: datetime | None,
        prev: float | None,
        mine: int,
    ) -> float | None:
        """The reference time if ``dev``'s clock runs ahead at this event, else None.
        ``prev``/``mine``: the device's previous time and place in receipt order.

        Live, the reference is the receiver's clock (``received``). In replay
        there is none, and a jump forward may be a quiet home; so a device is
        judged only on evidence in the order events arrived: since its previous
        event, another device spoke with a time well behind that previous
        event (the rest of the home still lives in its past). The reference is
        then the newest time among the devices that spoke since. A device
        known wrong is judged by the home's other devices at every event."""
        tol = res.tol
        if received is not None:
            ref = received.timestamp()
            return ref if ts > ref + tol else None
        if prev is None or res.back == 0:
            return None  # the usual case: nothing ever arrived out of order
        st = res.states[self._clock_idx] if self._clock_idx is not None else None
        bad = st is not None and dev in st.bad
        if res.back <= mine and not bad:
            return None  # nothing arrived out of order since its previous event
        clocks = device_clocks(res)
        since = [t for d, (t, q) in clocks.items() if d != dev and q > mine]
        if since:
            ref = max(since)
        elif bad:
            others = [t for d, (t, _) in clocks.items() if d != dev]
            if not others:
                return None
            ref = max(others)
        else:
            return None
        if ts > ref + tol and (bad or prev > ref + tol):
            return ref
        return None

    def _wrong(self, res: Res) -> dict[str, str] | tuple[()]:
        """The home's devices known to have a wrong clock (device -> the event that
        showed it), as the clock rule's state keeps them."""
        i = self._clock_idx
        st = res.states[i] if i is not None else None
        return st.bad if isinstance(st, ClockState) else ()

    def _clock_verdict(self, res: Res, event: Event, ahead: bool, out: list[Signal]) -> bool:
        """Tell the clock rule; True if a device known wrong was cleared."""
        rule = self._clock_rule(res)
        if rule is None:
            return False
        sigs = rule.judged(res, event, ahead, event.time.astimezone(res.clock.tz))
        if sigs:
            out.extend(sigs)
            return not ahead
        return False

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
          home's clock, see ``_ahead``) is wrong: its event is evaluated
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
            res.back = seq  # well behind another device's clock: evidence for _ahead
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
        mine = res.dseq[i] if i >= 0 else device_clock(res, self.pos, dev)[1]
        ref = self._ahead(res, dev, ts, received, None if last == NEVER else last, mine)
        if ref is not None:
            # A clock ahead: judged at the reference clock, its own time kept apart.
            self.clock_ahead_events += 1
            event = dataclasses.replace(event, time=datetime.fromtimestamp(ref, UTC))
            self._clock_verdict(res, event, True, out)
        elif dev in self._wrong(res) and self._clock_verdict(res, event, False, out):
            # A clock set right again: its old (wrong) times no longer count.
            last = NEVER
            res.hi = max((t for d, (t, _) in device_clocks(res).items() if d != dev), default=NEVER)
        return ref, event, last

    def advance(self, now: datetime) -> list[Signal]:
        """Fire every timer with a deadline before ``now``, in deadline order.

        Strictly before, as in ``process``: a condition that holds for "more
        than" a time is not yet true at its deadline, and an event observed at
        that instant may still come and be in time."""
        t = math.nextafter(now.timestamp(), -math.inf)
        out: list[Signal] = []
        wake = self._wake
        while wake and wake[0][0] <= t:
            d, rid = heapq.heappop(wake)
            res = self._res.get(rid)
            if res is None or res.next is None or res.next > d:
                continue
            self._fire(res, d, out)
        if self.now is None or t > self.now:
            self.now = t
        return out

    def watermark(self) -> datetime | None:
        """The latest event time seen for any resident (UTC)."""
        wms = [r.wm for r in self._res.values() if r.wm is not None]
        return datetime.fromtimestamp(max(wms), UTC) if wms else None

    def deadline_of(self, resident_id: str) -> datetime | None:
        """The earliest instant at which this resident's timers may fire (a lower
        bound: ``advance`` to it may find nothing due and set a later one)."""
        res = self._res.get(resident_id)
        if res is None or res.next is None:
            return None
        return datetime.fromtimestamp(res.next, UTC)

    def next_deadline(self) -> datetime | None:
        """The earliest instant at which ``advance`` may have something to fire."""
        wake = self._wake
        while wake:
            d, rid = wake[0]
            res = self._res.get(rid)
            if res is not None and res.next is not None and res.next <= d:
                return datetime.fromtimestamp(d, UTC)
            heapq.heappop(wake)
        return None

    # ---------------------------------------------------------- state --
    def residents(self) -> list[str]:
        return list(self._res)

    def _rule_at(self, res: Res, i: int) -> Rule | None:
        rule = res.rules[i] or self.catalogue.compiled[i]
        if rule is None:  # disabled everywhere: compile it to (de)serialise its state
            rule = self.catalogue.compile(
                self.catalogue.specs[i].model_copy(update={"enabled": True}), i
            )
        return rule

    def _dump_states(self, res: Res) -> dict[str, Any]:
        st: dict[str, Any] = {}
        for i, s in enumerate(res.states):
            if s is None:
                continue
            rule = self._rule_at(res, i)
            if rule is not None:
                st[rule.id] = [type(rule).__name__, rule.dump(res, s)]
        return st

    def _load_states(self, res: Res, st: dict[str, Any]) -> None:
        ids = {s.rule: i for i, s in enumerate(self.catalogue.specs)}
        res.states = [None] * len(res.rules)
        for rid, (kind, dumped) in st.items():
            i = ids.get(rid)
            if i is None:
                continue
            rule = self._rule_at(res, i)
            if rule is None or type(rule).__name__ != kind:
                continue
            res.states[i] = rule.load(res, dumped)

    def snapshot(self, resident_id: str) -> bytes:
        """The resident's rule state as bytes (empty state if never seen)."""
        res = self._res.get(resident_id)
        if res is None:
            return json.dumps({"v": _SNAPSHOT_VERSION, "wm": None, "st": {}}).encode()
        doc = {
            "v": _SNAPSHOT_VERSION,
            "wm": res.wm,
            "st": self._dump_states(res),
            "dev": {d: [t, q] for d, (t, q) in device_clocks(res).items()},
            "seq": [res.seq, res.back, res.hi if res.hi != NEVER else None],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def restore(self, resident_id: str, data: bytes) -> None:
        """Replace the resident's rule state with a snapshot (state of rules the
        catalogue no longer has, or whose kind changed, is dropped)."""
        doc = json.loads(data)
        if doc.get("v") != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {doc.get('v')!r}")
        self._res.pop(resident_id, None)
        if doc["wm"] is None and not doc["st"]:
            return
        res = self._new_res(resident_id)
        res.wm = doc["wm"]
        # Snapshots before per-device lateness (2026-12) have no device clocks.
        clocks = {str(k): (float(v[0]), int(v[1])) for k, v in doc.get("dev", {}).items()}
        load_device_clocks(res, self.pos, clocks)
        seq = doc.get("seq", [0, 0, None])
        res.seq, res.back = int(seq[0]), int(seq[1])
        res.hi = NEVER if len(seq) < 3 or seq[2] is None else float(seq[2])
        self._load_states(res, doc["st"])
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
