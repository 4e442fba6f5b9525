"""Versions, shadow runs and back-tests of one district's overlay (issue 19).

A district's overlay is versioned like the whole catalogue (schema 11,
``trygg.store.versions``: kind ``overlay`` with its district): ``trygg rules
publish|shadow|promote|history --district D`` and ``trygg rules backtest
--district D --candidate FILE``. The catalogue stays the city's; what a
district proposes, shadows, back-tests and promotes is only its own overlay, and
only its own residents are evaluated with it (docs/rules.md, "Versions per
district").

The overlay in force for a district is its stored active version, else its
file beside the rules (``rules/districts/<district>.yaml``), else none: the
same order the live runner and the worker use (``overlays.with_stored``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from trygg.model import Event
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.overlays import (
    Overlay,
    OverlayError,
    Overlays,
    _check_file,
    apply_overlays,
    read_overlay,
    with_stored,
)
from trygg.tuning.backtest import BacktestResult, RecordedIncident, RuleRecord, backtest
from trygg.tuning.backtest_engines import EngineRunner, run_engines
from trygg.tuning.backtest_matching import MATCH_WINDOW
from trygg.tuning.replay import Received


def candidate_text(district: str, paths: Sequence[Path]) -> tuple[str, str]:
    """``(source, text)`` of a candidate overlay: a file, or ``<dir>/<district>.yaml``."""
    if len(paths) != 1:
        raise OverlayError([f"give one candidate overlay for {district}, got {len(paths)}"])
    p = Path(paths[0])
    if p.is_dir():
        p = p / f"{district}.yaml"
    return read_overlay(p)


def check_overlay(cat: Catalogue, district: str, src: str, text: str) -> Overlay:
    """One district's overlay checked against ``cat`` whatever its file is called;
    OverlayError (file:line and bound) if refused. Changes without a reason are
    accepted (the deviation report marks them), as in ``read_overlays``."""
    problems, _warnings, overlay = _check_file(cat, district, src, text)
    if problems:
        raise OverlayError(problems)
    return overlay


def district_residents(registry: Registry, district: str) -> list[str]:
    return sorted(r for r, d in registry.resident_districts().items() if d == district)


def district_teams(registry: Registry, district: str) -> list[str]:
    districts = registry.resident_districts()
    return sorted({r.team for r in registry.residents if districts[r.id] == district})


def only(registry: Registry, residents: Iterable[str]) -> Registry:
    keep = set(residents)
    return registry.model_copy(
        update={
            "residents": [r for r in registry.residents if r.id in keep],
            "devices": [d for d in registry.devices if d.resident in keep],
        }
    )


@dataclass
class DistrictBacktest:
    """The district's overlay in force against a candidate, on the same catalogue,
    for the district's residents only."""

    catalogue: Catalogue
    district: str
    current: Overlays  # every district's overlay in force (only this one matters)
    candidate: Overlay
    candidate_version: str
    current_version: str = "standard"
    residents: list[str] = field(default_factory=list)

    def run(
        self,
        events: Iterable[Event | Received],
        registry: Registry,
        *,
        start: datetime,
        end: datetime,
        until: datetime,
        incidents: Sequence[RecordedIncident] = (),
        records: Sequence[RuleRecord] = (),
        teams: Sequence[str] | None = None,
        match_window: timedelta = MATCH_WINDOW,
        runner: EngineRunner = run_engines,
    ) -> BacktestResult:
        """``runner``: the engines in this process (default), or sharded over
        worker processes (``backtest_shards.ShardedRunner``, its shards limited to
        ``residents``), each shard with the same two registries."""
        mine = only(registry, self.residents)
        now = apply_overlays(mine, self.current)
        then = apply_overlays(mine, with_stored(self.current, {self.district: self.candidate}))
        wanted = set(self.residents)

        def counted() -> Iterable[Event | Received]:
            for item in events:
                ev = item if isinstance(item, Event) else item[0]
                if ev.resident in wanted:  # never another district's resident
                    yield item

        res = backtest(
            counted(),
            now,
            self.catalogue,
            self.catalogue,
            start=start,
            end=end,
            until=until,
            incidents=[i for i in incidents if i.resident in wanted],
            records=records,
            teams=teams,
            match_window=match_window,
            runner=runner,
            candidate_registry=then,
        )
        # the same catalogue twice: the versions compared are the overlays'
        res.current_version, res.candidate_version = self.current_version, self.candidate_version
        return res
