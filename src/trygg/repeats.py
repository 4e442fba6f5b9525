"""Repeated events logged as one line per key and minute, with a count.

A device that publishes garbage, or a library retrying a connection, would
otherwise write a log line per occurrence: 499,513 dead-letter lines (99 MB)
were seen in one run. ``RepeatLimiter`` is the pure part: it counts
occurrences per key on a clock it is given and says which to log in full (the
first of a key in a while) and, once a key's minute is over, how many there
were. ``RepeatLog`` puts it in front of a logger for dead letters and the like:

    dead letter  device=bed-1 reason="not JSON: unexpected character: line 1 column 2 ..."
    dead letters: device bed-1, reason not JSON: unexpected ...: 1,234 in the last 60 s

Keys hold ids and reasons only: never payload contents (health data stays out
of the logs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

PERIOD_S = 60.0
MAX_KEYS = 1000


class _Other:
    """The key of everything beyond ``max_keys`` distinct keys in a window."""

    def __repr__(self) -> str:
        return "OTHER"


OTHER: Hashable = _Other()


@dataclass(frozen=True)
class Repeated:
    """A key's count over a window that had occurrences not logged in full."""

    key: Hashable  # OTHER for the keys beyond the limit, folded together
    count: int  # every occurrence in the window (the one logged in full included)
    seconds: float  # the window's length


class _Window:
    __slots__ = ("count", "full", "start")

    def __init__(self, start: float, count: int, full: int) -> None:
        self.start, self.count, self.full = start, count, full


class RepeatLimiter:
    """Counts occurrences per key; one in full, then a count per ``period``.

    ``hit(key)`` is True for the first occurrence of a key not seen in the
    current window: log that one in full. The others are counted. ``due()``
    gives each window that has lasted ``period`` and held occurrences not
    logged in full, with its count, and starts the key's next window (its
    occurrences counted, not logged); a window with nothing to report ends
    the key, so its next occurrence is logged in full again. Under a steady
    stream a key thus gives one line at first and one line per period after.

    At most ``max_keys`` keys have windows of their own; occurrences of new
    keys beyond that are counted together under ``OTHER``.

    Pure: no I/O, the time only from ``clock``; not thread-safe (a caller in
    several threads holds a lock).
    """

    def __init__(
        self,
        period: float = PERIOD_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if period <= 0 or max_keys < 1:
            raise ValueError("period and max_keys must be positive")
        self.period = period
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def hit(self, key: Hashable) -> bool:
        """Count one occurrence; True: log this one in full."""
        w = self._windows.get(key)
        if w is not None:
            w.count += 1
            return False
        if len(self._windows) >= self.max_keys + (OTHER in self._windows):
            other = self._windows.get(OTHER)
            if other is None:
                self._windows[OTHER] = _Window(self._clock(), 1, 0)
            else:
                other.count += 1
            return False
        self._windows[key] = _Window(self._clock(), 1, 1)
        return True

    def due(self) -> list[Repeated]:
        """The windows that have ended with occurrences not logged in full."""
        return self._close(everything=False)

    def flush(self) -> list[Repeated]:
        """Every window's unlogged occurrences, ended or not (at exit); all keys forgotten."""
        return self._close(everything=True)

    def __len__(self) -> int:
        return len(self._windows)

    def _close(self, everything: bool) -> list[Repeated]:
        now = self._clock()
        out: list[Repeated] = []
        for key, w in list(self._windows.items()):
            if not everything and now - w.start < self.period:
                continue
            if w.count > w.full:
                out.append(Repeated(key, w.count, now - w.start))
                if not everything:
                    self._windows[key] = _Window(now, 0, 0)
                    continue
            del self._windows[key]
        return out


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:[.:,]\d+)*")
_LIST = re.compile(r"'\.\.\.'(?:(?:, | or )'\.\.\.')+")


def shape(reason: str) -> str:
    """A reason with its quoted names and its numbers left out, so that one kind of
    fault is one key: ``event.time is 0:05:02 old (limit 0:05:00)`` ->
    ``event.time is N old (limit N)``; ``topic 'a/b' is not ...`` -> ``topic '...' is not ...``;
    a list of names (``'a', 'b' or 'c'``) -> ``'...'``."""
    return _NUMBER.sub("N", _LIST.sub("'...'", _QUOTED.sub("'...'", reason)))


def seconds_text(s: float) -> str:
    return f"{max(1, round(s)):,}"


class RepeatLog:
    """Logs a repeated event per device and reason: the first in full, then one line
    a minute with the count (``flush`` writes those; call it every few seconds)."""

    def __init__(
        self,
        log: Any,
        what: str = "dead letter",
        plural: str = "dead letters",
        level: str = "info",
        *,
        period: float = PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._log = log
        self._what, self._plural, self._level = what, plural, level
        self.limiter = RepeatLimiter(period, clock=clock, max_keys=max_keys)

    def note(self, device: str | None, reason: str, **fields: Any) -> None:
        """One occurrence: logged now if it is the first of its device and reason."""
        if self.limiter.hit((device or "-", shape(reason))):
            getattr(self._log, self._level)(self._what, device=device, reason=reason, **fields)

    def flush(self, everything: bool = False) -> None:
        """Log the counts of the minutes that are over (``everything``: all, at exit)."""
        for r in self.limiter.flush() if everything else self.limiter.due():
            secs = seconds_text(r.seconds)
            say = getattr(self._log, self._level)
            if r.key is OTHER:
                say(
                    f"{self._plural}: {r.count:,} of other devices and reasons"
                    f" in the last {secs} s",
                    count=r.count,
                    seconds=round(r.seconds),
                )
                continue
            assert isinstance(r.key, tuple)
            device, reason = r.key
            say(
                f"{self._plural}: device {device}, reason {reason}: {r.count:,}"
                f" in the last {secs} s",
                device=device,
                reason=reason,
                count=r.count,
                seconds=round(r.seconds),
            )
