"""The live console feed: in-process publish/subscribe that the API streams as SSE.

Every change to an alert is published (``{"type": "alert", "alert": {...}}``),
and the ``console`` channel of the routing file adds a ``notify`` message (the
console sounds and highlights it). Subscribers have bounded queues: a slow or
gone browser loses messages (it reloads the list on reconnect) and never slows
the alert service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trygg.alerts.escalation import Notification
from trygg.notify.base import Delivery


@dataclass(eq=False)
class Subscription:
    teams: frozenset[str] | None  # None: every team
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000)
    )
    dropped: int = 0

    def wants(self, team: str | None) -> bool:
        return self.teams is None or team is None or team in self.teams


class ConsoleFeed:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self.published = 0

    def subscribe(self, teams: Iterable[str] | None) -> Subscription:
        s = Subscription(frozenset(teams) if teams is not None else None)
        self._subs.add(s)
        return s

    def unsubscribe(self, s: Subscription) -> None:
        self._subs.discard(s)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, message: dict[str, Any], team: str | None) -> int:
        """Hand ``message`` to every subscriber of ``team``; returns how many."""
        n = 0
        self.published += 1
        for s in list(self._subs):
            if not s.wants(team):
                continue
            try:
                s.queue.put_nowait(message)
                n += 1
            except asyncio.QueueFull:
                s.dropped += 1
                with contextlib.suppress(asyncio.QueueEmpty):
                    s.queue.get_nowait()
                s.queue.put_nowait({"type": "resync"})
        return n


class ConsoleChannel:
    """The routing file's ``console`` channel: a ``notify`` message on the feed."""

    def __init__(self, feed: ConsoleFeed) -> None:
        self.feed = feed

    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery:
        self.feed.publish({"type": "notify", "alert": payload}, address)
        return Delivery(True, 1)

    async def aclose(self) -> None:
        pass
