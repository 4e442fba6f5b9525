"""Local wall-clock time windows, correct across daylight-saving changes.

The engine measures every duration as real elapsed time (epoch seconds), and
asks a window only "is this instant inside?" or "when has this much in-window
time passed?". Window membership is decided on the resident's local wall
clock: ``22:00-07:00`` is the night as the resident's clock shows it, whether
that night is 8, 9 or 10 real hours long.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
_DAY = 86400
# UTC offsets are cached per 15-minute bucket of UTC time: every transition of
# every IANA zone in use falls on a quarter hour, so the offset is constant
# inside a bucket.
_BUCKET = 900


def parse_hhmm(text: str) -> int:
    """``"07:30"`` -> seconds after local midnight; ``"24:00"`` is the end of the day."""
    m = _HHMM.match(str(text).strip())
    if not m:
        raise ValueError(f"not a time of day: {text!r} (write e.g. 07:00 or 22:30)")
    h, mi = int(m.group(1)), int(m.group(2))
    if h == 24 and mi:
        raise ValueError(f"not a time of day: {text!r}")
    return h * 3600 + mi * 60


def format_hhmm(secs: int) -> str:
    return f"{secs // 3600:02d}:{secs % 3600 // 60:02d}"


class LocalClock:
    """Maps epoch seconds to local wall-clock time in one timezone (cached)."""

    __slots__ = ("_cache", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._cache: dict[int, int] = {}

    def offset(self, ts: float) -> int:
        b = int(ts // _BUCKET)
        off = self._cache.get(b)
        if off is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            u = datetime.fromtimestamp(b * _BUCKET, self.tz).utcoffset()
            off = int(u.total_seconds()) if u is not None else 0
            self._cache[b] = off
        return off

    def local(self, ts: float) -> tuple[int, float]:
        """(weekday Monday=0, seconds after local midnight) of an instant."""
        loc = ts + self.offset(ts)
        days = int(loc // _DAY)
        return (days + 3) % 7, loc - days * _DAY  # 1970-01-01 was a Thursday

    def local_date(self, ts: float) -> date:
        return datetime.fromtimestamp(ts, self.tz).date()

    def at(self, d: date, secs: int) -> float:
        """Epoch seconds of local ``d`` + ``secs``; a time in the spring-forward gap
        is read with the offset before the change (02:30 -> 03:30 summer time),
        one in the repeated hour of the fall-back night as its first occurrence."""
        if secs >= _DAY:
            d = d + timedelta(days=1)
            secs -= _DAY
        h, rest = divmod(secs, 3600)
        return datetime(
            d.year, d.month, d.day, h, rest // 60, rest % 60, tzinfo=self.tz
        ).timestamp()


class Window:
    """A daily local time window ``start``-``end`` (seconds after midnight),
    optionally only on some weekdays. ``end <= start`` wraps past midnight; a
    night window belongs to the weekday it starts on (Friday night = Fri 22:00
    to Sat 07:00). ``start == end`` is the whole day."""

    __slots__ = ("_cache", "days", "end", "start")

    def __init__(self, start: int, end: int, days: frozenset[int] | None = None) -> None:
        self.start = start
        self.end = end
        # (zone, local date) -> interval; pure (derived from the zone's rules)
        self._cache: dict[tuple[str, date], tuple[float, float] | None] = {}
        self.days = days if days is not None and len(days) < 7 else None

    def __repr__(self) -> str:
        d = "" if self.days is None else " " + ",".join(DAY_NAMES[i] for i in sorted(self.days))
        return f"Window({format_hhmm(self.start)}-{format_hhmm(self.end)}{d})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and (self.start, self.end, self.days) == (
            other.start,
            other.end,
            other.days,
        )

    def __hash__(self) -> int:
        return hash((self.start, self.end, self.days))

    def contains(self, clock: LocalClock, ts: float) -> bool:
        wd, sod = clock.local(ts)
        s, e, days = self.start, self.end, self.days
        if s < e:
            return s <= sod < e and (days is None or wd in days)
        if s == e:
            return days is None or wd in days
        if sod >= s:
            return days is None or wd in days
        if sod < e:
            return days is None or (wd - 1) % 7 in days
        return False

    def intervals(self, clock: LocalClock, since: float) -> list[tuple[float, float]]:
        """Not used on the hot path: the next few in-window intervals after ``since``."""
        out: list[tuple[float, float]] = []
        d0 = clock.local_date(since) - timedelta(days=1)
        for i in range(10):
            iv = self._interval(clock, d0 + timedelta(days=i))
            if iv is not None and iv[1] > since:
                out.append(iv)
        return out

    def _interval(self, clock: LocalClock, d: date) -> tuple[float, float] | None:
        key = (clock.tz.key, d)
        hit = self._cache.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        iv: tuple[float, float] | None = None
        if self.days is None or d.weekday() in self.days:
            end = self.end if self.end > self.start else self.end + _DAY
            iv = (clock.at(d, self.start), clock.at(d, end))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = iv
        return iv

    def advance(self, clock: LocalClock, since: float, duration: float) -> float | None:
        """The instant at which ``duration`` seconds of in-window time have passed
        since ``since`` (None if the window never opens in the next 400 days)."""
        remaining = duration
        d = clock.local_date(since) - timedelta(days=1)
        for _ in range(400):
            iv = self._interval(clock, d)
            d = d + timedelta(days=1)
            if iv is None:
                continue
            a, b = iv
            if b <= since:
                continue
            a = max(a, since)
            if b - a >= remaining:
                return a + remaining
            remaining -= b - a
        return None


def parse_window(value: object) -> Window:
    """``"22:00-07:00"`` or ``{"from": "22:00", "to": "07:00", "days": [...]}``."""
    days: frozenset[int] | None = None
    if isinstance(value, str):
        parts = value.replace(" ", "").split("-")
        if len(parts) != 2:
            raise ValueError(f"not a time window: {value!r} (write e.g. 22:00-07:00)")
        start, end = parse_hhmm(parts[0]), parse_hhmm(parts[1])
    elif isinstance(value, dict):
        extra = set(value) - {"from", "to", "days"}
        if extra:
            raise ValueError(f"unknown key(s) in window: {', '.join(sorted(map(str, extra)))}")
        if "from" not in value or "to" not in value:
            raise ValueError("a window needs 'from' and 'to' (e.g. from: '22:00', to: '07:00')")
        start, end = parse_hhmm(value["from"]), parse_hhmm(value["to"])
        if value.get("days") is not None:
            raw = value["days"]
            if isinstance(raw, str):
                raw = [raw]
            if not isinstance(raw, list):
                raise ValueError("window days must be a list such as [mon, tue]")
            idx = set()
            for x in raw:
                key = str(x).strip().lower()[:3]
                if key not in DAY_NAMES:
                    raise ValueError(
                        f"unknown weekday {x!r} (use mon, tue, wed, thu, fri, sat, sun)"
                    )
                idx.add(DAY_NAMES.index(key))
            days = frozenset(idx)
    else:
        raise ValueError(f"not a time window: {value!r} (write e.g. 22:00-07:00)")
    if start == 86400:
        start = 0
    if end == 86400 and start == 0:
        end = 0
    return Window(start, end % 86400 if end != 86400 else 86400, days)
