"""trygg's one retry policy: how long to wait before trying again, for everything
that waits for something to come back.

A notification channel, the database, Kafka and the MQTT broker are all tried
again after a wait that doubles from ``initial`` up to ``maximum`` seconds,
each wait spread by up to ``jitter`` (a fraction of it) either way, so that
many clients that failed together (a receiver's outage, a database restart,
the drainers of several sites) do not come back in lock-step.

The loops themselves are tenacity's (``AsyncRetrying``): ``retry_async`` for a
call that raises while its service is away, ``trygg.notify.retry`` for
notifications, whose failures are results, not exceptions. Two loops must
sleep their own way and only ask the policy for each wait (``delay``): the
receiver, which waits on the runner's pipe so that it ends when the runner
does, and the drainer, which a new record or the runner's exit wakes early.

Why tenacity: its stop and retry conditions (by exception type, by result,
after a delay) compose, and its loop is tested far beyond what a hand-written
``while True: try … sleep(delay); delay *= 2`` is. Before, six such loops each
had their own factors, caps and jitter (or none).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_before_delay,
    stop_never,
)
from tenacity.wait import wait_base

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``initial * 2**(n-1)`` seconds before the
    (n+1)-th attempt, at most ``maximum``, each wait spread by up to ``jitter``
    (a fraction of it) either way."""

    initial: float = 0.5
    maximum: float = 15.0
    jitter: float = 0.25

    def wait(self, already: int = 0) -> wait_base:
        """The policy as tenacity's wait strategy (``already``: attempts made
        before the loop started, which count towards the next wait)."""
        return _Wait(self, already)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * 2 ** max(0, min(attempt, 64) - 1))
        return float(max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter))))


class _Wait(wait_base):
    def __init__(self, policy: RetryPolicy, already: int) -> None:
        self.policy = policy
        self.already = already

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.policy.delay(retry_state.attempt_number + self.already)


# The policies in use, named for what they wait for.
NOTIFY = RetryPolicy(0.5, 15.0)
"""A notification channel (the default; TRYGG_NOTIFY_RETRY_* set it)."""
SERVICE = RetryPolicy(0.2, 5.0)
"""The database or Kafka, for a call an alert or a reading waits on: back quickly."""
DRAIN = RetryPolicy(0.2, 10.0)
"""The drainer's database: the spool keeps everything meanwhile, so it can wait longer."""
BROKER = RetryPolicy(1.0, 30.0)
"""The MQTT broker, reconnecting (a fleet of ingest processes after a broker restart)."""


def logged(log: Any, message: str, **fields: Any) -> Callable[[BaseException, float], None]:
    """An ``on_retry`` that logs one warning per failure: ``message``, the error's
    first 200 characters (a driver's message, never a payload) and the wait."""

    def said(exc: BaseException, wait: float) -> None:
        log.warning(message, **fields, error=str(exc).strip()[:200], retry_in=round(wait, 2))

    return said


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    policy: RetryPolicy = SERVICE,
    on_retry: Callable[[BaseException, float], None] | None = None,
    give_up_after: float | None = None,
) -> T:
    """Await ``call()`` until it returns, retrying on the exceptions ``retry_on``
    with the policy's waits; any other exception goes straight to the caller.

    ``on_retry(exc, wait)`` is told of each failure before the wait (to log it
    or count it). ``give_up_after`` (seconds): do not start a wait that would
    end later than this after the first attempt; the last exception is raised.
    Without it, retried for as long as it takes (a task that is cancelled
    stops at once)."""

    def before_sleep(rs: RetryCallState) -> None:
        if on_retry is not None and rs.outcome is not None and rs.next_action is not None:
            exc = rs.outcome.exception()
            if exc is not None:
                on_retry(exc, rs.next_action.sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=policy.wait(),
        stop=stop_never if give_up_after is None else stop_before_delay(give_up_after),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        # A coroutine function for tenacity: it calls a plain callable (a lambda
        # returning an awaitable) without awaiting what it returns.
        return await call()

    result: T = await retrying(attempt)
    return result
