"""The ``absence`` kind: no matching event for a while, per resident or per device.

Both rules start counting when a resident is first seen (``starts``,
:meth:`AbsenceBase.on_start`), fire when the silence reaches its length and
clear at the next event from after the silence began. Per resident the
silence may count only inside a local window; per device its length may be a
multiple of the device's heartbeat interval.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

from trygg.model import Event, Signal
from trygg.rules.kinds.base import CLEAR, FIRE, Env, Res, Rule
from trygg.rules.kinds.matcher import Matcher
from trygg.rules.windows import Window


@dataclass(slots=True, eq=False)
class AbsenceBase(Rule):
    """What both absence rules share: what breaks the silence (``of``), and the
    state made and armed when a resident is first seen."""

    of: Matcher
    kind = "absence"
    starts = True

    def fresh(self, res: Res, ts: float) -> Any:
        """A new state for a resident first seen at ``ts``."""
        raise NotImplementedError

    def on_start(self, env: Env, res: Res, ts: float) -> None:
        st = res.states[self.idx] = self.fresh(res, ts)
        self.rearm(env, res, st)


class AbsState:
    __slots__ = ("fired", "hint", "last", "last_id")

    def __init__(self, last: float, last_id: str | None) -> None:
        self.hint: float | None = None
        self.last = last
        self.last_id = last_id
        self.fired = False


@dataclass(slots=True, eq=False)
class AbsenceRule(AbsenceBase):
    """No matching event for a duration (per resident), optionally counted only
    inside a local time window."""

    span: float
    window: Window | None

    def fresh(self, res: Res, ts: float) -> AbsState:
        return AbsState(ts, None)

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
            out = [self.signal_at_event(CLEAR, res, ev, (ev.id,))]
        if st.hint is None:
            self.rearm(env, res, st)
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
            return [self.signal_at(FIRE, res, d, ids)]
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


@dataclass(slots=True, eq=False)
class DeviceAbsenceRule(AbsenceBase):
    """No matching event from a device for a duration or a multiple of its
    heartbeat interval, per device."""

    span: float | None
    beats: float | None

    def fresh(self, res: Res, ts: float) -> DevAbsState:
        return DevAbsState(len(res.devices), ts)

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
            return [self.signal_at_event(CLEAR, res, ev, (ev.id,), dev)]
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
            out = [self.signal_at_event(CLEAR, res, ev, (ev.id,), ev.device)]
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
                out.append(self.signal_at(FIRE, res, dl, (eid,) if eid else (), d))
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
