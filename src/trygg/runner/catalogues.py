"""Which catalogue the embedded runner runs, and what runs beside it.

Catalogue versions (docs/rules.md, "Versions"): without an engine given from
outside, the runner runs the version active in the database (the rules
directory's catalogue is recorded as the first one), takes a published or
promoted version into use without a restart, warm (with the live engine's rule
state), and starts or stops the shadow candidate. District overlays
(docs/rules.md, "Districts"): the engine runs the registry they resolve
(standard -> district overlay -> care plan, as replay does), from the overlay
files beside the rules and the districts' stored versions; a candidate overlay
in shadow runs in :mod:`trygg.runner.shadows`.

The live engine stays the runner's attribute (its consumer reads it for every
event): these methods read and replace ``live.engine``, at the moment the
runner used to (a new engine is in use before the shadow's is built).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from trygg import logs
from trygg.check import NotStarted
from trygg.registry import Registry
from trygg.rules import CarePlanError, CatalogueError, Engine, load_catalogue
from trygg.rules.catalogue import default_rules_dir
from trygg.rules.overlays import LiveOverlays, OverlayError, district_overlay_texts
from trygg.runner.shadows import Shadows
from trygg.settings import Settings
from trygg.store.versions import VersionError, overlays_in, record_in_use
from trygg.store.versions import current as current_versions
from trygg.store.versions import get as get_version
from trygg.tuning.versions import catalogue_content, catalogue_of

log = logs.get("trygg.runner")


def standard_engine(settings: Settings) -> Engine:
    """The engine for the configured catalogue; a bad catalogue stops start-up here."""
    catalogue = load_catalogue([settings.rules_dir or default_rules_dir()])
    return Engine(catalogue, Registry())


class Live(Protocol):
    """What runs the live engine (the runner): the engine it runs."""

    engine: Any


class Catalogues:
    """The catalogue versions and district overlays of one runner.

    ``live.engine`` is the engine that runs; ``db(fn, *args)`` runs
    ``fn(conn, *args)`` on a pooled connection (blocking: called at start-up,
    else in a worker thread); ``registry()`` is the registry in force and
    ``started()`` whether the runner has taken one yet (before, it applies the
    overlays when it does). ``managed``: the catalogue comes from the database
    (no engine given from outside); turned off if the database has no
    catalogue versions.
    """

    def __init__(
        self,
        settings: Settings,
        live: Live,
        shadows: Shadows,
        *,
        managed: bool,
        db: Callable[..., Any],
        registry: Callable[[], Registry],
        started: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.managed = managed
        self.shadows = shadows
        self._live = live
        self._db = db
        self._registry = registry
        self._started = started
        # A bad overlay file refuses the start here, like a bad rule file.
        self.overlays = LiveOverlays()
        if isinstance(live.engine, Engine):
            self.overlays.update(live.engine.catalogue, district_overlay_texts(self.rules()))

    def rules(self) -> list[Any]:
        return [self.settings.rules_dir or default_rules_dir()]

    # --- catalogue versions (docs/rules.md) ------------------------------------
    def _version(self) -> str | None:
        return getattr(self._live.engine, "version", None)

    def _warm(self, engine: Engine) -> Engine:
        """Give ``engine`` the live engine's rule state (timers, last activity),
        so a new catalogue goes on where the old one was instead of starting cold."""
        old = self._live.engine
        if isinstance(old, Engine):
            for rid in old.residents():
                engine.restore(rid, old.snapshot(rid))
        return engine

    def engine_of(self, version: str, registry: Registry) -> Engine:
        """The engine for a stored version (database read: call in a worker thread)."""
        v = self._db(get_version, version)
        return Engine(catalogue_of(v.files, v.version), registry)

    def at_start(self) -> None:
        """Run the active catalogue version (recording the rules directory's
        catalogue as the first one), and start the shadow candidate, if any.

        Called once at start-up, before any event; nothing else runs yet, so
        the (short) database reads block nothing. An active version that does
        not load is not run in its place: start-up is refused (NotStarted).
        """
        try:
            cur = self._db(current_versions)
            active = cur.get("active")
            if active is None:
                cat, files = catalogue_content(self.rules())
                if cat.version != self._version():
                    self._live.engine = Engine(cat, Registry())
                if self._db(record_in_use, cat.version, files):
                    log.info("catalogue recorded as the active version", version=cat.version)
            elif active != self._version():
                log.warning(
                    "running the active catalogue version from the database, not the rules "
                    "directory (publish the directory with trygg rules publish to use it)",
                    active=active,
                    rules_dir=self._version(),
                )
                try:
                    self._live.engine = self.engine_of(active, Registry())
                except CatalogueError as exc:
                    raise NotStarted(
                        [
                            f"catalogue version {active} (active in the database): {p}"
                            for p in exc.problems
                        ]
                    ) from None
            if cur.get("shadow") is not None:
                self.shadows.engine = self._warm(self.engine_of(cur["shadow"], Registry()))
                self.shadows.version = cur["shadow"]
                log.info("shadow catalogue started", version=self.shadows.version)
        except (psycopg.Error, CatalogueError, CarePlanError, VersionError) as exc:
            log.error(
                "catalogue versions not read: running the rules directory's catalogue",
                error=str(exc).strip()[:300],
            )
        self.overlays_at_start()

    async def reload(self) -> None:
        """Pick up a published or promoted version and shadow start/stop."""
        sh = self.shadows
        try:
            cur = await asyncio.to_thread(self._db, current_versions)
        except psycopg.errors.UndefinedTable:
            log.error("no catalogue versions in this database (run trygg db migrate)")
            self.managed = False
            return
        except psycopg.Error as exc:
            log.warning("catalogue versions not read", error=str(exc).strip()[:200])
            return
        active, shadow = cur.get("active"), cur.get("shadow")
        if active is not None and active != self._version() and active not in sh.refused:
            if active == sh.version and sh.engine is not None:
                # Promotion: the shadow engine goes live, with the live engine's rule
                # state (as for a publish): a condition only the candidate had
                # detected (a shadow alert, never routed) is then seen as new and
                # raised live, instead of counting as already alerted.
                self._live.engine = self._warm(sh.engine)
                sh.engine, sh.version = None, None
                sh.end_alerts("shadow run promoted")
                log.info("catalogue promoted: the shadow candidate is now active", version=active)
            else:
                new = await self._build(active)
                if new is not None:
                    self._live.engine = self._warm(new)
                    log.info("catalogue version taken into use", version=active)
        if shadow != sh.version and (shadow is None or shadow not in sh.refused):
            if shadow is None:
                log.info("shadow catalogue stopped", version=sh.version)
                sh.engine, sh.version = None, None
                sh.end_alerts("shadow run stopped")
            else:
                new = await self._build(shadow)
                if new is not None:
                    if sh.version is not None:  # replaced without a reload between
                        sh.end_alerts("shadow run replaced")
                    sh.engine, sh.version = self._warm(new), shadow
                    log.info("shadow catalogue started", version=shadow)

    async def _build(self, version: str) -> Engine | None:
        try:
            return await asyncio.to_thread(
                self.engine_of, version, self.overlays.registry(self._registry())
            )
        except (psycopg.Error, VersionError) as exc:
            log.warning("catalogue version not read", version=version, error=str(exc)[:200])
        except (CatalogueError, CarePlanError) as exc:
            log.error(
                "catalogue version refused: it does not load or the care plans do not fit it",
                version=version,
                problems=str(exc)[:500],
            )
            self.shadows.refused.add(version)
        return None

    # --- district overlays (docs/rules.md, "Districts") -------------------------
    def overlays_at_start(self) -> None:
        """The districts' stored overlay versions (active, and any in shadow), read
        once the catalogue that runs is known. Start-up: the reads block nothing."""
        try:
            texts = district_overlay_texts(self.rules())
            active = self._db(overlays_in, "active")
            shadows = self._db(overlays_in, "shadow")
        except (psycopg.Error, OverlayError) as exc:
            log.error("district overlay versions not read", error=str(exc).strip()[:300])
            return
        self.take_overlays(texts, active, at_start=True)
        self.shadows.take_districts(shadows, self._live.engine, self.overlays, self._registry())

    async def reload_overlays(self) -> None:
        """Overlay files changed beside the rules, or a district's stored version
        published or promoted: taken into use without a restart; a refused one
        keeps the overlays in force, and the log says so (once)."""
        try:
            texts = await asyncio.to_thread(district_overlay_texts, self.rules())
            active: dict[str, tuple[str, str]] = {}
            shadows: dict[str, tuple[str, str]] = {}
            if self.managed:
                active = await asyncio.to_thread(self._db, overlays_in, "active")
                shadows = await asyncio.to_thread(self._db, overlays_in, "shadow")
        except OverlayError as exc:
            log.error("district overlays not read", problems=str(exc)[:500])
            return
        except psycopg.Error as exc:
            log.warning("district overlay versions not read", error=str(exc).strip()[:200])
            return
        self.take_overlays(texts, active)
        self.shadows.take_districts(shadows, self._live.engine, self.overlays, self._registry())

    def take_overlays(
        self, texts: list[tuple[str, str]], stored: dict[str, Any], at_start: bool = False
    ) -> None:
        cat = getattr(self._live.engine, "catalogue", None)
        if cat is None:  # an engine given from outside (tests): its own business
            return
        before = self.overlays.taken()
        try:
            if not self.overlays.update(cat, texts, stored):
                if at_start and self.overlays.overlays.by_district:
                    log.info("district overlays in force", districts=self.overlays.describe())
                return
        except OverlayError as exc:
            log.error(
                "district overlays refused: the ones in force are kept",
                problems=exc.problems[:20],
            )
            return
        for w in self.overlays.overlays.warnings:
            log.warning("district overlay", warning=w)
        if self._started():  # else the runner applies them when it takes the registry
            try:
                self._live.engine.update_registry(self.overlays.registry(self._registry()))
            except CarePlanError as exc:
                self.overlays.undo(before)
                log.error(
                    "district overlays refused: a care plan does not fit them;"
                    " the ones in force are kept",
                    problems=exc.problems[:20],
                )
                return
            self.shadows.districts_registry(self.overlays, self._registry())
        log.info("district overlays in force", districts=self.overlays.describe())
