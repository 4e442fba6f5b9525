"""One worker of ``trygg rules replay --jobs N`` (trygg.tuning.replay_shards,
whose docstring says why the merged output is the single process's): a
shard's lines of the file, its view of live's dedup window, the wake-up each
timer signal came from, and the run that tags every line it will print with
its place in the single process's output.

- **Which shard reads a line**: a byte scan finds ``"device":"<id>"`` in the
  raw line when that is unambiguous (one ``"device"`` key, no backslash in
  the line: then a valid line's device is exactly those bytes), and the
  device's resident names the shard. Only that shard validates the line. A
  line the scan cannot place is validated by every shard (rare); a line of
  no registered device, or one that fails validation, goes to shard 1, which
  reports it -- once, at its line number.
- **Repeated events**: the single process drops a repeated ``(device, id)``
  by live's ``RecentKeys``, two generations that turn over by the count of
  new keys of *all* devices, which a shard does not see. ``WindowKeys``
  decides each repeat exactly when it can without them: seen if the first
  sighting is fewer than ``capacity // 2`` lines back (at most one new key
  a line, so it is still in the window), not seen if the shard itself added
  ``capacity`` keys since (so did all shards together: it has left the
  window). A repeat between the two (never in the simulator's files, whose
  re-sends follow within seconds) raises ``UndecidableRepeat`` and
  ``replay_sharded`` replays in one process instead -- same output, no
  speed-up.
"""

from __future__ import annotations

import resource
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from trygg.alerts.gate_config import GateConfig
from trygg.model import Signal
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import CarePlanError, Engine
from trygg.rules.kinds import Res
from trygg.tuning.replay import (
    ReplayStats,
    device_table,
    earliest_deadline,
    keeper,
    pending_timers,
    recent_keys,
    replay_lines,
)
from trygg.tuning.replay_format import pending_line, raw_signal_json, signal_json, validate_line
from trygg.tuning.replay_gates import ReplayGates
from trygg.tuning.shards import ask, refused, tell

CHUNK = 1 << 20  # bytes a worker reads at a time (and then reports progress)

Key = tuple[Any, ...]


class UndecidableRepeat(Exception):
    """A repeated event whose fate in live's dedup window depends on other
    shards' events (``WindowKeys``): the run needs one process."""


def shard_of_residents(registry: Registry, shards: int) -> dict[str, int]:
    """Resident -> shard (0-based): the registry's residents sorted by id, dealt
    round-robin (even counts of residents; any split gives the same output)."""
    ids = sorted({r.id for r in registry.residents} | {d.resident for d in registry.devices})
    return {rid: i % shards for i, rid in enumerate(ids)}


# ------------------------------------------------------- a shard's pieces --


class Cursor:
    """The line a shard's loop is at (set by its line source)."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line = 0


class WindowKeys:
    """``RecentKeys``' decisions for one shard's devices (module docstring).

    ``RecentKeys(capacity)`` holds the key added ``i``-th (counting the new
    keys of all devices from 0) while ``i // h >= K // h - 1``, ``K`` the keys
    added so far, ``h = capacity // 2``. The keys added between a key's line
    ``a`` and the line ``b`` asking are at most ``b - a`` (one a line) and at
    least the shard's own; so the key is still held if ``b - a < h``, and gone
    if the shard added ``2h`` keys since. Keys are kept until the shard has
    added ``2h`` more (two generations of ``2h``), with the line each came on
    in a ring of the last ``2h``."""

    def __init__(self, capacity: int, cursor: Cursor) -> None:
        self.half = capacity // 2
        self.span = 2 * self.half
        self.cursor = cursor
        self.count = 0  # keys this shard added
        self._young: dict[tuple[str, str], int] = {}  # key -> its place in ``count``
        self._old: dict[tuple[str, str], int] = {}
        self._lines = array("q", [0]) * max(self.span, 1)

    def seen(self, key: tuple[str, str]) -> bool:
        j = self._young.get(key)
        if j is None:
            j = self._old.get(key)
        b = self.cursor.line
        if j is not None and self.count - j < self.span:
            if b - self._lines[j % self.span] < self.half:
                return True
            raise UndecidableRepeat(
                f"line {b}: a repeated event first seen {b - self._lines[j % self.span]} "
                "lines before: whether live's window still holds it depends on other shards"
            )
        c = self.count
        self._lines[c % self.span] = b
        self._young[key] = c
        self.count = c + 1
        if len(self._young) >= self.span:
            self._old, self._young = self._young, {}
        return False


class Warnings:
    """A shard's stderr lines during the loop, each with the line it is about."""

    def __init__(self, cursor: Cursor) -> None:
        self.cursor = cursor
        self.lines: list[tuple[int, str]] = []

    def write(self, text: str) -> int:
        self.lines.append((self.cursor.line, text))
        return len(text)


class _TracedEngine(Engine):
    """An engine that, while ``trace`` is a dict, notes for every timer signal
    the wake-up that fired it: ``id(signal) -> (deadline, resident, i)``, ``i``
    counting the signals in the order fired. (``advance`` calls ``_fire`` once
    per wake-up of a resident from its heap of ``(deadline, resident)``.)"""

    trace: dict[int, tuple[float, str, int]] | None = None

    def _fire(self, res: Res, upto: float, out: list[Signal]) -> None:
        trace = self.trace
        if trace is None:
            super()._fire(res, upto, out)
            return
        k = len(out)
        super()._fire(res, upto, out)
        for s in out[k:]:
            trace[id(s)] = (upto, res.id, len(trace))


KEY = b'"device":"'
KEY_SPACED = b'"device": "'


