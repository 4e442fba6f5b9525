"""The kinds one event decides: ``event`` and ``threshold``.

Both may hold their verdict per device for a while (an event rule's
``guard``, a threshold's ``for``): the device's pending event waits in the
state, and a timer fires it unless the rule lets it go first (a cancelling
event, a value back in range). :func:`fire_held` is that timer, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trygg.model import Event, Signal
from trygg.rules.kinds.base import CLEAR, FIRE, Env, Res, Rule
from trygg.rules.kinds.matcher import Matcher
from trygg.rules.windows import Window


def fire_held(
    rule: Rule, env: Env, res: Res, st: Any, due: list[tuple[float, str, str]], hold: float
) -> list[Signal]:
    """FIRE for each ``(since, device, event)`` held ``hold`` seconds and now due,
    in time then device order, at the end of its hold; then re-arm ``st`` for the
    devices still held."""
    out = [rule.signal_at(FIRE, res, t + hold, (eid,), dev) for t, dev, eid in sorted(due)]
    rule.rearm(env, res, st)
    return out


# ---------------------------------------------------------------- event ----


class PendState:
    __slots__ = ("hint", "pend")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.pend: dict[str, tuple[float, str]] = {}


@dataclass(slots=True, eq=False)
class EventRule(Rule):
    """An event raises an alert, optionally unless cancelled within a guard time."""

    on: Matcher
    window: Window | None
    cancel: Matcher | None
    guard: float
    kind = "event"

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        if self.on(ev):
            if self.window is not None and not self.window.contains(res.clock, ts):
                return None
            if self.guard <= 0:
                return [self.signal_at_event(FIRE, res, ev, (ev.id,), ev.device)]
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
        now = [(t, dev, eid) for dev, (t, eid) in st.pend.items() if t + self.guard <= due]
        for _, dev, _ in now:
            del st.pend[dev]
        return fire_held(self, env, res, st, now, self.guard)

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


@dataclass(slots=True, eq=False)
class ThresholdRule(Rule):
    """A value beyond a limit for a duration, per device, with a clear level."""

    on: Matcher
    limit: float
    upward: bool
    clear: float
    hold: float
    kind = "threshold"

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
                    return [self.signal_at_event(FIRE, res, ev, (ev.id,), ev.device)]
                st.dev[ev.device] = [1, ts, ev.id]
                env.arm(res, st, ts + self.hold)
            return None
        if cur[0] == 1:
            if not self._bad(v):
                del st.dev[ev.device]
            return None
        if self._cleared(v):
            del st.dev[ev.device]
            return [self.signal_at_event(CLEAR, res, ev, (ev.id,), ev.device)]
        return None

    def deadline(self, env: Env, res: Res, st: KeyedState) -> float | None:
        return min((c[1] + self.hold for c in st.dev.values() if c[0] == 1), default=None)

    def on_timer(self, env: Env, res: Res, st: KeyedState, due: float) -> list[Signal] | None:
        now = [
            (c[1], dev, c[2]) for dev, c in st.dev.items() if c[0] == 1 and c[1] + self.hold <= due
        ]
        for _, dev, _ in now:
            st.dev[dev][0] = 2
        return fire_held(self, env, res, st, now, self.hold)

    def dump(self, res: Res, st: KeyedState) -> Any:
        return st.dev

    def load(self, res: Res, data: Any) -> KeyedState:
        st = KeyedState()
        st.dev = {k: [int(v[0]), float(v[1]), str(v[2])] for k, v in data.items()}
        return st
