"""``trygg rules replay --jobs N``: replay sharded by resident across worker
processes, its stdout and stderr byte for byte the single process's.

Why it can be exact: the engine, the gates (``ReplayGates``: the offline
inhibition and fold are per resident) and the late-event policy keep their
state per resident, so a resident's signals depend only on that resident's
lines, in file order. A shard is a set of residents (the registry's, sorted
by id, dealt round-robin); each worker reads the whole file, runs the same
``replay_lines`` loop on its own residents' lines only and tags what it
prints with the place it has in the single process's output:

- **Alerts** (stdout). The single process keeps the signals in the order it
  decided them -- each event's in line order, then those of the clock's run
  to the end (``Engine.advance``) -- and sorts them by time, stably. So an
  alert's key is ``(time, 0, line, i)`` for one decided at an event (``i``:
  its place among the shard's kept signals, which follow line order), and
  ``(time, 1, deadline, resident, i)`` for one the clock's run fired:
  ``advance`` wakes residents from a heap of ``(deadline, resident)`` in that
  order (each resident's wake-ups depend only on its own state), and
  ``_TracedEngine`` notes the wake-up each signal came from. The shards'
  lists, sorted by key, merge (``heapq.merge``) into the single order.
- **The end of the clock**: without ``--until``, the latest event time of
  all residents (``Engine.watermark``, which is not simply the last line's
  time: late events and clocks running ahead do not move it). Each shard
  ``ask``\\ s the parent, which answers every shard with the maximum once all
  have finished their lines.
- **Pending timers** (stderr, after the warnings): the same keys from the
  scratch engine's wake-ups; each shard looks a horizon past its own
  earliest deadline, the parent keeps what the single process's horizon
  (past the earliest of all) lets fire.
- **Warnings** (bad, unknown-device, repeated and late lines) are at most one
  per line: merged by line number.
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

A shard that dies fails the run (``trygg.tuning.shards``, shared with the
back-test): nothing is written to stdout or stderr (but progress) until
every shard has finished. Memory: each worker holds the registry, its
residents' engine state, its dedup keys (up to twice live's set) and the
lines it will print (alerts are few; warnings one per bad line); the parent
holds all shards' lines until it prints them.
"""

from __future__ import annotations

import heapq
import math
import resource
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from pydantic import ValidationError

from trygg.alerts.gate_config import GateConfig
from trygg.model import Signal
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import CarePlanError, Engine
from trygg.rules.kinds import Res
from trygg.tuning.replay import (
    PENDING_HORIZON,
    ReplayGates,
    ReplayStats,
    device_table,
    earliest_deadline,
    keeper,
    pending_line,
    pending_timers,
    raw_signal_json,
    recent_keys,
    replay,
    replay_lines,
    signal_json,
)
from trygg.tuning.replay import _validator as validate_line
from trygg.tuning.shards import Answers, Words, ask, refused, run_tasks, tell

WORDS = Words("replay", "the replay is incomplete, no alerts were printed")
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


# ------------------------------------------------------------- the parent --


@dataclass
class ShardedReplay:
    """The sharded replay's result: counts as ``replay``'s, and how it ran."""

    stats: ReplayStats
    runs: list[ReplayShardRun] = field(default_factory=list)
    one_process: bool = False  # an undecidable repeat: replayed in one process

    @property
    def cpu_s(self) -> float:
        """The workers' process time, all shards."""
        return sum(r.cpu_s for r in self.runs)


def merge_runs(
    runs: list[ReplayShardRun], horizon: Any = PENDING_HORIZON
) -> tuple[list[str], list[str], list[str], ReplayStats]:
    """The shards' tagged lines as the single process prints them: stderr's
    warnings, stdout, stderr's pending timers; and the counts."""
    warnings = [t for _, t in heapq.merge(*(r.warnings for r in runs), key=lambda x: x[0])]
    out = [t for _, t in heapq.merge(*(r.out for r in runs), key=lambda x: x[0])]
    starts = [r.start for r in runs if r.start is not None]
    pending: list[str] = []
    if starts:
        limit = math.nextafter((min(starts) + horizon).timestamp(), -math.inf)
        merged = heapq.merge(*(r.pending for r in runs), key=lambda x: x[0])
        pending = [t for _, d, t in merged if d <= limit]
    stats = ReplayStats()
    for r in runs:
        for name in ("events", "bad", "unknown_device", "repeated", "late", "inhibited", "folded"):
            setattr(stats, name, getattr(stats, name) + getattr(r.stats, name))
    stats.lines = max((r.stats.lines for r in runs), default=0)
    stats.alerts = len(out)
    stats.pending = len(pending)
    stats.until = runs[0].end if runs else None
    return warnings, out, pending, stats


def replay_sharded(
    path: Path,
    registry: Registry,
    catalogue: Catalogue,
    *,
    jobs: int,
    until: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    raw: bool = False,
    gate_config: GateConfig | None = None,
    dedup_capacity: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ShardedReplay:
    """``replay`` of the file at ``path`` in ``jobs`` worker processes (module
    docstring): the same lines on ``out`` and ``err``, written only once every
    shard has finished, and the same counts. ``progress(bytes, lines)``: how
    far the shards are through the file, on average."""
    n = max(1, min(jobs, len(shard_of_residents(registry, 1))))
    tasks = [
        ReplayTask(k, n, str(path), registry, catalogue, until, raw, gate_config, dedup_capacity)
        for k in range(n)
    ]
    ends: dict[int, datetime | None] = {}
    where: dict[int, tuple[int, int]] = {}

    def on_messages(answers: Answers, messages: list[Any]) -> None:
        for kind, k, *rest in messages:
            if kind == "end":
                ends[k] = rest[0]
            else:
                where[k] = (rest[0], rest[1])
        if len(ends) == n and messages and any(m[0] == "end" for m in messages):
            wms = [e for e in ends.values() if e is not None]
            end = max(wms) if wms else None
            for k in range(n):
                answers.answer(k, end)
        if where and progress is not None:
            done = sum(b for b, _ in where.values()) // n
            progress(done, sum(c for _, c in where.values()) // n)

    try:
        runs = run_tasks(
            run_replay_shard,
            tasks,
            jobs=n,
            words=WORDS,
            on_messages=on_messages,
            replies=True,
            passthrough=(UndecidableRepeat,),
        )
    except UndecidableRepeat:
        with path.open("rb") as fh:
            _, stats = replay(
                fh,
                registry,
                catalogue,
                until=until,
                out=out,
                err=err,
                raw=raw,
                gate_config=gate_config,
                dedup_capacity=dedup_capacity,
            )
        return ShardedReplay(stats, one_process=True)
    runs.sort(key=lambda r: r.index)
    warnings, lines, pending, stats = merge_runs(runs)
    if err is not None:
        err.writelines(warnings)
    if out is not None:
        out.writelines(lines)
    if err is not None:
        err.writelines(pending)
    return ShardedReplay(stats, runs)
