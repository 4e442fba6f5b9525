"""The back-test's run: the current and the candidate catalogue's engines over
the same events in one pass (``run_engines``), and the order of their alerts
(``alert_order``), which the sharded runner (trygg.tuning.backtest_shards)
keeps when it merges its shards' lists.

Both engines see every event in turn (``trygg.tuning.replay.drive``, the loop
of ``trygg rules replay``), with its receipt time when given, so that they
judge a device clock that runs ahead as live did; memory is the two engines'
state plus the alerts raised, not the events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import Engine
from trygg.tuning.replay import Received, drive


class _Counted:
    """An event iterable that counts what passes through it."""

    def __init__(self, events: Iterable[Event | Received]) -> None:
        self.events = events
        self.n = 0

    def __iter__(self) -> Iterator[Event | Received]:
        n = 0
        for ev in self.events:
            n += 1
            yield ev
        self.n = n


def alert_order(s: Signal) -> tuple[float, str]:
    """The order of a back-test's alerts: by time, then by resident; one
    resident's alerts at the same time in the order the engine decided them.

    Defined so that it does not depend on how residents' events interleave:
    the engine's state is per resident, so a run over some of the residents
    (a shard, ``trygg.tuning.backtest_shards``) decides each of their alerts
    as the run over all of them does, and the shards' lists merged in this
    order equal the single run's list."""
    return (s.at.timestamp(), s.resident)


def run_engines(
    events: Iterable[Event | Received],
    registry: Registry,
    current: Catalogue,
    candidate: Catalogue,
    *,
    until: datetime,
    candidate_registry: Registry | None = None,
) -> tuple[list[Signal], list[Signal], int, int]:
    """Both catalogues over the same events (one pass; each an ``Event`` or an
    ``(Event, received)`` pair); the fire signals of each in ``alert_order``,
    the number of events and of late events (evaluated by the immediate rules
    only). ``candidate_registry``: the candidate's engine runs on it instead
    (a district's candidate overlay applied to the care plans). Raises
    ``CarePlanError`` if a care plan does not fit a catalogue."""
    cand_reg = candidate_registry if candidate_registry is not None else registry
    engines = [Engine(current, registry), Engine(candidate, cand_reg)]
    counted = _Counted(events)
    cur, cand = drive(counted, engines, until=until)
    cur.sort(key=alert_order)  # stable: drive gives each resident's in decided order
    cand.sort(key=alert_order)
    return cur, cand, counted.n, engines[0].late_events


EngineRunner = Callable[..., tuple[list[Signal], list[Signal], int, int]]
"""``run_engines``, or a runner called like it (``events, registry, current,
candidate, until=, candidate_registry=``), e.g. ``backtest_shards.ShardedRunner``."""
