"""One home's state while its days are generated: the clock helpers, the unit's
event list, walking and staying in rooms, and the readings and conditions
that run across days (batteries, temperatures, devices offline, conditions
the home is already in at the start and their carried-over alerts).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from trygg.simulate.homes import Home
from trygg.simulate.incidents import INCIDENT_RULES, Truth


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# Seconds between PIR triggers while someone is in a room (sensor hold-off
# plus stillness): a triple (low, high) drawn uniformly.
_GAPS: dict[str, tuple[float, float]] = {
    "bedroom": (90, 360),
    "bathroom": (60, 240),
    "kitchen": (60, 300),
    "livingroom": (150, 720),
    "hallway": (30, 120),
}
_BATTERY_EVERY = 6 * 3600
_TEMP_EVERY = 900

# What the standard catalogue (rules/standard.yaml) does with a condition the
# simulation starts in, for the truth of alerts carried over from before the
# start (see ``_HomeSim.settle``): battery-low fires below 15 % and clears
# above 20 %; device-offline after 3 heartbeat intervals of silence;
# inactivity after 4 h without activity (daytime only); long-bathroom-stay
# 60 min after a bathroom motion with no activity elsewhere.
_BATTERY_LOW = 15
_BATTERY_CLEAR = 20
_OFFLINE_BEATS = 3
_INACTIVITY_S = 4 * 3600
_BATHROOM_S = 3600

# unit event: (ts, device, type, value, room, tags, flag)
# flag: 0 normal, 1 also re-sent as a duplicate, 2 malformed (value = kind)
UEvent = tuple[int, str, str, Any, str | None, Any, int]


class HomeState:
    """The state of one home while its units are generated (the days themselves:
    :class:`trygg.simulate.routine.HomeSim`)."""

    def __init__(
        self,
        home: Home,
        seed: int,
        rates: Mapping[str, float],
        start: int,
        end: int,
        truth: list[Truth] | None,
    ) -> None:
        self.h = home
        self.seed = seed
        self.rates = rates
        self.start = start
        self.end = end
        self.truth = truth
        self.tz = home.tz
        self.in_bed = True
        self.room = "bedroom"
        self.n = 0
        self.buf: list[tuple[Any, ...]] = []
        self.pos = 0
        self.offline: list[tuple[str, int, int]] = []
        # Conditions the home is in at ``start`` (they began before it), whose
        # alert depends on what the pipeline receives first: see ``settle``.
        self.seen: int | None = None  # the first event of the home at or after start
        self.carry: list[tuple[Any, ...]] = []
        # battery devices whose last report the pipeline got was low (not cleared)
        self.batt_alert: set[str] = set()
        self.low_since: dict[str, int] = {}
        self._wake: dict[date, int] = {}
        rng = random.Random(f"{seed}/{home.resident}/devices")
        self.devices = {d.id: d for d in home.devices}
        self.hb: list[tuple[str, str | None, int, int, int]] = []
        self.level: dict[str, float] = {}
        self.level_t: dict[str, int] = {}
        self.drain: dict[str, float] = {}
        self.batt_phase: dict[str, int] = {}
        self.replace_at: dict[str, int] = {}
        for i, d in enumerate(home.devices):
            room = d.room.value if d.room is not None else None
            self.hb.append((d.id, room, rng.randrange(d.heartbeat_s), d.heartbeat_s, -1 - i))
            if d.battery:
                self.level[d.id] = rng.uniform(45.0, 100.0)
                self.level_t[d.id] = start
                self.drain[d.id] = rng.uniform(0.3, 1.2) / 86400.0
                self.batt_phase[d.id] = rng.randrange(_BATTERY_EVERY)
        self.temp_phase = rng.randrange(_TEMP_EVERY)
        first = datetime.fromtimestamp(start, self.tz).date() - timedelta(days=1)
        self.next_unit = first
        self.covered = self.wake(first)
        # the state before the first unit: asleep
        self.ev: list[UEvent] = []
        self.t = 0.0
        self.r = rng

    # -- time helpers ------------------------------------------------------

    def local(self, d: date, minutes: float) -> int:
        """Epoch seconds of ``minutes`` after local midnight of ``d`` (may exceed 1440)."""
        days, m = divmod(minutes, 1440.0)
        day = d + timedelta(days=int(days))
        secs = int(m * 60)
        dt = datetime(
            day.year, day.month, day.day, secs // 3600, secs // 60 % 60, secs % 60, tzinfo=self.tz
        )
        return int(dt.timestamp())

    def wake(self, d: date) -> int:
        w = self._wake.get(d)
        if w is None:
            rng = random.Random(f"{self.seed}/{self.h.resident}/{d.isoformat()}/wake")
            # Never before 07:05: the default night window of bed-exit-no-return
            # ends at 07:00, and an ordinary morning must not look like an incident.
            m = min(max(self.h.wake_mean + rng.gauss(0, 12), 425.0), 540.0)
            w = self.local(d, m)
            if len(self._wake) > 8:
                self._wake.clear()
            self._wake[d] = w
        return w

    # -- unit building -------------------------------------------------------

    def add(
        self,
        ts: float,
        dev: str,
        typ: str,
        val: Any = None,
        room: str | None = None,
        tags: Any = None,
        flag: int = 0,
    ) -> None:
        self.ev.append((int(ts), dev, typ, val, room, tags, flag))

    def record(
        self,
        incident: str,
        ts: float,
        *,
        rules: list[str] | None = None,
        device: str | None = None,
        returned_after_s: int | None = None,
        **detail: Any,
    ) -> list[str] | None:
        """Record a truth entry; returns its event-id list to tag events with."""
        its = int(ts)
        rule = INCIDENT_RULES[incident]
        tr = Truth(
            incident=incident,
            resident=self.h.resident,
            start=datetime.fromtimestamp(its, self.tz).isoformat(),
            start_ts=its,
            expected_rule=rule,
            expected_rules=rules if rules is not None else ([rule] if rule else []),
            returned_after_s=returned_after_s,
            device=device,
            detail=detail,
        )
        if self.truth is not None and self.start <= its < self.end:
            self.truth.append(tr)
        return tr.events

    def carried(
        self, incident: str, at: int, since: float, *, device: str | None = None, **detail: Any
    ) -> list[str] | None:
        """Record the alert raised at ``at`` for a condition that began at ``since``,
        before the simulated period: the home is in it at ``start``."""
        return self.record(
            incident,
            at,
            device=device,
            carried_over=True,
            since=datetime.fromtimestamp(int(since), self.tz).isoformat(),
            **detail,
        )

    def motion(self, ts: float, room: str, tags: Any = None) -> None:
        self.add(ts, self.h.motion(room), "motion.detected", None, room, tags)

    def go(self, room: str) -> None:
        """Walk to ``room`` from the current one (through the hallway)."""
        if room == self.room:
            return
        r = self.r
        if self.room != "hallway" and room != "hallway":
            self.t += r.uniform(3, 12)
            self.motion(self.t, "hallway")
        self.t += r.uniform(4, 15)
        self.motion(self.t, room)
        self.room = room

    def stay(self, until: float) -> None:
        """Stay in the current room until ``until``, the PIR firing now and then."""
        lo, hi = _GAPS[self.room]
        r = self.r
        t = self.t + r.uniform(lo, hi)
        while t < until:
            self.motion(t, self.room)
            t += r.uniform(lo, hi)
        self.t = max(self.t, until)

    def batteries(self, a: int, b: int, low_dev: str | None, low_t: int) -> None:
        r = self.r
        for dev, phase in self.batt_phase.items():
            room = self.devices[dev].room
            rm = room.value if room is not None else None
            first = phase + math.ceil((a - phase) / _BATTERY_EVERY) * _BATTERY_EVERY
            points: list[tuple[int, int]] = [(t, 0) for t in range(first, b, _BATTERY_EVERY)]
            rep = self.replace_at.get(dev)
            if rep is not None and rep < b:
                points.append((max(rep, a), 1))
            if dev == low_dev:
                points.append((low_t, 2))
            points.sort()
            for t, what in points:
                lvl = self.level[dev] - self.drain[dev] * (t - self.level_t[dev])
                if what == 1:
                    lvl = 100.0
                    self.replace_at.pop(dev, None)
                elif what == 2:
                    lvl = r.uniform(5.0, 14.0)
                    self.replace_at[dev] = t + int(r.uniform(6, 30) * 3600)
                elif lvl < 20 and dev not in self.replace_at:
                    lvl = 100.0  # the caretaker swaps batteries on a routine visit
                self.level[dev], self.level_t[dev] = lvl, t
                v = max(0, round(lvl))
                tags = None
                if what == 2:
                    self.low_since[dev] = t
                    tags = [self.record("battery-low", t, device=dev, value=round(lvl))]
                if self.start <= t < self.end and not self.is_offline(dev, t):
                    # the pipeline gets this report
                    if v < _BATTERY_LOW:
                        if dev not in self.batt_alert:
                            self.batt_alert.add(dev)
                            if what != 2:  # low since before the start
                                since = self.low_since.get(dev, t)
                                tags = [self.carried("battery-low", t, since, device=dev, value=v)]
                    elif v > _BATTERY_CLEAR:
                        self.batt_alert.discard(dev)
                self.add(t, dev, "battery", v, rm, tags)

    def is_offline(self, dev: str, t: int) -> bool:
        return any(dv == dev and s <= t < e for dv, s, e in self.offline)

    def bathroom_at_start(self, inside: list[tuple[int, float]], out: int, stay: int) -> None:
        """A long bathroom stay that began before the start: the pipeline sees the
        first bathroom motion after the start and alerts 60 min later unless the
        resident is out of the bathroom by then. ``inside``: (index in the unit,
        time) of the motions in the bathroom; ``out``: the next motion elsewhere."""
        for i, t in inside:
            m = int(t)
            if m < self.start:
                continue
            at = m + _BATHROOM_S
            if at <= out:  # the timer is due before an event at the same time
                tags = [self.carried("long-bathroom-stay", at, inside[0][1], stay_s=stay)]
                e = self.ev[i]
                self.ev[i] = (e[0], e[1], e[2], e[3], e[4], tags, e[6])
            return

    def settle(self, chunk: list[tuple[Any, ...]], w1: int) -> None:
        """Record the alerts for conditions the home is in at the start, once
        the window that decides them is generated (``chunk``: this home's
        messages in the window ending at ``w1``, unsorted).

        The rule engine starts a resident's absence clocks (device offline,
        inactivity) at the first event it gets from the home, ``seen``: a
        device silent since before the start is reported offline 3 heartbeat
        intervals after ``seen`` unless it is heard from before, and a
        resident silent since before the start 4 h after it. (Battery levels
        and bathroom stays are decided as they are planned.)"""
        if self.seen is None:
            ts = [c[0] for c in chunk if c[8] != 2]
            if not ts:
                return
            self.seen = min(ts)
        seen = self.seen
        pending = []
        for item in self.carry:
            if item[0] == "inactivity":
                _, since, back, gap = item
                # the silence lies in the daytime window (planned 09:00-19:30)
                at = seen + _INACTIVITY_S
                if at <= back:
                    self.carried("inactivity", at, since, room="livingroom", silent_s=gap)
            else:
                _, dev, since, until = item
                at = seen + _OFFLINE_BEATS * self.devices[dev].heartbeat_s
                heard = [c[0] for c in chunk if c[3] == dev and c[8] != 2]
                if heard or w1 >= at:
                    if min(heard, default=w1) >= at:
                        iso = datetime.fromtimestamp(until, self.tz).isoformat()
                        self.carried("device-offline", at, since, device=dev, until=iso)
                else:
                    pending.append(item)
        self.carry = pending

    def temperatures(self, a: int, b: int) -> None:
        dev = self.h.device("thermometer")
        if not dev:
            return
        r = self.r
        base = self.h.temp_base
        phase = self.temp_phase
        first = phase + math.ceil((a - phase) / _TEMP_EVERY) * _TEMP_EVERY
        for t in range(first, b, _TEMP_EVERY):
            hour = (t % 86400) / 3600.0
            v = base + 1.0 * math.sin((hour - 9.0) / 24.0 * 2 * math.pi) + r.gauss(0, 0.15)
            self.add(t, dev, "temperature", round(v, 1), "livingroom")
