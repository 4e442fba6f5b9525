"""The pure rule engine: events and a clock in, signals out.

No I/O, no wall clock, no globals: the live runner calls ``advance`` from its
clock, replay calls it with event time, Faust keeps ``snapshot`` bytes in a
table. See docs/rules.md for the semantics of each rule kind and the
late-event policy.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from trygg.model import Event, EventType, Signal
from trygg.registry import DEFAULT_TIMEZONE, Registry, Resident
from trygg.rules.catalogue import Catalogue
from trygg.rules.kinds import Res, Rule
from trygg.rules.windows import LocalClock

DEFAULT_LATENESS = timedelta(minutes=2)
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
        self._dispatch: dict[int, tuple[tuple[Rule | None, ...], Dispatch]] = {}
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
                    res.devices = devs
                    self._load_states(res, dumped)
                res.rules, res.clock = rules, clock
                res.dispatch = self.dispatch_for(rules)
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
            res.dispatch = self.dispatch_for(rules)
            self._rearm(res)

    def dispatch_for(self, rules: tuple[Rule | None, ...]) -> Dispatch:
        """Event type -> bound handlers of the enabled rules listening to it."""
        hit = self._dispatch.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1]
        d: Dispatch = {}
        for t, idxs in self._index.items():
            d[t] = tuple(r.handler() for i in idxs if (r := rules[i]) is not None)
        self._dispatch[id(rules)] = (rules, d)
        return d

    def _clock(self, resident: Resident | None) -> LocalClock:
        name = resident.timezone if resident is not None else DEFAULT_TIMEZONE
        c = self._clocks.get(name)
        if c is None:
            c = self._clocks[name] = LocalClock(ZoneInfo(name))
        return c

    def _new_res(self, rid: str) -> Res:
        rules = self._plans.get(rid, self.catalogue.compiled)
        res = Res(
            rid,
            self._clock(self._residents.get(rid)),
            rules,
            self._devices.get(rid, ()),
            self.dispatch_for(rules),
        )
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
    def is_late(self, event: Event) -> bool:
        """Whether ``process`` would refuse this event as too late (see the policy)."""
        res = self._res.get(event.resident)
        if res is None or res.wm is None:
            return False
        return event.time.timestamp() < res.wm - self.lateness

    def process(self, event: Event) -> list[Signal]:
        """Fire the resident's timers due at or before the event, then evaluate it.

        An event more than the allowed lateness behind the resident's
        watermark is not evaluated: it returns [] and counts in
        ``late_events`` (check ``is_late`` first to flag it in the store)."""
        ts = event.time.timestamp()
        res = self._res.get(event.resident)
        out: list[Signal] = []
        if res is None:
            res = self._new_res(event.resident)
            res.wm = ts
            for rule in res.rules:
                if rule is not None and rule.starts:
                    rule.on_start(self, res, ts)
        else:
            wm = res.wm
            if wm is not None:
                if ts < wm - self.lateness:
                    self.late_events += 1
                    return out
                if ts > wm:
                    res.wm = ts
            else:
                res.wm = ts
            nxt = res.next
            if nxt is not None and nxt <= ts:
                self._fire(res, ts, out)
        for handler in res.dispatch[event.type]:
            sigs = handler(self, res, event, ts)
            if sigs:
                out.extend(sigs)
        return out

    def advance(self, now: datetime) -> list[Signal]:
        """Fire every timer with a deadline at or before ``now``, in deadline order."""
        t = now.timestamp()
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
        doc = {"v": _SNAPSHOT_VERSION, "wm": res.wm, "st": self._dump_states(res)}
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
        self._load_states(res, doc["st"])
        self._rearm(res)
