"""The ``clock`` kind: a device whose clock runs ahead of the home's.

The engine judges the clocks itself (trygg.rules.engine); this kind turns
its verdicts into an alert per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trygg.model import Event, Signal
from trygg.rules.kinds.base import CLEAR, FIRE, Env, Res, Rule


class ClockState:
    __slots__ = ("bad", "hint")

    def __init__(self) -> None:
        self.hint: float | None = None
        self.bad: dict[str, str] = {}  # device -> the event that showed its clock wrong


@dataclass(slots=True, eq=False)
class ClockRule(Rule):
    """A device whose clock runs ahead of the home's (or of the receiver's).

    The engine judges every event's clock itself (it must, to keep a wrong
    clock from moving the home's timers); this rule only turns the judgement
    into an alert per device, and says how far ahead is too far (``ahead``).
    It listens to no event type of its own."""

    ahead: float
    kind = "clock"

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
