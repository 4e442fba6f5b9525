"""Retrying notifications, and each channel's health.

Every channel makes *one* attempt per call (``Channel.send``); what happens
between attempts is decided here, with tenacity and trygg's one retry policy
(``trygg.retry.RetryPolicy``: exponential backoff with jitter), retried until
a stop condition says otherwise (delivered, the alert closed, the channel's
give-up time passed, or a permanent failure such as HTTP 404). A failure is a
result here (``Delivery``), not an exception, hence a loop of its own.

``ChannelHealth`` keeps, per channel, the last success, the consecutive
failures and since when it has been failing: ``/metrics`` and
``GET /api/health/channels`` show it (docs/api.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_result

from trygg.notify.base import Delivery
from trygg.retry import RetryPolicy

__all__ = ["ChannelHealth", "GiveUp", "RetryPolicy", "retry_delivery"]


async def retry_delivery(
    attempt: Callable[[], Awaitable[Delivery]],
    policy: RetryPolicy,
    *,
    stop: Callable[[RetryCallState], bool],
    sleep: Callable[[float], Awaitable[None]] | None = None,
    already: int = 0,
) -> Delivery:
    """Call ``attempt`` until it delivers, fails permanently (``retry=False``) or
    ``stop`` says so; return the last outcome. ``attempt`` never raises (a
    channel's bug is a failed Delivery, see ``notify.base.deliver``).

    ``already``: attempts made before (and failed), e.g. the first one, which
    the alert service makes at once, outside this loop: then the first call
    here waits as a retry does."""

    def again(d: Delivery | None) -> bool:
        return d is not None and not d.ok and d.retry

    kw: dict[str, Any] = {}
    if sleep is not None:
        kw["sleep"] = sleep
    if already:
        await (sleep or asyncio.sleep)(policy.delay(already))
    r = AsyncRetrying(
        wait=policy.wait(already),
        stop=stop,
        retry=retry_if_result(again),
        retry_error_callback=lambda rs: rs.outcome.result() if rs.outcome else None,
        reraise=True,
        **kw,
    )
    d: Any = await r(attempt)
    assert isinstance(d, Delivery)
    return d


# ------------------------------------------------------------------- health


@dataclass
class _State:
    attempts: int = 0
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success: float | None = None  # wall clock, seconds
    last_failure: float | None = None
    failing_since: float | None = None
    last_error: str | None = None


@dataclass
class ChannelHealth:
    """Per channel: the outcome of every attempt (not only of whole deliveries)."""

    clock: Callable[[], float] = time.time
    _by: dict[str, _State] = field(default_factory=dict)

    def register(self, name: str) -> None:
        """A configured channel, shown (as up) before its first attempt."""
        self._by.setdefault(name, _State())

    def attempt(self, name: str, d: Delivery) -> None:
        s = self._by.setdefault(name, _State())
        now = self.clock()
        s.attempts += 1
        if d.ok:
            s.successes += 1
            s.consecutive_failures = 0
            s.failing_since = None
            s.last_success = now
        else:
            s.failures += 1
            s.consecutive_failures += 1
            s.last_failure = now
            s.last_error = d.error
            if s.failing_since is None:
                s.failing_since = now

    def names(self) -> list[str]:
        return sorted(self._by)

    def get(self, name: str) -> _State:
        return self._by[name]

    def snapshot(self) -> list[dict[str, Any]]:
        """The JSON of ``GET /api/health/channels``."""
        return [
            {
                "name": name,
                "ok": s.consecutive_failures == 0,
                "failing_since": _iso(s.failing_since),
                "consecutive_failures": s.consecutive_failures,
                "last_success": _iso(s.last_success),
                "last_failure": _iso(s.last_failure),
                "last_error": s.last_error,
                "attempts": s.attempts,
            }
            for name, s in sorted(self._by.items())
        ]


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


# ------------------------------------------------------------------- give-up

NEVER = "never"
DEFAULT_GIVE_UP = timedelta(hours=1)  # yellow and green; red: never


@dataclass(frozen=True)
class GiveUp:
    """How long a notification is retried, by channel and severity
    (``TRYGG_NOTIFY_GIVE_UP``). Keys, most specific first: ``<channel>.<severity>``
    (``webhook.red``), ``<channel>`` (``email``), ``<severity>`` (``yellow``);
    values a duration (``30m``, ``6h``) or ``never``. Without a matching key a
    red alert's notification is retried until it is delivered or the alert is
    closed, and a yellow or green one for an hour."""

    rules: Mapping[str, timedelta | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> GiveUp:
        from trygg.durations import parse_duration

        rules: dict[str, timedelta | None] = {}
        for k, v in raw.items():
            text = str(v).strip().lower()
            rules[k.strip().lower()] = None if text == NEVER else parse_duration(text)
        return cls(rules)

    def after(self, channel: str, severity: str) -> timedelta | None:
        """The give-up time, or None: never."""
        for k in (f"{channel}.{severity}", channel, severity):
            if k in self.rules:
                return self.rules[k]
        return None if severity == "red" else DEFAULT_GIVE_UP
