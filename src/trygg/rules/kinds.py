"""The compiled rule kinds and their per-resident state.

A compiled rule is immutable and shared by every resident with the same care
plan; everything that changes lives in a small state object per resident and
rule (created lazily, ``__slots__`` only). Timers are *lower bounds*: a state
keeps one ``hint`` (the earliest instant at which the rule could have
something to decide); when the engine reaches it, the rule recomputes its
true deadline from the state and either decides or re-arms. An activity event
therefore costs an attribute update, not a heap operation.
"""

from __future__ import annotations

from array import array
from datetime import datetime
from typing import Any, ClassVar, Protocol

from trygg.model import DeviceKind, Event, EventType, Room, Severity, Signal, SignalAction
from trygg.rules.windows import LocalClock, Window

FIRE = SignalAction.FIRE
CLEAR = SignalAction.CLEAR
ALL_TYPES: frozenset[EventType] = frozenset(EventType)
NEVER = float("-inf")


class Res:
    """One resident as the engine sees it: zone, effective rules and rule state."""

    __slots__ = (
        "back",
        "clock",
        "devices",
        "dispatch",
        "dseq",
        "dwm",
        "dx",
        "hi",
        "id",
        "late_dispatch",
        "next",
        "rules",
        "seq",
        "states",
        "tol",
        "wm",
    )

    def __init__(
        self,
        rid: str,
        clock: LocalClock,
        rules: tuple[Rule | None, ...],
        devices: tuple[str, ...],
        dispatch: Any,
    ) -> None:
        self.id = rid
        self.dispatch = dispatch  # shared by every resident with the same care plan
        self.clock = clock
        self.rules = rules
        self.devices = devices
        self.states: list[Any] = [None] * len(rules)
        self.wm: float | None = None  # the home's clock: latest event time of a trusted clock
        self.next: float | None = None  # earliest timer hint of any state
        # Per registered device (in ``devices`` order): its latest event time, its
        # own clock (-inf: none yet); devices not in the registry go to ``dx``.
        # Arrays, not dicts: ~100 bytes a home instead of ~700 (state per resident
        # is budgeted, tests/test_rules_engine.py).
        n = len(devices)
        self.dwm = array("d", [NEVER]) * n
        self.dx: dict[str, list[Any]] | None = None  # device -> [time, seq]
        # Receipt order, for judging clocks without a receiver's clock (replay):
        self.seq = 0  # events of this home so far
        self.dseq = array("q", [0]) * n  # per device: ``seq`` at its latest event
        self.back = 0  # ``seq`` at the latest event well behind another device's clock
        self.hi = NEVER  # the newest time any device's own clock has shown
        self.tol = 120.0  # how far ahead a device clock may run (the clock rule's)
        self.late_dispatch: Any = None  # the immediate rules' handlers (for late events)


def device_clock(res: Res, pos: dict[str, int], dev: str) -> tuple[float | None, int]:
    """A device's latest event time (None: none yet) and its place in receipt order."""
    i = pos.get(dev, -1)
    if 0 <= i < len(res.dwm) and res.devices[i] == dev:
        t = res.dwm[i]
        return (None if t == NEVER else t), res.dseq[i]
    x = res.dx.get(dev) if res.dx else None
    return (x[0], x[1]) if x else (None, 0)


def set_device_clock(res: Res, pos: dict[str, int], dev: str, t: float, seq: int) -> None:
    i = pos.get(dev, -1)
    if 0 <= i < len(res.dwm) and res.devices[i] == dev:
        res.dwm[i], res.dseq[i] = t, seq
        return
    if res.dx is None:
        res.dx = {}
    res.dx[dev] = [t, seq]


def device_clocks(res: Res) -> dict[str, tuple[float, int]]:
    """Every device clock of the home: device -> (latest event time, seq)."""
    out = {d: (t, q) for d, t, q in zip(res.devices, res.dwm, res.dseq, strict=False) if t != NEVER}
    if res.dx:
        out.update({d: (float(x[0]), int(x[1])) for d, x in res.dx.items()})
    return out


def load_device_clocks(res: Res, pos: dict[str, int], clocks: dict[str, tuple[float, int]]) -> None:
    n = len(res.devices)
    res.dwm = array("d", [NEVER]) * n
    res.dseq = array("q", [0]) * n
    res.dx = None
    for d, (t, q) in clocks.items():
        set_device_clock(res, pos, d, t, q)


