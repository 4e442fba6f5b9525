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

Processes: the standard library's ``ProcessPoolExecutor`` with the ``spawn``
context (a fresh interpreter per worker: no forked database connections or
threads). A worker that dies (killed, out of memory) breaks the pool: the
run fails with ``ShardFailed`` and no result, never a partial one. An error
in one shard stops the others at their next fetch.

Progress: each worker reports after every fetch on a queue; the parent sums
the events of all shards and averages how far through the period they are,
and calls one progress callback (the single process's bar).
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import queue as queue_mod
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules.backtest import alert_order, run_engines
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import CarePlanError
from trygg.rules.replay import Received

POLL_S = 0.2  # how often the parent looks at the workers' progress and health


def default_jobs() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


class ShardFailed(RuntimeError):
    """A shard did not finish: the whole back-test has no result."""


class _PlanRefused(Exception):
    """``CarePlanError`` across the process boundary (its own pickling loses
    the list of problems)."""


class _Stopped(Exception):
    """The parent asked this worker to stop (another shard failed)."""


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

_progress_q: Any = None
_stop: Any = None


def _init_worker(progress_q: Any, stop: Any) -> None:
    global _progress_q, _stop
    _progress_q, _stop = progress_q, stop


def run_shard(task: ShardTask) -> ShardRun:
    """Back-test one shard in this process (a worker's whole job)."""
    import psycopg

    from trygg.store.history import EventStream

    t0, c0 = time.perf_counter(), time.process_time()

    def tick(n: int, last: datetime | None) -> None:
        if _stop is not None and _stop.is_set():
            raise _Stopped
        if _progress_q is not None:
            _progress_q.put((task.index, n, last))

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
            raise _PlanRefused(*exc.problems) from None
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
        ctx = multiprocessing.get_context("spawn")
        progress_q = ctx.Queue()
        stop = ctx.Event()
        jobs = min(self.jobs or len(tasks), len(tasks))
        seen: dict[int, tuple[int, float]] = {}
        span = max((self.end - self.start).total_seconds(), 1.0)
        all_shards = len(self.shards)

        def drain() -> None:
            got = False
            while True:
                try:
                    k, n, last = progress_q.get_nowait()
                except queue_mod.Empty:
                    break
                got = True
                done = (last - self.start).total_seconds() if last is not None else 0.0
                seen[k] = (n, min(max(done, 0.0), span))
            if got and self.progress is not None:
                total = sum(n for n, _ in seen.values())
                # shards without residents are done from the start
                empty = all_shards - len(tasks)
                mean = (sum(d for _, d in seen.values()) + empty * span) / all_shards
                self.progress(total, self.start + timedelta(seconds=mean))

        pool = ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(progress_q, stop)
        )
        futures: dict[Future[ShardRun], ShardTask] = {}
        runs: list[ShardRun] = []
        try:
            futures = {pool.submit(run_shard, t): t for t in tasks}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                drain()
                for f in done:
                    runs.append(self._result(f, futures, pending))
            drain()
        except BaseException:
            stop.set()  # the other shards stop at their next fetch
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            progress_q.close()
            progress_q.join_thread()
        return runs

    def _result(
        self,
        f: Future[ShardRun],
        futures: dict[Future[ShardRun], ShardTask],
        pending: set[Future[ShardRun]],
    ) -> ShardRun:
        task = futures[f]
        n = task.shards
        try:
            return f.result()
        except BrokenProcessPool:
            left = sorted({futures[p].index + 1 for p in pending} | {task.index + 1})
            which = ", ".join(str(k) for k in left)
            raise ShardFailed(
                f"a back-test worker process ended abruptly (killed, or out of memory?) "
                f"with shard(s) {which} of {n} unfinished: the back-test is incomplete, "
                "no report was written"
            ) from None
        except _PlanRefused as exc:
            raise CarePlanError(list(exc.args)) from None
        except Exception as exc:
            raise ShardFailed(
                f"shard {task.index + 1} of {n} failed: {type(exc).__name__}: "
                f"{str(exc).strip()}; the back-test is incomplete, no report was written"
            ) from exc
