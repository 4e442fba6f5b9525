"""Shift calendars: shifts in local wall-clock time, the default day, evening
and night, what a set of shifts leaves uncovered or covers twice, and the
instant a local time of day is first reached (clocks forward and back).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

__all__ = ["Shift", "coverage", "default_shifts", "local_instant"]


def parse_clock(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError('write a time of day as "HH:MM"')
    if isinstance(v, int):
        # YAML 1.1 reads an unquoted 15:00 as the sexagesimal number 900.
        if v == 0 or 60 <= v < 24 * 60:
            return time(v // 60, v % 60)
        raise ValueError('write a time of day as "HH:MM" (quoted)')
    return v


class Shift(BaseModel):
    """A shift in local wall-clock time; ``end`` before ``start`` runs past midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, v: Any) -> Any:
        return parse_clock(v)

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def default_shifts() -> list[Shift]:
    return [
        Shift(name="day", start=time(7), end=time(15)),
        Shift(name="evening", start=time(15), end=time(23)),
        Shift(name="night", start=time(23), end=time(7)),
    ]


def coverage(shifts: list[Shift]) -> list[str]:
    """Each set of shifts that overlap (at its first minute) and each gap in the day."""
    out: list[str] = []
    overlaps: set[tuple[str, ...]] = set()
    gaps: list[list[int]] = []  # [first minute, minute after]
    for minute in range(24 * 60):
        t = time(minute // 60, minute % 60)
        hits = tuple(s.name for s in shifts if s.contains(t))
        if len(hits) > 1 and hits not in overlaps:
            overlaps.add(hits)
            out.append(f"{' and '.join(hits)} overlap at {t:%H:%M}")
        if not hits:
            if gaps and gaps[-1][1] == minute:
                gaps[-1][1] = minute + 1
            else:
                gaps.append([minute, minute + 1])
    if len(gaps) > 1 and gaps[0][0] == 0 and gaps[-1][1] == 24 * 60:  # across midnight
        gaps[0][0] = gaps.pop()[0]

    def hhmm(m: int) -> str:
        return f"{m // 60 % 24:02d}:{m % 60:02d}"

    for a, b in gaps:
        span = hhmm(a) if (b - a) % (24 * 60) == 1 else f"{hhmm(a)}-{hhmm(b)}"
        out.append(f"no shift covers {span}")
    return out


def local_instant(day: date, t: time, tz: ZoneInfo) -> datetime:
    """The first instant at which local wall-clock time on ``day`` reaches ``t``.

    Usually that is simply ``t`` on ``day``. When ``t`` falls in the gap of a
    clocks-forward night (02:30 in Oslo on the last Sunday of March) it is the
    instant the clocks jump, consistent with :meth:`RoutingConfig.shift_at`.
    When ``t`` occurs twice (clocks back) it is the first occurrence.
    """
    naive = datetime.combine(day, t)
    aware = naive.replace(tzinfo=tz, fold=0)
    utc = ZoneInfo("UTC")
    if aware.astimezone(utc).astimezone(tz).replace(tzinfo=None) == naive:
        return aware
    # in a gap: search between the two readings for the jump
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(utc)
    hi = aware.astimezone(utc)
    if hi < lo:
        lo, hi = hi, lo
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(tz)
