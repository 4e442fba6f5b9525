"""trygg's one retry policy (trygg.retry): the waits it gives, and the loop
every service call that waits for the database, Kafka or a broker goes through."""

from __future__ import annotations

import asyncio
import random

import pytest

from trygg.retry import BROKER, DRAIN, SERVICE, RetryPolicy, retry_async

FAST = RetryPolicy(0.001, 0.004, jitter=0.25)


def test_waits_double_to_the_cap_and_jitter_stays_within_its_share() -> None:
    random.seed(7)
    p = RetryPolicy(1.0, 30.0, jitter=0.25)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (60, 30.0)]:
        waits = [p.delay(attempt) for _ in range(200)]
        assert min(waits) >= base * 0.75 and max(waits) <= base * 1.25, (attempt, waits)
        assert len(set(waits)) > 100  # spread: clients that failed together come back apart
    assert RetryPolicy(1.0, 30.0).delay(10**6) <= 37.5  # no overflow on a long outage


def test_the_named_policies() -> None:
    # an alert waits on the database or Kafka: back within 5 s at most (plus jitter)
    assert max(SERVICE.delay(n) for n in range(1, 40)) <= 5.0 * 1.25
    assert DRAIN.maximum == 10.0 and BROKER.maximum == 30.0


def test_retry_async_retries_what_it_is_told_until_it_works() -> None:
    calls = 0
    told: list[tuple[str, float]] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionError(f"down {calls}")
        return "stored"

    got = asyncio.run(
        retry_async(
            flaky,
            retry_on=ConnectionError,
            policy=FAST,
            on_retry=lambda exc, wait: told.append((str(exc), wait)),
        )
    )
    assert got == "stored" and calls == 4
    assert [m for m, _ in told] == ["down 1", "down 2", "down 3"]
    assert all(0 < w <= 0.004 * 1.25 for _, w in told)


def test_a_lambda_returning_an_awaitable_is_awaited() -> None:
    async def value() -> int:
        return 42

    assert asyncio.run(retry_async(lambda: value(), retry_on=OSError, policy=FAST)) == 42


def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bad statement, not an outage")

    with pytest.raises(ValueError, match="not an outage"):
        asyncio.run(retry_async(broken, retry_on=ConnectionError, policy=FAST))
    assert calls == 1


def test_give_up_after_raises_the_last_error() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise OSError(f"refused {calls}")

    with pytest.raises(OSError, match="refused") as info:
        asyncio.run(retry_async(down, retry_on=OSError, policy=FAST, give_up_after=0.05))
    assert calls > 2 and str(info.value) == f"refused {calls}"