class Env(Protocol):
    def arm(self, res: Res, st: Any, when: float) -> None: ...

    def heartbeat(self, device: str) -> float: ...

    pos: dict[str, int]

    def heartbeats(self, devices: tuple[str, ...]) -> list[float]: ...


class Matcher:
    """Which events a rule step listens to: types plus optional conditions."""

    __slots__ = (
        "above",
        "any",
        "below",
        "kinds",
        "not_kinds",
        "not_rooms",
        "plain",
        "rooms",
        "types",
    )

    def __init__(
        self,
        types: frozenset[EventType],
        rooms: frozenset[Room] | None = None,
        not_rooms: frozenset[Room] | None = None,
        kinds: frozenset[DeviceKind] | None = None,
        not_kinds: frozenset[DeviceKind] | None = None,
        above: float | None = None,
        below: float | None = None,
    ) -> None:
        self.types = types
        self.rooms = rooms
        self.not_rooms = not_rooms
        self.kinds = kinds
        self.not_kinds = not_kinds
        self.above = above
        self.below = below
        self.plain = rooms is None and not_rooms is None and kinds is None and not_kinds is None
        self.plain = self.plain and above is None and below is None
        self.any = self.plain and types == ALL_TYPES

    def __call__(self, ev: Event) -> bool:
        if ev.type not in self.types:
            return False
        if self.plain:
            return True
        if self.rooms is not None and ev.room not in self.rooms:
            return False
        if self.not_rooms is not None and ev.room in self.not_rooms:
            return False
        if self.kinds is not None and ev.kind not in self.kinds:
            return False
        if self.not_kinds is not None and ev.kind in self.not_kinds:
            return False
        if self.above is not None and (ev.value is None or not ev.value > self.above):
            return False
        return not (self.below is not None and (ev.value is None or not ev.value < self.below))


def _dt(ts: float, res: Res) -> datetime:
    return datetime.fromtimestamp(ts, res.clock.tz)


class Rule:
    """Base of the compiled kinds."""

    __slots__ = ("code", "id", "idx", "severity", "title", "types", "version")
    kind: ClassVar[str] = ""
    starts: ClassVar[bool] = False  # needs on_start when a resident is first seen

    def __init__(
        self, rid: str, idx: int, code: str, severity: Severity, title: str, version: str
    ) -> None:
        self.id = rid
        self.idx = idx
        self.code = code
        self.severity = severity
        self.title = title
        self.version = version
        self.types: frozenset[EventType] = frozenset()

    def signal(
        self,
        action: SignalAction,
        res: Res,
        at: datetime,
        events: tuple[str, ...],
        device: str | None = None,
    ) -> Signal:
        return Signal(
            action=action,
            rule=self.id,
            resident=res.id,
            at=at,
            code=self.code,
            severity=self.severity,
            catalogue_version=self.version,
            events=events,
            device=device,
            title=self.title,
        )

    # -- the interface the engine drives ---------------------------------
    def handler(self) -> Any:
        """The bound method the engine calls for each event this rule listens to."""
        return self.on_event

    def on_start(self, env: Env, res: Res, ts: float) -> None:
        return None

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        raise NotImplementedError

    def on_timer(self, env: Env, res: Res, st: Any, due: float) -> list[Signal] | None:
        return None

    def deadline(self, env: Env, res: Res, st: Any) -> float | None:
        return None

    def dump(self, res: Res, st: Any) -> Any:
        return None

    def load(self, res: Res, data: Any) -> Any:
        return None


# ---------------------------------------------------------------- event ----


class PendState:
    __slots__ = ("hint", "pend")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.pend: dict[str, tuple[float, str]] = {}


