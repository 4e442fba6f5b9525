"""The engine's timers, and the engine as a rule sees it (``Env``: ``arm``,
``heartbeat``, ``heartbeats``, ``pos``).

Each resident keeps the earliest timer hint of its rules in ``Res.next``; a
global heap of ``(hint, resident)`` wakes residents in deadline order
(``advance``). A hint is a lower bound: the rule recomputes its deadline when
woken (trygg.rules.kinds.base). :class:`trygg.rules.engine.Engine` is a
``Timers`` (a base class, not a member, so that the per-event path reaches
``_fire`` and the heap without a further attribute lookup).
"""

from __future__ import annotations

import heapq
import math
from datetime import UTC, datetime
from typing import Any

from trygg.model import Signal
from trygg.rules.kinds import Res


class Timers:
    """The residents' states, their timers and the heartbeats the rules' deadlines
    are computed from (set by the engine from its registry)."""

    def __init__(self) -> None:
        self._res: dict[str, Res] = {}
        self._wake: list[tuple[float, str]] = []
        self.now: float | None = None
        self._hb: dict[str, float] = {}
        self._hbs: dict[int, tuple[tuple[str, ...], list[float]]] = {}
        # each device's place among its resident's registered devices
        self.pos: dict[str, int] = {}

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
