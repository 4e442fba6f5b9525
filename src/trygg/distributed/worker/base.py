"""What the worker's parts share: the state ``Worker`` builds, declared once.

``Worker`` (app.py) is put together from parts, one module each: the rules,
alerts and notify agents' steps, the rules states held between commits, the
offset checks, the timer scan and the reloads. Each part is a class over this
base, so it can name the worker's settings, Faust objects, tables and
bookkeeping with their types; ``Worker.__init__`` sets them all. Also here: the
partitions the worker owns and whether a rebalance is going on, which several
parts ask.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import faust

from trygg.alerts.silences import Silence
from trygg.api.metrics import AlertLatencies, Histogram
from trygg.distributed import codecs
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.clocks import EventClocks, WallClocks
from trygg.distributed.worker.faust_patches import Handed
from trygg.distributed.worker.holes import Holes
from trygg.distributed.worker.outbox import NotifyOutbox
from trygg.distributed.worker.rules_core import RulesCore
from trygg.distributed.worker.timers import TimerIndex
from trygg.registry import Registry
from trygg.rules.overlays import OverlayInputs
from trygg.settings import Settings

# (topic, key, value, partition): a record to send; partition None: by key
Out = tuple[Any, Any, bytes, int | None]


class Sender(Protocol):
    async def send_all(self, items: Sequence[tuple[Any, Any, bytes, int | None]]) -> None:
        """Send (topic, key, value, partition) records; return once the broker acked all."""


def key_text(key: Any) -> str:
    """A record's key as the resident (or alert) id it names."""
    return key.decode() if isinstance(key, bytes) else key


def tick(topic: Any, resident: str, at: datetime, partition: int | None) -> Out:
    """A ``tick`` for ``resident`` at ``at``: its agent applies the timers due by then."""
    return (topic, resident, codecs.dumps(codecs.tick_record(resident, at)), partition)


class WorkerBase:
    """The worker's state, as ``Worker.__init__`` sets it (see there for each)."""

    # what the worker is given
    settings: Settings
    rules: RulesCore
    alerts: AlertsCore
    sender: Sender
    db: Callable[..., Awaitable[Any]] | None
    # who sends a first notification, a bridge's relay or this worker (store.claims):
    # MINE, RELAYED, the epoch s a relay's lease ends, or None (no answer: send it)
    claim: Callable[[str, str], Awaitable[str | float | None]] | None
    claim_sent: Callable[[str], Awaitable[None]] | None  # a claimed notification was sent
    channels: dict[Any, Any]
    clock: Callable[[], datetime]
    outbox: NotifyOutbox
    _load_registry: Callable[[], Awaitable[Registry]] | None
    _load_silences: Callable[[], Awaitable[list[Silence]]] | None
    _load_overlays: Callable[[], Awaitable[OverlayInputs]] | None
    # Faust: the app, topics and tables
    app: faust.App
    handed: Handed
    events_topic: Any
    signals_topic: Any
    records_topic: Any
    notifications_topic: Any
    dead_letters_topic: Any
    rules_table: Any
    alerts_table: Any
    notify_table: Any
    # timers and their clocks
    rule_timers: TimerIndex
    alert_timers: TimerIndex
    notify_timers: TimerIndex
    event_clocks: EventClocks
    wall_clocks: WallClocks
    _parts: dict[str, frozenset[int]]
    # the rules states held between commits
    _unwritten: dict[str, tuple[int, str]]
    _revokes: int
    # offsets: holes, tails, what the rules agent expects next
    holes: Holes
    _earliest_asked: dict[Any, float]
    _rules_next: dict[int, int]
    _seen_at: dict[str, float]
    _busy: set[str]
    # reloads
    _registry: Registry | None
    _silences_seen: dict[str, Silence] | None
    # what the worker counts and measures
    _applied_fd: int | None
    latency: AlertLatencies
    sink_lag: Histogram
    stats: dict[str, int]

    def _owned(self, topic: str) -> frozenset[int]:
        return frozenset(
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
        )

    def _ready(self) -> bool:
        app = self.app
        return not (app.rebalancing or getattr(app, "in_recovery", False))