class EventRule(Rule):
    """An event raises an alert, optionally unless cancelled within a guard time."""

    __slots__ = ("cancel", "guard", "on", "window")
    kind = "event"

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        on: Matcher,
        window: Window | None,
        cancel: Matcher | None,
        guard: float,
    ) -> None:
        super().__init__(*base)
        self.on = on
        self.window = window
        self.cancel = cancel
        self.guard = guard
        # cancel types are listened to even with guard 0: a care plan may add a guard
        self.types = on.types | (cancel.types if cancel is not None else frozenset())

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        if self.on(ev):
            if self.window is not None and not self.window.contains(res.clock, ts):
                return None
            if self.guard <= 0:
                return [
                    self.signal(FIRE, res, ev.time.astimezone(res.clock.tz), (ev.id,), ev.device)
                ]
            st = res.states[self.idx]
            if st is None:
                st = res.states[self.idx] = PendState()
            if ev.device not in st.pend:
                st.pend[ev.device] = (ts, ev.id)
                env.arm(res, st, ts + self.guard)
            return None
        if self.guard > 0 and self.cancel is not None and self.cancel(ev):
            st = res.states[self.idx]
            if st is not None:
                p = st.pend.get(ev.device)
                if p is not None and ts <= p[0] + self.guard:
                    del st.pend[ev.device]
        return None

    def deadline(self, env: Env, res: Res, st: PendState) -> float | None:
        return min((p[0] + self.guard for p in st.pend.values()), default=None)

    def on_timer(self, env: Env, res: Res, st: PendState, due: float) -> list[Signal] | None:
        out = []
        for dev, (t, eid) in sorted(st.pend.items(), key=lambda kv: (kv[1][0], kv[0])):
            if t + self.guard <= due:
                del st.pend[dev]
                out.append(self.signal(FIRE, res, _dt(t + self.guard, res), (eid,), dev))
        d = self.deadline(env, res, st)
        if d is not None:
            env.arm(res, st, d)
        return out

    def dump(self, res: Res, st: PendState) -> Any:
        return {k: list(v) for k, v in st.pend.items()}

    def load(self, res: Res, data: Any) -> PendState:
        st = PendState()
        st.pend = {k: (float(v[0]), str(v[1])) for k, v in data.items()}
        return st


# ------------------------------------------------------------ threshold ----


class KeyedState:
    __slots__ = ("dev", "hint")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.dev: dict[str, list[Any]] = {}


class ThresholdRule(Rule):
    """A value beyond a limit for a duration, per device, with a clear level."""

    __slots__ = ("clear", "hold", "limit", "on", "upward")
    kind = "threshold"

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        on: Matcher,
        limit: float,
        upward: bool,
        clear: float,
        hold: float,
    ) -> None:
        super().__init__(*base)
        self.on = on
        self.limit = limit
        self.upward = upward
        self.clear = clear
        self.hold = hold
        self.types = on.types

    def _bad(self, v: float) -> bool:
        return v > self.limit if self.upward else v < self.limit

    def _cleared(self, v: float) -> bool:
        return v < self.clear if self.upward else v > self.clear

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        v = ev.value
        on = self.on
        if v is None or ev.type not in on.types or not (on.plain or on(ev)):
            return None
        st = res.states[self.idx]
        cur = None if st is None else st.dev.get(ev.device)
        if cur is None:
            if self._bad(v):
                if st is None:  # state only once a value is out of range
                    st = res.states[self.idx] = KeyedState()
                if self.hold <= 0:
                    st.dev[ev.device] = [2, ts, ev.id]
                    return [
                        self.signal(
                            FIRE, res, ev.time.astimezone(res.clock.tz), (ev.id,), ev.device
                        )
                    ]
                st.dev[ev.device] = [1, ts, ev.id]
                env.arm(res, st, ts + self.hold)
            return None
        if cur[0] == 1:
            if not self._bad(v):
                del st.dev[ev.device]
            return None
        if self._cleared(v):
            del st.dev[ev.device]
            return [self.signal(CLEAR, res, ev.time.astimezone(res.clock.tz), (ev.id,), ev.device)]
        return None

    def deadline(self, env: Env, res: Res, st: KeyedState) -> float | None:
        return min((c[1] + self.hold for c in st.dev.values() if c[0] == 1), default=None)

    def on_timer(self, env: Env, res: Res, st: KeyedState, due: float) -> list[Signal] | None:
        out = []
        for dev, cur in sorted(st.dev.items(), key=lambda kv: (kv[1][1], kv[0])):
            if cur[0] == 1 and cur[1] + self.hold <= due:
                cur[0] = 2
                out.append(self.signal(FIRE, res, _dt(cur[1] + self.hold, res), (cur[2],), dev))
        d = self.deadline(env, res, st)
        if d is not None:
            env.arm(res, st, d)
        return out

    def dump(self, res: Res, st: KeyedState) -> Any:
        return st.dev

    def load(self, res: Res, data: Any) -> KeyedState:
        st = KeyedState()
        st.dev = {k: [int(v[0]), float(v[1]), str(v[2])] for k, v in data.items()}
        return st