def own_lines(
    fh: BinaryIO,
    me: int,
    owner: dict[bytes, int],
    shard_of_device: dict[str, int],
    cursor: Cursor,
    kept: list[Signal],
    tags: list[int],
    progress: Callable[[int, int], None],
    chunk: int = CHUNK,
) -> Iterator[tuple[int, bytes]]:
    """The shard ``me``'s lines of ``fh``, numbered as in the whole file.

    A line's shard: its device's bytes after ``"device":"`` (``owner``; not
    registered: shard 0) when the line has one ``"device"`` and no backslash,
    else its device as validated (invalid: shard 0). Between two lines given
    out, the signals the loop kept since the previous one get its line in
    ``tags``; ``cursor`` says the line the loop is at. ``progress(bytes,
    lines)`` after every chunk read. (The scan is inlined: it runs for every
    line of the file in every worker.)"""
    n = 0
    last = 0  # the line last given out
    marked = 0  # kept signals tagged so far
    get = owner.get
    while block := fh.readlines(chunk):
        clean = b"\\" not in b"".join(block)  # one scan a block instead of one a line
        for line in block:
            n += 1
            k: int | None = None
            if (clean or b"\\" not in line) and line.count(b'"device"') == 1:
                i = line.find(KEY)
                if i >= 0:
                    i += 10
                else:
                    i = line.find(KEY_SPACED)
                    if i >= 0:
                        i += 11
                if i >= 0:
                    j = line.find(b'"', i)
                    if j >= 0:
                        k = get(line[i:j], 0)
            if k is None:
                try:
                    p = validate_line(line)
                except ValidationError:
                    k = 0
                else:
                    k = shard_of_device.get(p.device, 0)
            if k != me:
                continue
            if len(kept) != marked:
                tags.extend([last] * (len(kept) - marked))
                marked = len(kept)
            cursor.line = last = n
            yield n, line
        progress(fh.tell(), n)
    if len(kept) != marked:
        tags.extend([last] * (len(kept) - marked))
    cursor.line = n


# ------------------------------------------------------------- the worker --


@dataclass(frozen=True)
class ReplayTask:
    """What one worker replays: the lines of its residents in ``path``."""

    index: int
    shards: int
    path: str
    registry: Registry
    catalogue: Catalogue
    until: datetime | None
    raw: bool
    gate_config: GateConfig | None = None
    dedup_capacity: int | None = None


@dataclass
class ReplayShardRun:
    """One shard's output, tagged for the merge, and what it cost its worker."""

    index: int
    out: list[tuple[Key, str]]  # stdout lines, sorted by key
    warnings: list[tuple[int, str]]  # stderr lines by line number, in line order
    pending: list[tuple[Key, float, str]]  # (key, deadline, stderr line), sorted by key
    start: datetime | None  # the earliest deadline at the end (pending_timers')
    end: datetime | None  # where the clock stopped
    stats: ReplayStats
    cpu_s: float = 0.0
    wall_s: float = 0.0
    maxrss_mb: float = 0.0


def run_replay_shard(task: ReplayTask) -> ReplayShardRun:
    """Replay one shard in this process (a worker's whole job)."""
    t0, c0 = time.perf_counter(), time.process_time()
    reg = task.registry
    try:
        eng = _TracedEngine(task.catalogue, reg)
        scratch = _TracedEngine(task.catalogue, reg)
    except CarePlanError as exc:
        raise refused(exc) from None
    shard_of = shard_of_residents(reg, task.shards)
    of_device = {d.id: shard_of[d.resident] for d in reg.devices}
    owner = {d.encode(): k for d, k in of_device.items()}
    gates = None if task.raw else ReplayGates(reg, task.gate_config)
    keep = keeper(gates, task.raw)
    cursor = Cursor()
    if task.raw:
        seen = None
    else:
        capacity = recent_keys(task.dedup_capacity).capacity
        seen = WindowKeys(capacity, cursor).seen
    warnings = Warnings(cursor)
    stats = ReplayStats()
    kept: list[Signal] = []
    tags: list[int] = []

    def progress(done: int, lines: int) -> None:
        tell(("progress", task.index, done, lines))

    with Path(task.path).open("rb") as fh:
        numbered = own_lines(fh, task.index, owner, of_device, cursor, kept, tags, progress)
        replay_lines(numbered, eng, device_table(reg), seen, keep, kept, stats, warnings)
    stats.lines = cursor.line
    stats.late = eng.late_events
    end = task.until
    if end is None:
        end = ask(task.index, ("end", task.index, eng.watermark()))
    keyed: list[tuple[Key, Signal]] = [
        ((s.at.timestamp(), 0, line, i), s)
        for i, (s, line) in enumerate(zip(kept, tags, strict=True))
    ]
    if end is not None:
        eng.trace = {}
        for s in eng.advance(end):
            if keep(s):
                d, rid, i = eng.trace[id(s)]
                keyed.append(((s.at.timestamp(), 1, d, rid, i), s))
        eng.trace = None
    keyed.sort(key=lambda x: x[0])
    line_of = raw_signal_json if task.raw else signal_json
    out = [(k, line_of(s) + "\n") for k, s in keyed]
    stats.alerts = len(out)
    if gates is not None:
        stats.inhibited, stats.folded = gates.inhibited, gates.folded
    scratch.trace = {}
    pending = []
    for s in pending_timers(eng, reg, scratch=scratch):
        d, rid, i = scratch.trace[id(s)]
        pending.append(((s.at.timestamp(), d, rid, i), d, pending_line(s)))
    pending.sort(key=lambda x: x[0])
    return ReplayShardRun(
        task.index,
        out,
        warnings.lines,
        pending,
        earliest_deadline(eng),
        end,
        stats,
        time.process_time() - c0,
        time.perf_counter() - t0,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
