"""Progress of a long run on stderr: a bar on a terminal, a plain line every 5 s otherwise.

Used by ``trygg rules replay``, ``trygg rules backtest``, ``trygg simulate``,
``trygg report`` and ``trygg audit export-fhir``. Standard output stays the
command's own (replay's alerts, a report written to stdout).

- On a terminal: rich's bar (rich comes with typer), with the count, the
  share done, the time taken and the time left; it disappears at the end.
- Otherwise (a pipe, a file, a CI log): one line at most every
  ``INTERVAL_S`` seconds, the first after ``INTERVAL_S``, and a last one at
  the end if any was written, so a short run writes none::

      replay: 1,200,000 events, 60 %, 12 s

``wanted(option)`` is the commands' common default: an explicit
``--progress``/``--no-progress`` wins, else on when stderr is a terminal
(and ``CI`` is not set).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

INTERVAL_S = 5.0


def wanted(option: bool | None, stream: TextIO | None = None) -> bool:
    """``--progress``/``--no-progress`` if given, else: is stderr a terminal (and not CI)?"""
    if option is not None:
        return option
    s = stream if stream is not None else sys.stderr
    return _isatty(s) and not os.getenv("CI")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """What a run reports: ``update`` with how far it is (``done`` of ``total``, in
    any unit: bytes, seconds of event time, stages), how many items (``count``),
    and a short ``note``. This one shows nothing."""

    def update(
        self, done: float | None = None, count: int | None = None, note: str | None = None
    ) -> None:
        pass

    def advance(self, n: float = 1, note: str | None = None) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        pass


class Lines(Progress):
    """Plain lines, at most one every ``every`` seconds (pure but for ``stream``)."""

    def __init__(
        self,
        label: str,
        total: float | None,
        unit: str,
        stream: TextIO,
        *,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self._stream = stream
        self._every = INTERVAL_S if every is None else every
        self._clock = clock
        self._start = self._last = clock()
        self.done: float = 0.0
        self.count: int | None = None
        self.note: str | None = None
        self.written = 0

    def update(
        self, done: float | None = None, count: int | None = None, note: str | None = None
    ) -> None:
        if done is not None:
            self.done = done
        if count is not None:
            self.count = count
        if note is not None:
            self.note = note
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self._write(now)

    def advance(self, n: float = 1, note: str | None = None) -> None:
        self.update(self.done + n, note=note)

    def close(self, ok: bool = True) -> None:
        if self.written and ok:
            if self.total:
                self.done = max(self.done, self.total)
            self._write(self._clock(), end=True)

    def line(self, now: float, end: bool = False) -> str:
        parts = []
        if self.count is not None:
            parts.append(f"{self.count:,} {self.unit}")
        if self.total:
            share = min(max(self.done / self.total, 0.0), 1.0)
            parts.append(f"{int(share * 100)} %")
        parts.append(f"{now - self._start:,.0f} s")
        if self.note:
            parts.append(self.note)
        if end:
            parts.append("done")
        return f"{self.label}: " + ", ".join(parts)

    def _write(self, now: float, end: bool = False) -> None:
        self.written += 1
        try:
            self._stream.write(self.line(now, end) + "\n")
            self._stream.flush()
        except (ValueError, OSError):
            pass


class Bar(Progress):
    """rich's progress bar on stderr (transient: gone at the end)."""

    def __init__(self, label: str, total: float | None, unit: str, rate: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._label, self._unit, self._rate = label, unit, rate
        self._started = time.monotonic()
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[what]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(label, total=total, what="")
        self._done = 0.0

    def update(
        self, done: float | None = None, count: int | None = None, note: str | None = None
    ) -> None:
        fields: dict[str, Any] = {}
        if done is not None:
            self._done = done
            fields["completed"] = done
        if count is not None:
            what = f"{count:,} {self._unit}"
            if self._rate:
                rate = count / max(time.monotonic() - self._started, 1e-6)
                what += f", {rate:,.0f}/s"
            fields["what"] = what
        if note is not None:
            fields["description"] = f"{self._label}: {note}"
        self._bar.update(self._task, **fields)

    def advance(self, n: float = 1, note: str | None = None) -> None:
        self.update(self._done + n, note=note)

    def close(self, ok: bool = True) -> None:
        self._bar.stop()


@contextmanager
def progress(
    label: str,
    total: float | None = None,
    *,
    unit: str = "events",
    enabled: bool = True,
    rate: bool = True,
    stream: TextIO | None = None,
) -> Iterator[Progress]:
    """A ``Progress`` for a run: a bar if ``stream`` (stderr) is a terminal,
    plain lines if not, nothing if not ``enabled``."""
    if not enabled:
        yield Progress()
        return
    s = stream if stream is not None else sys.stderr
    p: Progress = Bar(label, total, unit, rate) if _isatty(s) else Lines(label, total, unit, s)
    ok = False
    try:
        yield p
        ok = True
    finally:
        p.close(ok)