# -------------------------------------------------------------- absence ----


class AbsState:
    __slots__ = ("fired", "hint", "last", "last_id")

    def __init__(self, last: float, last_id: str | None) -> None:
        self.hint: float | None = None
        self.last = last
        self.last_id = last_id
        self.fired = False


class AbsenceRule(Rule):
    """No matching event for a duration (per resident), optionally counted only
    inside a local time window."""

    __slots__ = ("of", "span", "window")
    kind = "absence"
    starts = True

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        of: Matcher,
        span: float,
        window: Window | None,
    ) -> None:
        super().__init__(*base)
        self.of = of
        self.span = span
        self.window = window
        self.types = of.types

    def on_start(self, env: Env, res: Res, ts: float) -> None:
        st = res.states[self.idx] = AbsState(ts, None)
        d = self.deadline(env, res, st)
        if d is not None:
            env.arm(res, st, d)

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        of = self.of
        if not of.plain and not of(ev):
            return None
        st = res.states[self.idx]
        newer = True
        if st is None:
            st = res.states[self.idx] = AbsState(ts, ev.id)
        else:
            newer = ts > st.last
            if newer:  # ties keep the first: the same whatever the batches
                st.last = ts
                st.last_id = ev.id
        out = None
        # Only activity after the silence began ends it: a late event from before
        # does not (lateness is per device, so one may arrive after the alert).
        if st.fired and newer:
            st.fired = False
            out = [self.signal(CLEAR, res, ev.time.astimezone(res.clock.tz), (ev.id,))]
        if st.hint is None:
            d = self.deadline(env, res, st)
            if d is not None:
                env.arm(res, st, d)
        return out

    def deadline(self, env: Env, res: Res, st: AbsState) -> float | None:
        if st.fired:
            return None
        if self.window is None:
            return st.last + self.span
        return self.window.advance(res.clock, st.last, self.span)

    def on_timer(self, env: Env, res: Res, st: AbsState, due: float) -> list[Signal] | None:
        d = self.deadline(env, res, st)
        if d is None:
            return None
        if d <= due:
            st.fired = True
            ids = (st.last_id,) if st.last_id is not None else ()
            return [self.signal(FIRE, res, _dt(d, res), ids)]
        env.arm(res, st, d)
        return None

    def dump(self, res: Res, st: AbsState) -> Any:
        return [st.last, st.last_id, st.fired]

    def load(self, res: Res, data: Any) -> AbsState:
        st = AbsState(float(data[0]), data[1])
        st.fired = bool(data[2])
        return st


class DevAbsState:
    """Per device, in the order of the resident's registered devices: last seen
    (array of doubles), last event id, and a bit per device that has fired.
    Devices not in the registry (yet) go to ``extra``."""

    __slots__ = ("extra", "fired", "hint", "ids", "last")

    def __init__(self, n: int, ts: float) -> None:
        self.hint: float | None = None
        self.last = array("d", [ts]) * n
        self.ids: list[str | None] = [None] * n
        self.fired = 0
        self.extra: dict[str, list[Any]] | None = None

    def items(self, devices: tuple[str, ...]) -> list[tuple[str, float, str | None, bool]]:
        out = [
            (d, self.last[i], self.ids[i], bool(self.fired >> i & 1)) for i, d in enumerate(devices)
        ]
        if self.extra:
            out.extend((d, float(c[0]), c[1], bool(c[2])) for d, c in self.extra.items())
        return out


