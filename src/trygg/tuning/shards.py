"""Worker processes for the sharded back-test and replay (issue 22): one pool,
one way to fail, one way for a worker and the parent to talk.

Used by ``trygg.tuning.backtest_shards`` and ``trygg.tuning.replay_shards``, so
that both commands fail the same way and neither keeps its own copy:

- The standard library's ``ProcessPoolExecutor`` with the ``spawn`` context
  (a fresh interpreter per worker: no forked database connections or
  threads), one task per shard.
- A worker that dies (killed, out of memory) breaks the pool: the run fails
  with ``ShardFailed`` and no result, never a partial one. An error in one
  shard sets the stop flag; the others stop at their next ``tell``/``ask``.
- ``tell(message)``: a worker's note to the parent (progress), handed to the
  parent's ``on_messages`` at its next poll. ``ask(index, message)``: the
  same, then wait for the parent's ``answer(index, value)`` (replay's shards
  ask for the end of the clock, which depends on every shard).

The queues and the stop flag reach a worker as ``initializer`` arguments (a
multiprocessing queue can only be inherited) and live in this module's
globals in the worker process only; the parent keeps nothing here.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from trygg.rules.engine import CarePlanError

POLL_S = 0.2  # how often the parent looks at the workers' messages and health


def default_jobs() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


class ShardFailed(RuntimeError):
    """A shard did not finish: the whole run has no result."""


class PlanRefused(Exception):
    """``CarePlanError`` across the process boundary (its own pickling loses
    the list of problems)."""


class Stopped(Exception):
    """The parent asked this worker to stop (another shard failed)."""


class ShardTask(Protocol):
    """What the pool needs to know of a task: which shard of how many."""

    @property
    def index(self) -> int: ...

    @property
    def shards(self) -> int: ...


T = TypeVar("T", bound=ShardTask)
R = TypeVar("R")


@dataclass(frozen=True)
class Words:
    """How a failure is told: ``a {run} worker process ended abruptly ...: {lost}``."""

    run: str  # "back-test"
    lost: str  # "the back-test is incomplete, no report was written"


# ------------------------------------------------------------- the worker --

_queue: Any = None
_stop: Any = None
_replies: Sequence[Any] = ()


def _init_worker(messages: Any, stop: Any, replies: Sequence[Any]) -> None:
    global _queue, _stop, _replies
    _queue, _stop, _replies = messages, stop, replies


def tell(message: object) -> None:
    """Send the parent a message; raises ``Stopped`` if the run is being stopped."""
    if _stop is not None and _stop.is_set():
        raise Stopped
    if _queue is not None:
        _queue.put(message)


def ask(index: int, message: object) -> Any:
    """Send the parent a message and wait for its answer to shard ``index``."""
    tell(message)
    while True:
        try:
            return _replies[index].get(timeout=POLL_S)
        except queue_mod.Empty:
            if _stop is not None and _stop.is_set():
                raise Stopped from None


def refused(exc: CarePlanError) -> PlanRefused:
    """A worker's ``CarePlanError`` as it can cross to the parent."""
    return PlanRefused(*exc.problems)


# ------------------------------------------------------------- the parent --


class Answers:
    """The parent's side of ``ask``: one reply queue per shard."""

    def __init__(self, replies: Sequence[Any]) -> None:
        self._replies = replies

    def answer(self, index: int, value: object) -> None:
        self._replies[index].put(value)


def run_tasks(
    work: Callable[[T], R],
    tasks: Sequence[T],
    *,
    jobs: int,
    words: Words,
    on_messages: Callable[[Answers, list[Any]], None] | None = None,
    replies: bool = False,
    passthrough: tuple[type[Exception], ...] = (),
) -> list[R]:
    """``work(task)`` for every task in ``jobs`` spawn workers; the results in
    the order they finished. ``on_messages(answers, messages)`` gets what the
    workers ``tell``/``ask``, at most every ``POLL_S``. With ``replies`` every
    task gets a reply queue (then ``jobs`` must be at least the number of
    tasks, or an ``ask`` waits for a task that never starts). A worker's
    exception of a ``passthrough`` type is raised as it is; any other failure
    is ``ShardFailed`` (``CarePlanError`` stays one)."""
    if not tasks:
        return []
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    stop = ctx.Event()
    jobs = min(jobs, len(tasks))
    queues = [ctx.Queue() for _ in range(max(t.index for t in tasks) + 1)] if replies else []
    if replies and jobs < len(tasks):
        raise ValueError("a run whose workers ask needs a worker per task")
    answers = Answers(queues)

    def drain() -> None:
        got: list[Any] = []
        while True:
            try:
                got.append(messages.get_nowait())
            except queue_mod.Empty:
                break
        if got and on_messages is not None:
            on_messages(answers, got)

    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(messages, stop, queues),
    )
    futures: dict[Future[R], T] = {}
    results: list[R] = []
    try:
        try:
            futures = {pool.submit(work, t): t for t in tasks}
        except (BrokenProcessPool, OSError):  # a worker died while the others started
            raise ShardFailed(
                f"a {words.run} worker process ended abruptly (killed, or out of memory?) "
                f"while the workers started: {words.lost}"
            ) from None
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            drain()
            for f in done:
                results.append(_result(f, futures, pending, words, passthrough))
        drain()
    except BaseException:
        stop.set()  # the other shards stop at their next tell or ask
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for q in [messages, *queues]:
            q.close()
            q.join_thread()
    return results


def _result(
    f: Future[R],
    futures: dict[Future[R], T],
    pending: set[Future[R]],
    words: Words,
    passthrough: tuple[type[Exception], ...],
) -> R:
    task = futures[f]
    n = task.shards
    try:
        return f.result()
    except BrokenProcessPool:
        left = sorted({futures[p].index + 1 for p in pending} | {task.index + 1})
        which = ", ".join(str(k) for k in left)
        raise ShardFailed(
            f"a {words.run} worker process ended abruptly (killed, or out of memory?) "
            f"with shard(s) {which} of {n} unfinished: {words.lost}"
        ) from None
    except PlanRefused as exc:
        raise CarePlanError(list(exc.args)) from None
    except passthrough:
        raise
    except Exception as exc:
        raise ShardFailed(
            f"shard {task.index + 1} of {n} failed: {type(exc).__name__}: "
            f"{str(exc).strip()}; {words.lost}"
        ) from exc
