"""Event generation: daily routines, injected incidents and their ground truth.

The generator is lazy. Each home plans one *unit* at a time, from waking up
on a local date to waking up on the next (so a night is never cut in two),
as a short sorted list of behaviour events (motion, bed, door, doses,
battery and temperature readings, incidents). Heartbeats are not stored but
computed per window. The homes are merged window by window (one hour of
simulated time) with a sort, so memory stays at one unit per home plus one
window, whatever the duration.

All routine times are local wall-clock times in the resident's timezone
(zoneinfo), so daylight-saving changes move nothing: bedtime stays at 22:40
local on the night clocks go forward.

The hot path uses plain tuples and hand-built JSON, not pydantic: a week for
a thousand residents is tens of millions of events.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from trygg.simulate.homes import Home

# --------------------------------------------------------------------------
# Incidents and their rates

# incident name -> the catalogue rule expected to fire (None: not an alert)
INCIDENT_RULES: dict[str, str | None] = {
    "fall": "fall",
    "night-exit-no-return": "bed-exit-no-return",
    "left-home-at-night": "left-home-at-night",
    "inactivity": "inactivity",
    "long-bathroom-stay": "long-bathroom-stay",
    "dose-missed": "dose-missed",
    "button": "button",
    "smoke": "fire",
    "device-offline": "device-offline",
    "battery-low": "battery-low",
    "malformed": None,
    "duplicate": None,
}

# Expected occurrences per resident-day. Incidents that need a device the
# home lacks (fall detector, dispenser, smoke detector) do not happen there.
DEFAULT_RATES: dict[str, float] = {
    "fall": 0.02,
    "night-exit-no-return": 0.03,
    "left-home-at-night": 0.01,
    "inactivity": 0.02,
    "long-bathroom-stay": 0.02,
    "dose-missed": 0.05,
    "button": 0.05,
    "smoke": 0.002,
    "device-offline": 0.01,
    "battery-low": 0.01,
    "malformed": 0.02,
    "duplicate": 0.1,
}

# Share of night exits where the resident does come back, after 21-29 min
# (after the default 20 min, so material for tuning the wait).
NIGHT_EXIT_RETURN_SHARE = 0.4
# Share of falls the resident cancels on the detector within seconds.
FALL_CANCEL_SHARE = 0.15

MALFORMED_KINDS = (
    "truncated-json",
    "not-json",
    "unknown-type",
    "missing-id",
    "bad-time",
    "value-out-of-range",
    "unknown-device",
)


def make_rates(
    overrides: Mapping[str, float] | None = None, scale: float = 1.0
) -> dict[str, float]:
    """The default rates with ``overrides`` applied, all multiplied by ``scale``."""
    rates = dict(DEFAULT_RATES)
    for k, v in (overrides or {}).items():
        if k not in DEFAULT_RATES:
            known = ", ".join(DEFAULT_RATES)
            raise ValueError(f"unknown incident {k!r} (known: {known})")
        if v < 0 or not math.isfinite(v):
            raise ValueError(f"rate for {k!r} must be a non-negative number, not {v!r}")
        rates[k] = float(v)
    if scale < 0:
        raise ValueError("the incident scale cannot be negative")
    return {k: v * scale for k, v in rates.items()}


@dataclass(slots=True)
class Truth:
    """One injected incident, for checking what the pipeline makes of it.

    ``events`` lists the ids of the key events (filled in as they are
    generated: read it after the event iterator is exhausted). A record with
    ``detail["carried_over"]`` is the alert for a condition a home is in at
    the start, begun before it (``detail["since"]``); its ``start`` is when
    the standard catalogue raises that alert (docs/simulator.md).
    """

    incident: str
    resident: str
    start: str
    start_ts: int
    expected_rule: str | None
    expected_rules: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    returned_after_s: int | None = None
    device: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "resident": self.resident,
            "start": self.start,
            "returned_after_s": self.returned_after_s,
            "events": list(self.events),
            "expected_rule": self.expected_rule,
            "expected_rules": list(self.expected_rules),
            "device": self.device,
            "detail": dict(self.detail),
        }


# --------------------------------------------------------------------------
# Events


class SimEvent(NamedTuple):
    """One generated message.

    ``ts`` is the event time in epoch seconds, ``time`` the same as ISO 8601
    with the local offset. A ``duplicate`` is a re-send of the event just
    before it (same id and payload). A malformed message has ``malformed``
    set to its kind and ``raw`` to the bytes to publish; it is not an event.
    """

    ts: int
    device: str
    id: str
    type: str
    time: str
    value: float | int | None = None
    room: str | None = None
    duplicate: bool = False
    malformed: str | None = None
    raw: bytes | None = None

    def payload(self) -> dict[str, Any]:
        """The MQTT payload object (DESIGN.md contract)."""
        p: dict[str, Any] = {"id": self.id, "type": self.type, "time": self.time}
        if self.value is not None:
            p["value"] = self.value
        if self.room is not None:
            p["room"] = self.room
        return p

    def payload_json(self) -> str:
        if self.raw is not None:
            return self.raw.decode("utf-8", "replace")
        s = f'{{"id":"{self.id}","type":"{self.type}","time":"{self.time}"'
        if self.value is not None:
            s += f',"value":{self.value}'
        if self.room is not None:
            s += f',"room":"{self.room}"'
        return s + "}"

    def payload_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return self.payload_json().encode()

    def jsonl(self) -> str:
        """The replay line: the payload plus ``"device"`` (no newline)."""
        return f'{{"device":"{self.device}",' + self.payload_json()[1:]


class _TimeFormat:
    """Epoch seconds -> ISO 8601 local time with offset, cached per minute."""

    __slots__ = ("cache", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.cache: dict[int, tuple[str, str]] = {}

    def __call__(self, ts: int) -> str:
        m = ts // 60
        p = self.cache.get(m)
        if p is None:
            dt = datetime.fromtimestamp(m * 60, self.tz)
            off = dt.utcoffset() or timedelta(0)
            secs = int(off.total_seconds())
            sign = "+" if secs >= 0 else "-"
            hh, mm = divmod(abs(secs) // 60, 60)
            p = (dt.strftime("%Y-%m-%dT%H:%M:"), f"{sign}{hh:02d}:{mm:02d}")
            if len(self.cache) > 100_000:
                self.cache.clear()
            self.cache[m] = p
        return f"{p[0]}{ts % 60:02d}{p[1]}"


def _poisson(rng: random.Random, lam: float) -> int:
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
_UEvent = tuple[int, str, str, Any, str | None, Any, int]


class _HomeSim:
    """The state of one home while its units are generated."""

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
        self.ev: list[_UEvent] = []
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

    def unit(self, d: date) -> list[_UEvent]:
        h = self.h
        r = self.r = random.Random(f"{self.seed}/{h.resident}/{d.isoformat()}")
        a, b = self.wake(d), self.wake(d + timedelta(days=1))
        self.ev = []
        # incident counts, drawn for every kind so applicability changes nothing else
        cnt = {k: _poisson(r, self.rates.get(k, 0.0)) for k in DEFAULT_RATES}
        bed = h.device("bed") or ""
        door = h.device("door") or ""
        fall_dev, disp, smoke, button = (
            h.device("fall"),
            h.device("dispenser"),
            h.device("smoke"),
            h.device("button"),
        )
        day_options = [
            k
            for k in ("fall", "inactivity", "long-bathroom-stay")
            if cnt[k] and (k != "fall" or fall_dev)
        ]
        day_inc = r.choice(day_options) if day_options else None
        night_options = [k for k in ("night-exit-no-return", "left-home-at-night") if cnt[k]]
        night_inc = r.choice(night_options) if night_options else None
        blocks: list[tuple[float, float]] = []

        # ---- morning
        self.t = float(a)
        if self.in_bed:
            self.add(a, bed, "bed.vacant", None, "bedroom")
            self.in_bed = False
            self.room = "bedroom"
            self.motion(a + r.uniform(5, 30), "bedroom")
            self.t = a + 30.0
            self.stay(self.t + r.uniform(3, 8) * 60)
        self.go("bathroom")
        self.stay(self.t + r.uniform(8, 20) * 60)
        self.go("kitchen")
        self.stay(self.t + r.uniform(15, 35) * 60)
        bedtime = self.local(d, min(max(h.bed_mean + r.gauss(0, 15), 1290.0), 1438.0))

        # ---- the day: anchors in time order, living room in between
        anchors: list[tuple[float, int, str, float]] = []
        anchors.append((self.local(d, r.uniform(720, 780)), 0, "meal", r.uniform(15, 35) * 60))
        if r.random() < 0.6:
            anchors.append((self.local(d, r.uniform(840, 930)), 1, "meal", r.uniform(8, 20) * 60))
        anchors.append((self.local(d, r.uniform(990, 1080)), 2, "meal", r.uniform(30, 60) * 60))
        x = self.t + r.uniform(100, 220) * 60
        i = 10
        while x < bedtime - 3600:
            anchors.append((x, i, "bath", r.uniform(3, 10) * 60))
            x += r.uniform(100, 220) * 60
            i += 1
        out_p = r.random()
        if day_inc is None and out_p < h.outing_prob:
            anchors.append((self.local(d, r.uniform(600, 900)), 3, "out", r.uniform(45, 180) * 60))
        if day_inc == "fall":
            anchors.append((self.local(d, r.uniform(600, 1080)), 4, "fall", 0.0))
        elif day_inc == "inactivity":
            anchors.append((self.local(d, r.uniform(540, 840)), 4, "inactivity", 0.0))
        elif day_inc == "long-bathroom-stay":
            anchors.append((self.local(d, r.uniform(540, 1020)), 4, "longbath", 0.0))
        anchors.sort()
        for at, _, kind, dur in anchors:
            if at > self.t:
                self.go("livingroom")
                self.stay(at)
            elif kind == "bath" and self.t - at > 1800:
                continue
            if kind == "meal":
                self.go("kitchen")
                self.stay(self.t + dur)
            elif kind == "bath":
                self.go("bathroom")
                self.stay(self.t + dur)
            elif kind == "out":
                self.go("hallway")
                t_open = self.t + r.uniform(10, 40)
                self.add(t_open, door, "door.opened", None, "entrance")
                self.add(t_open + r.uniform(5, 40), door, "door.closed", None, "entrance")
                back = t_open + 60 + dur
                self.add(back, door, "door.opened", None, "entrance")
                self.add(back + r.uniform(5, 30), door, "door.closed", None, "entrance")
                self.t = back + 35
                self.room = "entrance"
                self.go("hallway")
                blocks.append((t_open, back))
            elif kind == "fall":
                if self.room in ("bathroom", "hallway"):
                    self.go("livingroom")
                self.t += r.uniform(20, 120)
                self.motion(self.t, self.room)
                self.t += r.uniform(2, 10)
                assert fall_dev is not None
                cancelled = r.random() < FALL_CANCEL_SHARE
                canc_after = int(r.uniform(5, 25)) if cancelled else None
                tags = [
                    self.record(
                        "fall",
                        self.t,
                        device=fall_dev,
                        room=self.room,
                        cancelled_after_s=canc_after,
                    )
                ]
                self.add(self.t, fall_dev, "fall.detected", None, None, tags)
                if canc_after is not None:
                    self.add(self.t + canc_after, fall_dev, "fall.cancelled", None, None, tags)
                    self.t += canc_after + 30
                else:
                    # lies still until staff arrive
                    gap = r.uniform(30, 90) * 60
                    t0 = self.t
                    self.t += gap
                    self.add(self.t, door, "door.opened", None, "entrance")
                    self.add(self.t + r.uniform(5, 20), door, "door.closed", None, "entrance")
                    self.t += 25
                    self.room = "entrance"
                    self.go("hallway")
                    self.go("livingroom")
                    blocks.append((t0, self.t))
            elif kind == "inactivity":
                self.go("livingroom")
                self.t += r.uniform(20, 90)
                t0 = self.t
                gap = r.uniform(270, 330) * 60
                tags = [self.record("inactivity", t0, room="livingroom", silent_s=int(gap))]
                self.motion(t0, "livingroom", tags)
                self.t = t0 + gap
                self.motion(self.t, "livingroom", tags)
                blocks.append((t0, self.t))
                if int(t0) < self.start <= int(self.t):
                    # silent at the start: the clock starts with the home's first event
                    self.carry.append(("inactivity", int(t0), int(self.t), int(gap)))
            elif kind == "longbath":
                self.go("hallway")
                self.t += r.uniform(4, 15)
                t0 = self.t
                stay = r.uniform(65, 120) * 60
                tags = [self.record("long-bathroom-stay", t0, stay_s=int(stay))]
                inside = [(len(self.ev), t0)]
                self.motion(t0, "bathroom", tags)
                self.room = "bathroom"
                t = t0 + r.uniform(300, 1200)
                while t < t0 + stay:
                    inside.append((len(self.ev), t))
                    self.motion(t, "bathroom")
                    t += r.uniform(300, 1200)
                self.t = t0 + stay
                self.go("hallway")
                blocks.append((t0, self.t))
                if int(t0) < self.start:
                    self.bathroom_at_start(inside, int(self.t), int(stay))

        # ---- evening
        ev_bath = bedtime - r.uniform(15, 30) * 60
        if ev_bath > self.t:
            self.go("livingroom")
            self.stay(ev_bath)
        self.go("bathroom")
        self.stay(self.t + r.uniform(5, 12) * 60)
        self.go("bedroom")
        self.stay(self.t + r.uniform(2, 6) * 60)
        bed_t = max(float(bedtime), self.t + 30)
        self.add(bed_t, bed, "bed.occupied", None, "bedroom")
        self.in_bed = True
        self.t = bed_t

        # ---- the night
        night_block: tuple[float, float] | None = None
        if night_inc == "night-exit-no-return":
            t0 = max(float(self.local(d, r.uniform(1440, 1740))), bed_t + 1800)
            if t0 <= b - 6000:
                returned = r.random() < NIGHT_EXIT_RETURN_SHARE
                ret_s = int(r.uniform(1260, 1740)) if returned else None
                tags = [self.record("night-exit-no-return", t0, device=bed, returned_after_s=ret_s)]
                self.add(t0, bed, "bed.vacant", None, "bedroom", tags)
                self.in_bed = False
                self.t, self.room = t0, "bedroom"
                self.go(r.choice(("kitchen", "livingroom")))
                if ret_s is not None:
                    self.stay(t0 + ret_s - 90)
                    self.go("bedroom")
                    self.add(t0 + ret_s, bed, "bed.occupied", None, "bedroom", tags)
                    self.in_bed = True
                    night_block = (t0 - 2700, t0 + ret_s + 2700)
                else:
                    self.go("livingroom")
                    self.stay(b - 60)
                    night_block = (t0 - 2700, float(b))
        elif night_inc == "left-home-at-night":
            td = float(self.local(d, r.uniform(1395, 1680)))
            if td < bed_t + 1200:
                td = bed_t + r.uniform(20, 40) * 60
            ret_s = int(r.uniform(40, 150) * 60)
            latest_door = self.local(d, 1440 + 330)
            if td + ret_s > b - 1200:
                ret_s = int(b - 1200 - td)
            if td <= latest_door and ret_s >= 1800:
                tv = td - r.uniform(120, 400)
                rules = ["left-home-at-night", "bed-exit-no-return"]
                if int(tv) < self.start:  # a bed exit before the start is not seen
                    rules = rules[:1]
                tags = [
                    self.record(
                        "left-home-at-night",
                        td,
                        rules=rules,
                        device=door,
                        returned_after_s=ret_s,
                        bed_vacant=datetime.fromtimestamp(int(tv), self.tz).isoformat(),
                    )
                ]
                self.add(tv, bed, "bed.vacant", None, "bedroom", tags)
                self.t, self.room = tv, "bedroom"
                self.motion(tv + r.uniform(5, 30), "bedroom")
                self.t = tv + 40
                self.go("hallway")
                self.add(td, door, "door.opened", None, "entrance", tags)
                self.add(td + r.uniform(5, 30), door, "door.closed", None, "entrance", tags)
                back = td + ret_s
                self.add(back, door, "door.opened", None, "entrance", tags)
                self.add(back + r.uniform(5, 20), door, "door.closed", None, "entrance")
                self.t, self.room = back + 25, "entrance"
                self.go("hallway")
                self.go("bedroom")
                self.t += r.uniform(20, 90)
                self.add(self.t, bed, "bed.occupied", None, "bedroom", tags)
                night_block = (tv - 2700, self.t + 2700)
        # ordinary visits to the bathroom
        after_night = (self.in_bed, self.room if not self.in_bed else "bedroom")
        k = r.choices((0, 1, 2), weights=h.night_visit_weights)[0]
        lo, hi = bed_t + 2700, b - 2700
        visits: list[float] = sorted(r.uniform(lo, hi) for _ in range(k)) if hi > lo else []
        last = -1e18
        for tv in visits:
            if tv - last < 2700:
                continue
            if night_block and night_block[0] <= tv <= night_block[1]:
                continue
            self.add(tv, bed, "bed.vacant", None, "bedroom")
            self.t, self.room = tv, "bedroom"
            self.go("bathroom")
            self.stay(self.t + r.uniform(120, 420))
            self.go("bedroom")
            self.t += r.uniform(10, 40)
            self.add(self.t, bed, "bed.occupied", None, "bedroom")
            last = self.t
        self.in_bed, self.room = after_night

        # ---- doses
        if disp:
            missed_i = r.randrange(len(h.dose_times)) if cnt["dose-missed"] and h.dose_times else -1
            for i, m in enumerate(h.dose_times):
                sched = self.local(d, m)
                if i == missed_i:
                    tm = sched + 3600
                    tags = [self.record("dose-missed", tm, device=disp)]
                    self.add(tm, disp, "dose.missed", None, "kitchen", tags)
                    continue
                taken = max(sched, a + 600) + r.uniform(60, 900)
                for s, e in blocks:
                    if s <= taken < e:
                        taken = e + r.uniform(120, 600)
                self.add(taken, disp, "dose.taken", None, "kitchen")

        # ---- overlays
        busy: set[str | None] = set()
        if cnt["button"] and button:
            tb = r.uniform(a, b - 3600)
            tags = [self.record("button", tb, device=button)]
            self.add(tb, button, "button.pressed", None, None, tags)
            self.add(tb + r.uniform(600, 2400), button, "alarm.reset", None, None)
            busy.add(button)
        if cnt["smoke"] and smoke:
            ts = self.local(d, r.uniform(960, 1140))
            tags = [self.record("smoke", ts, device=smoke)]
            self.add(ts, smoke, "smoke.detected", None, "kitchen", tags)
            busy.add(smoke)
        if day_inc == "fall":
            busy.add(fall_dev)
        if cnt["dose-missed"]:
            busy.add(disp)
        low_dev: str | None = None
        # a battery that is low already (or still low to the pipeline) cannot go low again
        low = self.batt_alert.union(self.replace_at)
        batt_devs = [dv for dv in sorted(self.level) if dv not in low]
        if cnt["battery-low"] and batt_devs:
            low_dev = r.choice(batt_devs)
            busy.add(low_dev)
        low_t = self.local(d, r.uniform(540, 1200))
        if cnt["device-offline"] and day_inc is None:
            cands = [
                dv.id
                for dv in h.devices
                if dv.id not in busy and dv.id != h.by_role.get("motion-livingroom")
            ]
            dev = r.choice(cands)
            # not before the unit's start: its events are generated from there on
            s = max(self.local(d, r.uniform(480, 720)), a)
            e = s + int(r.uniform(2, 7) * 3600)
            self.record(
                "device-offline",
                s,
                device=dev,
                until=datetime.fromtimestamp(e, self.tz).isoformat(),
            )
            self.offline.append((dev, s, e))
            if s < self.start < e:
                self.carry.append(("device-offline", dev, s, e))
        self.batteries(a, b, low_dev, low_t)
        self.temperatures(a, b)
        for _ in range(cnt["malformed"]):
            t_bad = r.uniform(a, b)
            dev = r.choice(h.devices).id
            kind = r.choice(MALFORMED_KINDS)
            self.record("malformed", t_bad, device=dev, kind=kind)
            self.add(t_bad, dev, "!", kind, None, None, 2)

        ev = self.ev
        ev.sort(key=lambda e: e[0])
        if cnt["duplicate"] and ev:
            for _ in range(cnt["duplicate"]):
                j = r.randrange(len(ev))
                e0 = ev[j]
                if e0[6] != 0:
                    continue
                tags = [self.record("duplicate", e0[0], device=e0[1], type=e0[2])]
                if e0[5]:
                    tags = [*e0[5], *tags]
                ev[j] = (e0[0], e0[1], e0[2], e0[3], e0[4], tags, 1)
        self.ev = []
        return ev

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

    # -- streaming -----------------------------------------------------------

    def collect(self, w0: int, w1: int, out: list[tuple[Any, ...]]) -> None:
        """Append this home's events in [w0, w1) to ``out`` (unsorted)."""
        while self.covered < w1:
            d = self.next_unit
            self.next_unit = d + timedelta(days=1)
            unit_end = self.wake(self.next_unit)
            if unit_end > self.start:
                hi = self.h.index
                n = self.n
                fresh = []
                for e in self.unit(d):
                    fresh.append((e[0], hi, n, *e[1:]))
                    n += 1
                self.n = n
                rest = self.buf[self.pos :]
                if rest and fresh and fresh[0][0] < rest[-1][0]:
                    rest.extend(fresh)
                    rest.sort()
                    self.buf = rest
                else:
                    self.buf = rest + fresh
                self.pos = 0
            self.covered = unit_end
        buf, pos, nbuf = self.buf, self.pos, len(self.buf)
        while pos < nbuf and buf[pos][0] < w0:
            pos += 1
        i0 = pos
        while pos < nbuf and buf[pos][0] < w1:
            pos += 1
        self.pos = pos
        chunk = buf[i0:pos]
        hi = self.h.index
        for dev, room, phase, iv, hn in self.hb:
            first = phase + -((phase - w0) // iv) * iv
            chunk.extend(
                [(t, hi, hn, dev, "heartbeat", None, room, None, 0) for t in range(first, w1, iv)]
            )
        if self.offline:
            self.offline = [o for o in self.offline if o[2] > w0]
            active = [o for o in self.offline if o[1] < w1]
            if active:
                chunk = [
                    c for c in chunk if not any(c[3] == dv and s <= c[0] < e for dv, s, e in active)
                ]
        if self.carry or self.seen is None:
            self.settle(chunk, w1)
        out.extend(chunk)


def _malformed(ev: SimEvent, kind: str, seed: int) -> SimEvent:
    r = random.Random(f"{seed}/malformed/{ev.device}/{ev.ts}")
    good = f'{{"id":"m-{ev.ts}","type":"heartbeat","time":"{ev.time}"}}'
    device = ev.device
    if kind == "truncated-json":
        raw = good[: r.randrange(1, len(good) - 1)].encode()
    elif kind == "not-json":
        raw = bytes(r.randrange(256) for _ in range(r.randrange(1, 40)))
    elif kind == "unknown-type":
        raw = good.replace('"heartbeat"', '"bed.levitating"').encode()
    elif kind == "missing-id":
        raw = f'{{"type":"heartbeat","time":"{ev.time}"}}'.encode()
    elif kind == "bad-time":
        raw = good.replace(ev.time, ev.time[:19]).encode()  # no offset
    elif kind == "value-out-of-range":
        raw = f'{{"id":"m-{ev.ts}","type":"battery","time":"{ev.time}","value":250}}'.encode()
    else:  # unknown-device: a valid payload under a topic nobody registered
        device = "ghost-" + device
        raw = good.encode()
    return ev._replace(device=device, malformed=kind, raw=raw)


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("simulation start and end must be timezone-aware")
    return int(t.timestamp())


def generate(
    homes: list[Home],
    start: datetime,
    end: datetime,
    seed: int = 1,
    rates: Mapping[str, float] | None = None,
    truth: list[Truth] | None = None,
    *,
    window: int = 3600,
) -> Iterator[SimEvent]:
    """Generate the homes' events in [start, end), time-ordered and lazily.

    ``rates`` (see ``make_rates``/``DEFAULT_RATES``) are expected incidents
    per resident-day. Injected incidents are appended to ``truth`` as they
    are planned (the alerts for conditions carried over from before
    ``start`` once the first events decide them); their ``events`` fill in
    as the events are generated.
    Event ids are ``e-NNNNNN``, unique in the whole run (so per device too).
    Equal times are ordered by home, then by generation order.
    """
    s, e = _epoch(start), _epoch(end)
    rates = dict(DEFAULT_RATES) if rates is None else dict(rates)
    sims = [_HomeSim(h, seed, rates, s, e, truth) for h in homes]
    fmts: dict[str, _TimeFormat] = {}
    by_index: dict[int, _TimeFormat] = {}
    for h in homes:
        by_index[h.index] = fmts.setdefault(h.timezone, _TimeFormat(h.tz))
    counter = 0
    w = s
    while w < e:
        w1 = min(w + window, e)
        batch: list[tuple[Any, ...]] = []
        for sim in sims:
            sim.collect(w, w1, batch)
        batch.sort()
        for ts, hi, _n, dev, typ, val, room, tags, flag in batch:
            tstr = by_index[hi](ts)
            if flag == 2:
                yield _malformed(SimEvent(ts, dev, "", "", tstr), val, seed)
                continue
            counter += 1
            eid = f"e-{counter:06d}"
            if tags:
                for lst in tags:
                    lst.append(eid)
            ev = SimEvent(ts, dev, eid, typ, tstr, val, room)
            yield ev
            if flag == 1:
                yield ev._replace(duplicate=True)
        w = w1
