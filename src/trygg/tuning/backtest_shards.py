"""``trygg rules backtest --jobs N``: the back-test's engines sharded by resident
across worker processes, merged into exactly the single process's result.

Why it can be exact: the rule engine keeps its state per resident (timers,
sequences, device clocks, late events), so a resident's alerts depend only
on that resident's events, in the order received. A shard is a set of
residents (``trygg.store.history.resident_shards``: PostgreSQL's stable text
hash of the id, modulo N); each worker process opens its own connection and
server-side cursor on its residents' events (``EventStream`` with
``residents``: the ``(resident, time)`` index, chunk exclusion by time) and
runs ``run_engines`` -- the same engines, catalogues and registry the single
process would build, passed to it as they are. The shards' alerts are merged
in ``alert_order`` (time, then resident): ties only within one resident,
whose alerts come from one shard in the order they were decided, so the
merged lists equal the single process's, and so do the comparison and the
report made from them.

Processes: ``trygg.tuning.shards`` (shared with the sharded replay): the
standard library's ``ProcessPoolExecutor`` with the ``spawn`` context (a
fresh interpreter per worker: no forked database connections or threads). A
worker that dies (killed, out of memory) breaks the pool: the run fails with
``ShardFailed`` and no result, never a partial one. An error in one shard
stops the others at their next fetch.

Progress: each worker reports after every fetch on a queue; the parent sums
the events of all shards and averages how far through the period they are,
and calls one progress callback (the single process's bar).
"""

from __future__ import annotations

import heapq
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import CarePlanError
from trygg.tuning.backtest_engines import alert_order, run_engines
from trygg.tuning.replay import Received
from trygg.tuning.shards import (
    Answers,
    ShardFailed,
    Words,
    default_jobs,
    refused,
    run_tasks,
    tell,
)

__all__ = ["ShardFailed", "ShardRun", "ShardTask", "ShardedRunner", "default_jobs", "run_shard"]

WORDS = Words("back-test", "the back-test is incomplete, no report was written")


@dataclass(frozen=True)
class ShardTask:
    """What one worker back-tests: the events of ``residents`` in ``[start, end)``."""

    index: int
    shards: int
    database_url: str
    residents: tuple[str, ...]
    registry: Registry
    current: Catalogue
    candidate: Catalogue
    start: datetime
    end: datetime
    until: datetime
    itersize: int
    candidate_registry: Registry | None = None  # run_engines' (None: ``registry``)


@dataclass
class ShardRun:
    """One shard's engines' output and what it cost its worker."""

    index: int
    current: list[Signal]
    candidate: list[Signal]
    events: int
    late: int
    unknown_device: int
    cpu_s: float  # the worker's process time (user + system) for this shard
    wall_s: float
    maxrss_mb: float  # the worker's peak RSS


# ------------------------------------------------------------- the worker --


def run_shard(task: ShardTask) -> ShardRun:
    """Back-test one shard in this process (a worker's whole job)."""
    import psycopg

    from trygg.store.history import EventStream

    t0, c0 = time.perf_counter(), time.process_time()

    def tick(n: int, last: datetime | None) -> None:
        tell((task.index, n, last))

    name = f"trygg backtest shard {task.index + 1}/{task.shards}"
    with psycopg.connect(task.database_url, application_name=name) as conn:
        stream = EventStream(
            conn,
            task.registry,
            task.start,
            task.end,
            residents=list(task.residents),
            itersize=task.itersize,
            progress=tick,
        )
        try:
            cur, cand, n, late = run_engines(
                stream,
                task.registry,
                task.current,
                task.candidate,
                until=task.until,
                candidate_registry=task.candidate_registry,
            )
        except CarePlanError as exc:
            raise refused(exc) from None
    return ShardRun(
        task.index,
        cur,
        cand,
        n,
        late,
        stream.unknown_device,
        time.process_time() - c0,
        time.perf_counter() - t0,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


# ------------------------------------------------------------- the parent --


def merge_alerts(runs: Iterable[Sequence[Signal]]) -> list[Signal]:
    """The shards' alert lists (each in ``alert_order``) as one, in ``alert_order``."""
    return list(heapq.merge(*runs, key=alert_order))


@dataclass
class ShardedRunner:
    """``run_engines`` over the database, sharded (module docstring): give it to
    ``backtest(..., runner=...)``; the events ``backtest`` passes are not read.

    ``shards``: the residents of each shard (``resident_shards``, filtered to
    the teams asked for); empty shards get no worker. ``progress(n, last)``
    is called like ``EventStream``'s, with all shards' events and the
    average point in the period they have reached."""

    database_url: str
    shards: Sequence[Sequence[str]]
    start: datetime
    end: datetime
    itersize: int = 20_000
    jobs: int | None = None
    progress: Callable[[int, datetime | None], None] | None = None
    runs: list[ShardRun] = field(default_factory=list)

    @property
    def unknown_device(self) -> int:
        return sum(r.unknown_device for r in self.runs)

    @property
    def cpu_s(self) -> float:
        """The workers' process time, all shards."""
        return sum(r.cpu_s for r in self.runs)

    def __call__(
        self,
        events: Iterable[Event | Received],
        registry: Registry,
        current: Catalogue,
        candidate: Catalogue,
        *,
        until: datetime,
        candidate_registry: Registry | None = None,
    ) -> tuple[list[Signal], list[Signal], int, int]:
        n = len(self.shards)
        tasks = [
            ShardTask(
                k,
                n,
                self.database_url,
                tuple(rs),
                registry,
                current,
                candidate,
                self.start,
                self.end,
                until,
                self.itersize,
                candidate_registry,
            )
            for k, rs in enumerate(self.shards)
            if rs
        ]
        runs = self._run(tasks) if tasks else []
        runs.sort(key=lambda r: r.index)
        self.runs = runs
        return (
            merge_alerts(r.current for r in runs),
            merge_alerts(r.candidate for r in runs),
            sum(r.events for r in runs),
            sum(r.late for r in runs),
        )

    def _run(self, tasks: list[ShardTask]) -> list[ShardRun]:
        seen: dict[int, tuple[int, float]] = {}
        span = max((self.end - self.start).total_seconds(), 1.0)
        all_shards = len(self.shards)

        def progress(_: Answers, messages: list[Any]) -> None:
            for k, n, last in messages:
                done = (last - self.start).total_seconds() if last is not None else 0.0
                seen[k] = (n, min(max(done, 0.0), span))
            if self.progress is not None:
                total = sum(n for n, _ in seen.values())
                # shards without residents are done from the start
                empty = all_shards - len(tasks)
                mean = (sum(d for _, d in seen.values()) + empty * span) / all_shards
                self.progress(total, self.start + timedelta(seconds=mean))

        jobs = self.jobs or len(tasks)
        return run_tasks(run_shard, tasks, jobs=jobs, words=WORDS, on_messages=progress)