class DeviceAbsenceRule(Rule):
    """No matching event from a device for a duration or a multiple of its
    heartbeat interval, per device."""

    __slots__ = ("beats", "of", "span")
    kind = "absence"
    starts = True

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        of: Matcher,
        span: float | None,
        beats: float | None,
    ) -> None:
        super().__init__(*base)
        self.of = of
        self.span = span
        self.beats = beats
        self.types = of.types

    def _limit(self, env: Env, device: str) -> float:
        if self.span is not None:
            return self.span
        return (self.beats or 1.0) * env.heartbeat(device)

    def _limits(self, env: Env, res: Res) -> list[float]:
        if self.span is not None:
            return [self.span] * len(res.devices)
        b = self.beats or 1.0
        return [b * h for h in env.heartbeats(res.devices)]

    def handler(self) -> Any:
        return self._on_any if self.of.any else self.on_event

    def on_start(self, env: Env, res: Res, ts: float) -> None:
        st = res.states[self.idx] = DevAbsState(len(res.devices), ts)
        dl = self.deadline(env, res, st)
        if dl is not None:
            env.arm(res, st, dl)

    def _on_any(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        """The hot path for ``of: any``: every event of a resident passes here."""
        st: DevAbsState | None = res.states[self.idx]
        if st is not None:
            # a scan of the resident's few devices stays in cache, unlike a global index
            try:
                i = res.devices.index(ev.device)
            except ValueError:
                i = -1
            ids = st.ids
            if 0 <= i < len(ids) and res.devices[i] == ev.device:
                last = st.last
                newer = ts > last[i]
                if newer:  # ties keep the first: the same whatever the batches
                    last[i] = ts
                    ids[i] = ev.id
                if not st.fired and st.hint is not None:
                    return None
                return self._heard(env, res, st, i, ev, newer)
        return self.on_event(env, res, ev, ts)

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        of = self.of
        if not of.any and not of(ev):
            return None
        st: DevAbsState | None = res.states[self.idx]
        if st is None:
            st = res.states[self.idx] = DevAbsState(len(res.devices), ts)
        dev = ev.device
        i = env.pos.get(dev, -1)
        ids = st.ids
        if i < 0 or i >= len(ids) or res.devices[i] != dev:
            return self._extra(env, res, st, ev, ts)
        last = st.last
        newer = ts > last[i]
        if newer:
            last[i] = ts
            ids[i] = ev.id
        return self._heard(env, res, st, i, ev, newer)

    def _heard(
        self, env: Env, res: Res, st: DevAbsState, i: int, ev: Event, newer: bool
    ) -> list[Signal] | None:
        """Device ``i`` was heard; ``newer``: later than anything before from it.
        Only that ends an outage: a late event from before the alert does not."""
        dev = res.devices[i]
        if newer and st.fired and st.fired >> i & 1:
            st.fired &= ~(1 << i)
            env.arm(res, st, st.last[i] + self._limit(env, dev))
            return [self.signal(CLEAR, res, ev.time.astimezone(res.clock.tz), (ev.id,), dev)]
        if st.hint is None:
            env.arm(res, st, st.last[i] + self._limit(env, dev))
        return None

    def _extra(
        self, env: Env, res: Res, st: DevAbsState, ev: Event, ts: float
    ) -> list[Signal] | None:
        if st.extra is None:
            st.extra = {}
        cur = st.extra.get(ev.device)
        newer = True
        if cur is None:
            cur = st.extra[ev.device] = [ts, ev.id, False]
        else:
            newer = ts > cur[0]
            if newer:
                cur[0], cur[1] = ts, ev.id
        out = None
        if cur[2] and newer:
            cur[2] = False
            out = [self.signal(CLEAR, res, ev.time.astimezone(res.clock.tz), (ev.id,), ev.device)]
        env.arm(res, st, cur[0] + self._limit(env, ev.device))
        return out

    def _scan(
        self, env: Env, res: Res, st: DevAbsState, due: float
    ) -> tuple[list[tuple[float, str, int]], float | None]:
        """Devices due at or before ``due`` (deadline, device, index; -1 = extra)
        and the earliest deadline of the others."""
        hit: list[tuple[float, str, int]] = []
        nxt: float | None = None
        last, fired, devices = st.last, st.fired, res.devices
        for i, lim in enumerate(self._limits(env, res)[: len(last)]):
            if fired >> i & 1:
                continue
            dl = last[i] + lim
            if dl <= due:
                hit.append((dl, devices[i], i))
            elif nxt is None or dl < nxt:
                nxt = dl
        if st.extra:
            for d, c in st.extra.items():
                if not c[2]:
                    dl = c[0] + self._limit(env, d)
                    if dl <= due:
                        hit.append((dl, d, -1))
                    elif nxt is None or dl < nxt:
                        nxt = dl
        return hit, nxt

    def deadline(self, env: Env, res: Res, st: DevAbsState) -> float | None:
        _, nxt = self._scan(env, res, st, float("-inf"))
        return nxt

    def on_timer(self, env: Env, res: Res, st: DevAbsState, due: float) -> list[Signal] | None:
        hit, nxt = self._scan(env, res, st, due)
        out = []
        if hit:
            hit.sort(key=lambda x: (x[0], x[1]))
            for dl, d, i in hit:
                if i >= 0:
                    st.fired |= 1 << i
                    eid = st.ids[i]
                else:
                    c = st.extra[d]  # type: ignore[index]
                    c[2] = True
                    eid = c[1]
                out.append(self.signal(FIRE, res, _dt(dl, res), (eid,) if eid else (), d))
        if nxt is not None:
            env.arm(res, st, nxt)
        return out

    def dump(self, res: Res, st: DevAbsState) -> Any:
        return {d: [t, eid, f] for d, t, eid, f in st.items(res.devices)}

    def load(self, res: Res, data: Any) -> DevAbsState:
        st = DevAbsState(len(res.devices), 0.0)
        seen = set()
        for i, d in enumerate(res.devices):
            c = data.get(d)
            if c is None:  # a device added since: starts now, like the rest did
                c = [min((float(v[0]) for v in data.values()), default=0.0), None, False]
            st.last[i], st.ids[i] = float(c[0]), c[1]
            if c[2]:
                st.fired |= 1 << i
            seen.add(d)
        for d, c in data.items():
            if d not in seen:
                if st.extra is None:
                    st.extra = {}
                st.extra[d] = [float(c[0]), c[1], bool(c[2])]
        return st


# ------------------------------------------------------------- sequence ----


class SeqState:
    __slots__ = ("hint", "ids", "phase", "t0")
    IDLE, ARMED, WAITING, FIRED = 0, 1, 2, 3

    def __init__(self) -> None:
        self.hint: float | None = None
        self.phase = 0
        self.t0 = 0.0
        self.ids: tuple[str, ...] = ()


class SequenceRule(Rule):
    """``first`` (inside ``window``), then — from ``first`` or from a later
    ``wait_starts_on`` event — no ``unless`` event within ``wait``."""

    __slots__ = ("first", "start", "unless", "wait", "window")
    kind = "sequence"

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        first: Matcher,
        window: Window | None,
        start: Matcher | None,
        unless: Matcher,
        wait: float,
    ) -> None:
        super().__init__(*base)
        self.first = first
        self.window = window
        self.start = start
        self.unless = unless
        self.wait = wait
        t = first.types | unless.types
        self.types = t | start.types if start is not None else t

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        st: SeqState | None = res.states[self.idx]
        t = ev.type
        u = self.unless
        if t in u.types and (u.plain or u(ev)):
            # An "unless" from before the wait began (a late event of another
            # device) neither ends the wait nor the alert.
            if st is not None and not (st.phase >= 2 and ts < st.t0):
                if st.phase == 2:
                    st.phase = 0
                    st.ids = ()
                elif st.phase == 3:
                    st.phase = 0
                    ids = st.ids
                    st.ids = ()
                    return [
                        self.signal(CLEAR, res, ev.time.astimezone(res.clock.tz), (*ids, ev.id))
                    ]
            return None
        sm = self.start
        if sm is not None and t in sm.types and (sm.plain or sm(ev)):
            if st is not None and st.phase == 1:
                st.phase = 2
                st.t0 = ts
                st.ids = (*st.ids, ev.id)
                env.arm(res, st, ts + self.wait)
            return None
        f = self.first
        if t in f.types and (f.plain or f(ev)):
            if self.window is not None and not self.window.contains(res.clock, ts):
                if st is not None and st.phase == 1:
                    st.phase = 0  # an A outside the window forgets a stale one
                    st.ids = ()
                return None
            if st is None:
                st = res.states[self.idx] = SeqState()
            if st.phase == 0:
                st.ids = (ev.id,)
                if self.start is not None:
                    st.phase = 1
                else:
                    st.phase = 2
                    st.t0 = ts
                    env.arm(res, st, ts + self.wait)
            elif st.phase == 2 and self.start is not None:
                st.phase = 1
                st.ids = (ev.id,)
        return None

    def deadline(self, env: Env, res: Res, st: SeqState) -> float | None:
        return st.t0 + self.wait if st.phase == 2 else None

    def on_timer(self, env: Env, res: Res, st: SeqState, due: float) -> list[Signal] | None:
        if st.phase != 2:
            return None
        d = st.t0 + self.wait
        if d <= due:
            st.phase = 3
            return [self.signal(FIRE, res, _dt(d, res), st.ids)]
        env.arm(res, st, d)
        return None

    def dump(self, res: Res, st: SeqState) -> Any:
        return [st.phase, st.t0, list(st.ids)]

    def load(self, res: Res, data: Any) -> SeqState:
        st = SeqState()
        st.phase, st.t0, st.ids = int(data[0]), float(data[1]), tuple(data[2])
        return st


