"""The embedded alert service's outbox: notifications delivered, retried and recorded.

Each notification is delivered in its own task, so a failing channel never
holds back the others. The first attempt goes out at once; if it fails, the
same task retries it (``notify.retry``: one policy, exponential backoff with
jitter) with the same idempotency key until it is delivered, the alert is
closed, or the channel's give-up time passes (``TRYGG_NOTIFY_GIVE_UP``; red:
never). The first failure and the final outcome are recorded in
``alert_deliveries``; every attempt counts in the channel's health
(``health``: /metrics, ``GET /api/health/channels``).

A closed alert wakes its notifications' retries (``_wakers``), which then end;
so does trygg's stop. Notifications the outbox never delivered are sent again
at the next start (``AlertService.start``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from trygg import logs
from trygg.alerts.alert import Alert
from trygg.alerts.contacts import Channel
from trygg.alerts.escalation import Notification
from trygg.alerts.gates import Gatekeeper
from trygg.api.metrics import AlertLatencies
from trygg.notify.base import Channel as ChannelImpl
from trygg.notify.base import Delivery, deliver, health_name, payload
from trygg.notify.retry import ChannelHealth, GiveUp, RetryPolicy, retry_delivery
from trygg.store import spooled

log = logs.get("trygg.alerts")

_CLOSED = "the alert was closed"
_STOPPED = "trygg stopped"


def _where(n: Notification, address: str) -> dict[str, Any]:
    """What a log line about a delivery names (as the distributed notify agent's)."""
    return {"alert": n.alert_id, "channel": n.channel.value, "address": address}


class Outbox(ABC):
    """The notification delivery of :class:`trygg.runner.alerting.AlertService`,
    which sets the state below and writes the delivery records to its spool
    (``_emit``); the outbox's own state is set by ``_init_outbox``."""

    gk: Gatekeeper
    channels: dict[Channel, ChannelImpl]
    clock: Callable[[], datetime]
    console_url: str | None
    latency: AlertLatencies

    @abstractmethod
    def _emit(self, *records: spooled.Record) -> None:
        """Append records to the spool (the service's one writer)."""

    def _init_outbox(
        self, retry: RetryPolicy | None, give_up: GiveUp | None, health: ChannelHealth | None
    ) -> None:
        """The outbox's state (``AlertService.__init__``, once ``channels`` is set)."""
        self._tasks: set[asyncio.Task[Any]] = set()  # the deliveries in flight
        # the outbox: retries, give-up times, channel health
        self.retry = retry or RetryPolicy()
        self.give_up = give_up or GiveUp()
        self.health = health or ChannelHealth()
        for ch, impl in self.channels.items():
            names = getattr(impl, "names", None)
            if ch is Channel.WEBHOOK:
                for name in names or ():
                    self.health.register(health_name(ch, name))
            elif ch is not Channel.APPRISE:  # apprise: one name per service, when used
                self.health.register(ch.value)
        self._retrying: set[str] = set()  # keys of notifications being retried
        self._stopping = asyncio.Event()
        # alert id -> woken when the alert closes (or trygg stops): its retries end now
        self._wakers: dict[str, asyncio.Event] = {}
        # metrics
        self.deliveries_by: Counter[tuple[str, str]] = Counter()  # (channel, ok|failed)
        self.last_delivery_ms: dict[str, float] = {}

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, alert: Alert, n: Notification, address: str) -> None:
        p = payload(alert.to_dict(), n, address)
        if self.console_url:
            p["console_url"] = self.console_url
        self._spawn(self._deliver(n, address, p))

    @property
    def retrying(self) -> int:
        """Notifications not yet delivered that are being retried."""
        return len(self._retrying)

    async def _deliver(self, n: Notification, address: str, p: dict[str, Any]) -> None:
        """Send at once; if that fails, retry off the hot path (same task, same key)."""
        if n.key in self._retrying:
            return  # already being retried (sent again on start while in flight)
        name = health_name(n.channel, address)
        d, ms = await deliver(self.channels, n, address, p)
        self.health.attempt(name, d)
        self.last_delivery_ms[n.channel.value] = ms
        if not d.ok and d.retry and self._wanted(n) and not self._stopping.is_set():
            self._record(n, address, d, ms)  # seen at once: the first failure
            log.warning("notification not delivered, retrying", **_where(n, address), error=d.error)
            self._retrying.add(n.key)
            try:
                d, ms = await self._retry(n, address, p, name, d)
            finally:
                self._retrying.discard(n.key)
        self._final(n, address, d, ms)

    def _wanted(self, n: Notification) -> bool:
        """Whether the alert still needs this notification: it is open."""
        a = self.gk.get(n.alert_id)
        return a is not None and a.is_open

    async def _retry(
        self, n: Notification, address: str, p: dict[str, Any], name: str, first: Delivery
    ) -> tuple[Delivery, float]:
        a = self.gk.get(n.alert_id)
        severity = a.severity.value if a is not None else str(p.get("severity", ""))
        limit = self.give_up.after(n.channel.value, severity)
        t0 = time.monotonic()
        attempts = first.attempts
        why: list[str] = []
        last_ms = [0.0]

        last = first

        async def attempt() -> Delivery:
            nonlocal attempts, last
            if self._stopping.is_set():  # woken by the stop: no attempt during shutdown
                why.append(_STOPPED)
                return Delivery(False, attempts, last.status, last.error, False)
            if not self._wanted(n):
                why.append(_CLOSED)
                return Delivery(False, attempts, None, f"not delivered: {_CLOSED}", False)
            d, ms = await deliver(self.channels, n, address, p)
            attempts += max(1, d.attempts)
            last_ms[0] = ms
            self.health.attempt(name, d)
            last = d
            if d.ok:
                log.info(
                    "notification delivered after retries", **_where(n, address), attempts=attempts
                )
            return Delivery(d.ok, attempts, d.status, d.error, d.retry)

        def stop(_: Any) -> bool:
            if self._stopping.is_set():
                why.append(_STOPPED)
                return True
            if limit is not None and time.monotonic() - t0 >= limit.total_seconds():
                why.append(f"gave up after {limit}")
                return True
            return False

        waker = self._wakers.setdefault(n.alert_id, asyncio.Event())

        async def sleep(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await waker.wait()

        d = await retry_delivery(
            attempt, self.retry, stop=stop, sleep=sleep, already=max(1, first.attempts)
        )
        if not d.ok and why and d.error and why[-1] not in d.error:
            d = Delivery(False, d.attempts, d.status, f"{d.error} ({why[-1]})"[:300], False)
        return d, last_ms[0]

    def _final(self, n: Notification, address: str, d: Delivery, ms: float) -> None:
        closed = not d.ok and (d.error or "").endswith(_CLOSED)
        outcome = "ok" if d.ok else "cancelled" if closed else "failed"
        self.deliveries_by[(n.channel.value, outcome)] += 1
        if d.ok and n.action == "notify":  # the first level: raised -> notified
            seconds = (self.clock() - n.due_at).total_seconds()
            self.latency.raised_to_notified.observe(seconds, n.channel.value)
        if closed:
            log.info("notification dropped: the alert was closed", alert=n.alert_id)
        elif not d.ok and (d.error or "").endswith(f"({_STOPPED})"):
            log.warning(
                "notification not delivered before trygg stopped: sent again at the next start",
                **_where(n, address),
            )
        elif not d.ok:
            log.error(
                "notification not delivered",
                **_where(n, address),
                attempts=d.attempts,
                error=d.error,
            )
        self._record(n, address, d, ms)

    def _record(self, n: Notification, address: str, d: Delivery, ms: float) -> None:
        self._emit(
            spooled.delivery_record(
                key=n.key,
                alert_id=n.alert_id,
                channel=n.channel.value,
                address=address,
                at=self.clock(),
                attempts=d.attempts,
                ok=d.ok,
                status=d.status,
                error=d.error,
                latency_ms=round(ms, 3),
            )
        )
