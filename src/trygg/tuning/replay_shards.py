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
- **Which shard reads a line**, and **repeated events** (live's dedup
  window, of which a shard sees only its own keys): in
  trygg.tuning.replay_shard_worker's docstring.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from trygg.alerts.gate_config import GateConfig
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.tuning.replay import PENDING_HORIZON, ReplayStats, replay
from trygg.tuning.replay_shard_worker import (
    ReplayShardRun,
    ReplayTask,
    UndecidableRepeat,
    run_replay_shard,
    shard_of_residents,
)
from trygg.tuning.shards import Answers, Words, run_tasks

WORDS = Words("replay", "the replay is incomplete, no alerts were printed")
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