# ---------------------------------------------------------------- count ----


class CountState:
    __slots__ = ("hint", "ids", "times")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.times: list[float] = []
        self.ids: list[str] = []


class CountRule(Rule):
    """At least ``count`` matching events within ``within``; counting starts
    afresh after it fires."""

    __slots__ = ("n", "of", "span", "window")
    kind = "count"

    def __init__(
        self,
        base: tuple[str, int, str, Severity, str, str],
        of: Matcher,
        n: int,
        span: float,
        window: Window | None,
    ) -> None:
        super().__init__(*base)
        self.of = of
        self.n = n
        self.span = span
        self.window = window
        self.types = of.types

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        if not self.of(ev):
            return None
        if self.window is not None and not self.window.contains(res.clock, ts):
            return None
        st = res.states[self.idx]
        if st is None:
            st = res.states[self.idx] = CountState()
        st.times.append(ts)
        st.ids.append(ev.id)
        lo = ts - self.span
        keep = [i for i, t in enumerate(st.times) if lo <= t <= ts]
        if len(keep) != len(st.times):
            st.times = [st.times[i] for i in keep]
            st.ids = [st.ids[i] for i in keep]
        if len(st.times) >= self.n:
            ids = tuple(st.ids)
            st.times, st.ids = [], []
            return [self.signal(FIRE, res, ev.time.astimezone(res.clock.tz), ids)]
        return None

    def dump(self, res: Res, st: CountState) -> Any:
        return [st.times, st.ids]

    def load(self, res: Res, data: Any) -> CountState:
        st = CountState()
        st.times = [float(x) for x in data[0]]
        st.ids = [str(x) for x in data[1]]
        return st


