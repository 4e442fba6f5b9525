"""A home's days: each unit (waking to waking) planned as a routine with its
incidents, and the units streamed window by window with heartbeats and
devices offline applied.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from trygg.simulate.home_state import HomeState, UEvent, poisson
from trygg.simulate.incidents import (
    DEFAULT_RATES,
    FALL_CANCEL_SHARE,
    MALFORMED_KINDS,
    NIGHT_EXIT_RETURN_SHARE,
)


class HomeSim(HomeState):
    """One home's days, planned unit by unit and streamed window by window."""

    def unit(self, d: date) -> list[UEvent]:
        h = self.h
        r = self.r = random.Random(f"{self.seed}/{h.resident}/{d.isoformat()}")
        a, b = self.wake(d), self.wake(d + timedelta(days=1))
        self.ev = []
        # incident counts, drawn for every kind so applicability changes nothing else
        cnt = {k: poisson(r, self.rates.get(k, 0.0)) for k in DEFAULT_RATES}
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
