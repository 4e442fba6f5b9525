"""The kinds that look at several events: ``sequence`` and ``count``.

A sequence waits, after its first event, for an event that ends the wait
(``unless``) and fires when none comes in time; a count fires when enough
matching events fall within a span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trygg.model import Event, Signal
from trygg.rules.kinds.base import CLEAR, FIRE, Env, Res, Rule
from trygg.rules.kinds.matcher import Matcher
from trygg.rules.windows import Window

# ------------------------------------------------------------- sequence ----


class SeqState:
    __slots__ = ("hint", "ids", "phase", "t0")
    IDLE, ARMED, WAITING, FIRED = 0, 1, 2, 3

    def __init__(self) -> None:
        self.hint: float | None = None
        self.phase = 0
        self.t0 = 0.0
        self.ids: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class SequenceRule(Rule):
    """``first`` (inside ``window``), then — from ``first`` or from a later
    ``wait_starts_on`` event — no ``unless`` event within ``wait``."""

    first: Matcher
    window: Window | None
    start: Matcher | None
    unless: Matcher
    wait: float
    kind = "sequence"

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
                    return [self.signal_at_event(CLEAR, res, ev, (*ids, ev.id))]
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
            return [self.signal_at(FIRE, res, d, st.ids)]
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


@dataclass(slots=True, eq=False)
class CountRule(Rule):
    """At least ``count`` matching events within ``within``; counting starts
    afresh after it fires."""

    of: Matcher
    n: int
    span: float
    window: Window | None
    kind = "count"

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
            return [self.signal_at_event(FIRE, res, ev, ids)]
        return None

    def dump(self, res: Res, st: CountState) -> Any:
        return [st.times, st.ids]

    def load(self, res: Res, data: Any) -> CountState:
        st = CountState()
        st.times = [float(x) for x in data[0]]
        st.ids = [str(x) for x in data[1]]
        return st