# ---------------------------------------------------------------- clock ----


class ClockState:
    __slots__ = ("bad", "hint")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.bad: dict[str, str] = {}  # device -> the event that showed its clock wrong


class ClockRule(Rule):
    """A device whose clock runs ahead of the home's (or of the receiver's).

    The engine judges every event's clock itself (it must, to keep a wrong
    clock from moving the home's timers); this rule only turns the judgement
    into an alert per device, and says how far ahead is too far (``ahead``).
    It listens to no event type of its own."""

    __slots__ = ("ahead",)
    kind = "clock"

    def __init__(self, base: tuple[str, int, str, Severity, str, str], ahead: float) -> None:
        super().__init__(*base)
        self.ahead = ahead

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        return None

    def judged(self, res: Res, ev: Event, ahead: bool, at: datetime) -> list[Signal] | None:
        """The engine's verdict on ``ev``'s clock: fire once when a device is first
        seen ahead, clear when its clock is seen right again."""
        st: ClockState | None = res.states[self.idx]
        if ahead:
            if st is None:
                st = res.states[self.idx] = ClockState()
            if ev.device in st.bad:
                return None
            st.bad[ev.device] = ev.id
            return [self.signal(FIRE, res, at, (ev.id,), ev.device)]
        if st is None or ev.device not in st.bad:
            return None
        first = st.bad.pop(ev.device)
        return [self.signal(CLEAR, res, at, (first, ev.id), ev.device)]

    def dump(self, res: Res, st: ClockState) -> Any:
        return dict(st.bad)

    def load(self, res: Res, data: Any) -> ClockState:
        st = ClockState()
        st.bad = {str(k): str(v) for k, v in data.items()}
        return st
