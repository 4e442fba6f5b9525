"""Shadow runs: candidates that see the live events beside the active catalogue.

Two kinds (docs/rules.md, "Versions" and "Versions per district"):

- the catalogue version in shadow: an engine of the candidate catalogue fed
  every event the live engine is fed;
- a district's candidate overlay: an engine of the active catalogue with the
  candidate in place of the district's overlay, fed only that district's
  residents' events (:class:`DistrictShadow`).

Their signals are marked shadow (stored apart, never routed). A candidate that
fails or no longer fits the care plans is stopped; it never stops the live
path. Which candidates run is decided by :mod:`trygg.runner.catalogues`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trygg import logs
from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules import CarePlanError, Engine
from trygg.rules.overlays import (
    LiveOverlays,
    OverlayError,
    only_district,
    read_overlay_texts,
    with_stored,
)

log = logs.get("trygg.runner")


@dataclass
class DistrictShadow:
    """A district's candidate overlay in shadow (docs/rules.md, "Versions per
    district"): an engine of the active catalogue with the candidate in place of
    the district's overlay, fed only that district's residents' events; its
    signals are shadow ones, marked with the overlay's version."""

    district: str
    version: str
    overlay: Any  # trygg.rules.overlays.Overlay
    catalogue: Any
    engine: Any = None
    residents: frozenset[str] = frozenset()

    def registry(self, live: LiveOverlays, registry: Registry) -> Registry:
        """The district's residents only, standard -> candidate -> care plan."""
        self.residents = frozenset(only_district(registry, self.district))
        mine = registry.model_copy(
            update={
                "residents": [r for r in registry.residents if r.id in self.residents],
                "devices": [d for d in registry.devices if d.resident in self.residents],
            }
        )
        overlays = with_stored(live.overlays, {self.district: self.overlay})
        return LiveOverlays(overlays=overlays).registry(mine)

    def mark(self, sig: Signal) -> Signal:
        return dataclasses.replace(
            sig, shadow=True, catalogue_version=f"{sig.catalogue_version} {self.version}"
        )


class Shadows:
    """The runner's shadow runs, fed by its consumer and timer tasks.

    ``signal`` takes a candidate's (marked) signals, ``clock`` is the timers'
    clock, ``end_alerts(why)`` cancels the open shadow alerts of a run that
    stops or is replaced. ``refused`` holds the versions that did not load or
    fit: they are not retried each reload (the runner clears it when the
    registry changes, since a version refused for its care plans may fit then).
    """

    def __init__(
        self,
        signal: Callable[[Signal], None],
        clock: Callable[[], datetime],
        end_alerts: Callable[[str], None],
    ) -> None:
        self.engine: Engine | None = None  # the catalogue version in shadow
        self.version: str | None = None
        self.districts: dict[str, DistrictShadow] = {}
        self.refused: set[str] = set()
        self._signal = signal
        self._clock = clock
        self.end_alerts = end_alerts

    # --- the catalogue version in shadow --------------------------------------
    def process(self, ev: Event, received: datetime | None = None) -> None:
        """The shadow candidate sees every event the active catalogue sees; its
        signals are marked shadow (stored apart, never routed)."""
        if self.districts:
            self._district_process(ev, received)
        if self.engine is None:
            return
        try:
            for sig in self.engine.process(ev, received):
                self._signal(dataclasses.replace(sig, shadow=True))
        except Exception:  # a candidate must never stop the live path
            log.exception("shadow catalogue failed: shadow run stopped", version=self.version)
            self.engine = None

    def advance(self) -> None:
        if self.districts:
            self._district_advance()
        if self.engine is None:
            return
        try:
            for sig in self.engine.advance(self._clock()):
                self._signal(dataclasses.replace(sig, shadow=True))
        except Exception:
            log.exception("shadow catalogue failed: shadow run stopped", version=self.version)
            self.engine = None

    def update_registry(self, live: LiveOverlays, registry: Registry) -> None:
        """A new registry: each candidate takes it, or stops if a care plan does
        not fit it (its version is then refused)."""
        self.districts_registry(live, registry)
        if self.engine is not None:
            try:
                self.engine.update_registry(live.registry(registry))
            except CarePlanError as exc:
                log.error(
                    "shadow catalogue stopped: a care plan does not fit it",
                    version=self.version,
                    problems=str(exc),
                )
                if self.version is not None:
                    self.refused.add(self.version)
                self.engine = None

    # --- the districts' candidate overlays ------------------------------------
    def take_districts(
        self,
        shadows: dict[str, tuple[str, str]],
        live_engine: Any,
        live: LiveOverlays,
        registry: Registry,
    ) -> None:
        """Start, replace or stop each district's shadow run of a candidate overlay."""
        for district in [d for d in self.districts if d not in shadows]:
            ds = self.districts.pop(district)
            log.info("district shadow stopped", district=district, version=ds.version)
            self.end_alerts(f"shadow run of {district}'s overlay stopped")
        cat = getattr(live_engine, "catalogue", None)
        if not isinstance(live_engine, Engine) or cat is None:
            return
        for district, (version, text) in shadows.items():
            old = self.districts.get(district)
            if (old is not None and old.version == version) or version in self.refused:
                continue
            try:
                cand = read_overlay_texts(cat, [(f"{version}/{district}.yaml", text)])
                ds = DistrictShadow(district, version, cand.by_district[district], cat)
                ds.engine = Engine(cat, ds.registry(live, registry))
            except (OverlayError, CarePlanError, KeyError) as exc:
                log.error(
                    "district shadow refused",
                    district=district,
                    version=version,
                    problems=str(exc)[:500],
                )
                self.refused.add(version)
                continue
            for rid in ds.residents:  # go on where the live engine is, for its residents only
                if rid in live_engine.residents():
                    ds.engine.restore(rid, live_engine.snapshot(rid))
            if old is not None:
                self.end_alerts(f"shadow run of {district}'s overlay replaced")
            self.districts[district] = ds
            log.info(
                "district shadow started",
                district=district,
                version=version,
                residents=len(ds.residents),
            )

    def districts_registry(self, live: LiveOverlays, registry: Registry) -> None:
        for district, ds in list(self.districts.items()):
            try:
                ds.engine.update_registry(ds.registry(live, registry))
            except CarePlanError as exc:
                log.error(
                    "district shadow stopped: a care plan does not fit it",
                    district=district,
                    version=ds.version,
                    problems=str(exc)[:500],
                )
                self.refused.add(ds.version)
                del self.districts[district]

    def _district_process(self, ev: Event, received: datetime | None) -> None:
        """A district's candidate overlay sees its own residents' events only."""
        for district, ds in list(self.districts.items()):
            if ev.resident not in ds.residents:
                continue
            try:
                for sig in ds.engine.process(ev, received):
                    self._signal(ds.mark(sig))
            except Exception:  # a candidate must never stop the live path
                log.exception("district shadow failed: stopped", district=district)
                del self.districts[district]

    def _district_advance(self) -> None:
        for district, ds in list(self.districts.items()):
            try:
                for sig in ds.engine.advance(self._clock()):
                    self._signal(ds.mark(sig))
            except Exception:
                log.exception("district shadow failed: stopped", district=district)
                del self.districts[district]
