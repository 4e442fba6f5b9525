"""The embedded runner: the whole pipeline on one asyncio event loop, with two helpers.

    receiver process --Messages--> queue --> decode --> dedup --> rules --> alerts --> notify
                                                  \\--> spool (fsync) --> PUBACK
                                   spool files --> drainer process --> store (exactly once)

The receiver process (trygg.ingest.receiver) runs paho and hands messages
over in batches. The consumer task decodes each batch, drops re-deliveries,
runs the rule engine at once (an alarm never waits for the database), and
hands the batch to the commit task, which appends it to the local spool and
only then has the receiver acknowledge its messages, in order. The drainer, a
process of its own (trygg.runner.drainer), writes the spool to PostgreSQL
whenever PostgreSQL is there; while it is not, the spool grows (bounded) and
alerting goes on. A timer task drives the engine's absence timers from the
wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import psycopg
from psycopg_pool import ConnectionPool

from trygg import logs
from trygg.alerts.gates import gated
from trygg.check import NotStarted, care_plan_lines
from trygg.ingest.decode import DecodeLimits, Decoder, parse_topic
from trygg.ingest.dedup import RecentKeys
from trygg.ingest.health import HealthBatch, parse_status
from trygg.ingest.mqtt import Message
from trygg.ingest.receiver import ReceiverProcess
from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.registry import load_registry as load_registry_file
from trygg.repeats import RepeatLog
from trygg.retry import logged, retry_async
from trygg.rules import CarePlanError, CatalogueError, Engine, load_catalogue
from trygg.rules.catalogue import default_rules_dir
from trygg.rules.overlays import (
    LiveOverlays,
    OverlayError,
    district_overlay_texts,
    only_district,
    read_overlay_texts,
    with_stored,
)
from trygg.rules.versions import catalogue_content, catalogue_of
from trygg.runner.alerting import AlertService
from trygg.runner.drainer import DrainerProcess
from trygg.runner.spool import Position, Spool
from trygg.runner.timer_clock import ReceiptClock
from trygg.settings import Settings
from trygg.store import DB_AWAY, spooled
from trygg.store.events import StoredEvent, recent_event_keys
from trygg.store.registry import load_registry, save_registry
from trygg.store.retention import run_retention
from trygg.store.versions import VersionError, overlays_in, record_in_use
from trygg.store.versions import current as current_versions
from trygg.store.versions import get as get_version

log = logs.get("trygg.runner")

# SIGTERM to exit, in every state (tested): orchestrators kill after 10-30 s.
STOP_WITHIN = 10.0
# /readyz says not ready above this share of TRYGG_SPOOL_MAX_MB.
SPOOL_HIGH_WATER = 0.8
# Event keys restored at start-up: as many as the live set is sure to hold.
RECENT_KEYS = RecentKeys().capacity // 2


class RuleEngine(Protocol):
    """What the runner needs of the rule engine (trygg.rules.Engine).

    ``late_events`` counts the events ``process`` took as late (the immediate
    rules only); the runner reads it around each call to flag the stored event."""

    late_events: int

    def process(self, event: Event, received: datetime | None = None) -> list[Signal]: ...
    def advance(self, now: datetime) -> list[Signal]: ...
    def next_deadline(self) -> datetime | None: ...
    def update_registry(self, registry: Registry) -> None: ...


def standard_engine(settings: Settings) -> Engine:
    """The engine for the configured catalogue; a bad catalogue stops start-up here."""
    catalogue = load_catalogue([settings.rules_dir or default_rules_dir()])
    return Engine(catalogue, Registry())


@dataclass
class Stats:
    received: int = 0
    events: int = 0
    duplicates: int = 0
    late: int = 0
    stored: int = 0
    dead_letters: int = 0
    alerts: int = 0
    notified: int = 0
    spool_bytes: int = 0


@dataclass(slots=True)
class Handoff:
    """A decoded batch on its way to the spool: its messages are acknowledged after."""

    messages: list[Message]
    records: list[spooled.Record]
    replies: list[tuple[str, bytes]]


def _now() -> datetime:
    return datetime.now(UTC)


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


class EmbeddedRunner:
    def __init__(self, settings: Settings, engine: RuleEngine | None = None) -> None:
        self.settings = settings
        self.engine: RuleEngine = engine or standard_engine(settings)
        self.stats = Stats()
        self.dedup = RecentKeys()
        self.spool_name = settings.mqtt_client_id
        # The receiver's batches, waiting for the consumer.
        self._inbox: deque[Message] = deque()
        self._inbox_wake = asyncio.Event()
        self._timer_due: datetime | None = None  # when the timer task wakes next
        # Decoded batches waiting for the spool and their PUBACKs (see _commit).
        self._handoff: deque[Handoff] = deque()
        self._handoff_ready = asyncio.Event()
        self._wake_timers = asyncio.Event()
        self.ready = asyncio.Event()
        self._pool: ConnectionPool | None = None
        self._spool: Spool | None = None
        self._drainer: DrainerProcess | None = None
        # the timers' clock: the wall clock less the receipt delay (trygg.runner.timer_clock)
        self._receipt = ReceiptClock()
        self._registry: Registry = Registry()
        self._decoder: Decoder | None = None
        self._alerting: AlertService | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []  # the runner's own loops (consume, ...)
        self._source: ReceiverProcess | None = None
        # Catalogue versions (docs/rules.md): without an engine given, the active
        # version stored in the database is run, and a shadow candidate beside it.
        self._managed = engine is None
        self._shadow: Engine | None = None
        self._shadow_version: str | None = None
        self._refused: set[str] = set()  # versions that did not load: not retried each reload
        # A dead letter is logged in full the first time per device and reason,
        # then as one line a minute with the count (trygg.repeats).
        self._dead_log = RepeatLog(log)
        # District overlays (docs/rules.md, "Districts"): the engine runs the registry
        # they resolve (standard -> district overlay -> care plan, as replay does); a
        # bad overlay file refuses the start here, like a bad rule file.
        self._overlays = LiveOverlays()
        self._district_shadows: dict[str, DistrictShadow] = {}
        if isinstance(self.engine, Engine):
            self._overlays.update(self.engine.catalogue, district_overlay_texts(self._rules()))

    # --- database -----------------------------------------------------------
    def _db(self, fn: Any, *args: Any) -> Any:
        assert self._pool is not None
        with self._pool.connection() as conn:
            return fn(conn, *args)

    async def _db_retry(self, what: str, fn: Any, *args: Any) -> Any:
        """``fn(conn, *args)`` on a pooled connection, retried while the database
        is away (trygg.retry's policy for services an alert waits on)."""
        return await retry_async(
            lambda: asyncio.to_thread(self._db, fn, *args),
            retry_on=DB_AWAY,
            on_retry=logged(log, "database unavailable, retrying", what=what),
        )

    def _set_registry(self, registry: Registry) -> None:
        """Take a registry (and its care plans) into use, or refuse it whole.

        A care plan that does not fit the catalogue is refused with its reason
        and the previous registry stays in force: alerting goes on with the
        care plans that were valid, never with half of a new registry. At
        start-up there is nothing to keep: :meth:`_check_start` has refused
        such a registry already (NotStarted), and this is its backstop.
        """
        try:
            self.engine.update_registry(self._overlays.registry(registry))
        except CarePlanError as exc:
            log.error("registry refused: a care plan does not fit the catalogue", problems=str(exc))
            if self._decoder is not None:
                return
            raise NotStarted(exc.problems) from None
        self._registry = registry
        self._decoder = Decoder(
            self.settings.site,
            registry.device_by_id(),
            DecodeLimits(max_payload_bytes=self.settings.max_payload_bytes),
        )
        self._refused.clear()  # a version refused for its care plans may fit now
        self._district_shadows_registry()
        if self._shadow is not None:
            try:
                self._shadow.update_registry(self._overlays.registry(registry))
            except CarePlanError as exc:
                log.error(
                    "shadow catalogue stopped: a care plan does not fit it",
                    version=self._shadow_version,
                    problems=str(exc),
                )
                if self._shadow_version is not None:
                    self._refused.add(self._shadow_version)
                self._shadow = None

    # --- catalogue versions (docs/rules.md) ------------------------------------
    def _engine_version(self) -> str | None:
        return getattr(self.engine, "version", None)

    def _engine_of(self, version: str, registry: Registry) -> Engine:
        """The engine for a stored version (database read: call in a worker thread)."""
        v = self._db(get_version, version)
        return Engine(catalogue_of(v.files, v.version), registry)

    def _catalogue_at_start(self) -> None:
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
                cat, files = catalogue_content([self.settings.rules_dir or default_rules_dir()])
                if cat.version != self._engine_version():
                    self.engine = Engine(cat, Registry())
                if self._db(record_in_use, cat.version, files):
                    log.info("catalogue recorded as the active version", version=cat.version)
            elif active != self._engine_version():
                log.warning(
                    "running the active catalogue version from the database, not the rules "
                    "directory (publish the directory with trygg rules publish to use it)",
                    active=active,
                    rules_dir=self._engine_version(),
                )
                try:
                    self.engine = self._engine_of(active, Registry())
                except CatalogueError as exc:
                    raise NotStarted(
                        [
                            f"catalogue version {active} (active in the database): {p}"
                            for p in exc.problems
                        ]
                    ) from None
            if cur.get("shadow") is not None:
                self._shadow = self._warm(self._engine_of(cur["shadow"], Registry()))
                self._shadow_version = cur["shadow"]
                log.info("shadow catalogue started", version=self._shadow_version)
        except (psycopg.Error, CatalogueError, CarePlanError, VersionError) as exc:
            log.error(
                "catalogue versions not read: running the rules directory's catalogue",
                error=str(exc).strip()[:300],
            )
        self._overlays_at_start()

    def _warm(self, engine: Engine) -> Engine:
        """Give ``engine`` the live engine's rule state (timers, last activity),
        so a new catalogue goes on where the old one was instead of starting cold."""
        old = self.engine
        if isinstance(old, Engine):
            for rid in old.residents():
                engine.restore(rid, old.snapshot(rid))
        return engine

    async def _reload_catalogue(self) -> None:
        """Pick up a published or promoted version and shadow start/stop."""
        try:
            cur = await asyncio.to_thread(self._db, current_versions)
        except psycopg.errors.UndefinedTable:
            log.error("no catalogue versions in this database (run trygg db migrate)")
            self._managed = False
            return
        except psycopg.Error as exc:
            log.warning("catalogue versions not read", error=str(exc).strip()[:200])
            return
        active, shadow = cur.get("active"), cur.get("shadow")
        if active is not None and active != self._engine_version() and active not in self._refused:
            if active == self._shadow_version and self._shadow is not None:
                # Promotion: the shadow engine goes live, with the live engine's rule
                # state (as for a publish): a condition only the candidate had
                # detected (a shadow alert, never routed) is then seen as new and
                # raised live, instead of counting as already alerted.
                self.engine = self._warm(self._shadow)
                self._shadow, self._shadow_version = None, None
                self._end_shadow_alerts("shadow run promoted")
                log.info("catalogue promoted: the shadow candidate is now active", version=active)
            else:
                new = await self._build(active)
                if new is not None:
                    self.engine = self._warm(new)
                    log.info("catalogue version taken into use", version=active)
        if shadow != self._shadow_version and (shadow is None or shadow not in self._refused):
            if shadow is None:
                log.info("shadow catalogue stopped", version=self._shadow_version)
                self._shadow, self._shadow_version = None, None
                self._end_shadow_alerts("shadow run stopped")
            else:
                new = await self._build(shadow)
                if new is not None:
                    if self._shadow_version is not None:  # replaced without a reload between
                        self._end_shadow_alerts("shadow run replaced")
                    self._shadow, self._shadow_version = self._warm(new), shadow
                    log.info("shadow catalogue started", version=shadow)

    def _end_shadow_alerts(self, why: str) -> None:
        if self._alerting is not None:
            n = self._alerting.end_shadow_run(why)
            if n:
                log.info("open shadow alerts cancelled", count=n, why=why)

    async def _build(self, version: str) -> Engine | None:
        try:
            return await asyncio.to_thread(
                self._engine_of, version, self._overlays.registry(self._registry)
            )
        except (psycopg.Error, VersionError) as exc:
            log.warning("catalogue version not read", version=version, error=str(exc)[:200])
        except (CatalogueError, CarePlanError) as exc:
            log.error(
                "catalogue version refused: it does not load or the care plans do not fit it",
                version=version,
                problems=str(exc)[:500],
            )
            self._refused.add(version)
        return None

    def _shadow_process(self, ev: Event, received: datetime | None = None) -> None:
        """The shadow candidate sees every event the active catalogue sees; its
        signals are marked shadow (stored apart, never routed)."""
        if self._district_shadows:
            self._district_shadow_process(ev, received)
        if self._shadow is None:
            return
        try:
            for sig in self._shadow.process(ev, received):
                self._signal(dataclasses.replace(sig, shadow=True))
        except Exception:  # a candidate must never stop the live path
            log.exception(
                "shadow catalogue failed: shadow run stopped", version=self._shadow_version
            )
            self._shadow = None

    def _shadow_advance(self) -> None:
        if self._district_shadows:
            self._district_shadow_advance()
        if self._shadow is None:
            return
        try:
            for sig in self._shadow.advance(self._timer_clock()):
                self._signal(dataclasses.replace(sig, shadow=True))
        except Exception:
            log.exception(
                "shadow catalogue failed: shadow run stopped", version=self._shadow_version
            )
            self._shadow = None

    # --- district overlays (docs/rules.md, "Districts") -------------------------
    def _rules(self) -> list[Any]:
        return [self.settings.rules_dir or default_rules_dir()]

    def _overlays_at_start(self) -> None:
        """The districts' stored overlay versions (active, and any in shadow), read
        once the catalogue that runs is known. Start-up: the reads block nothing."""
        try:
            texts = district_overlay_texts(self._rules())
            active = self._db(overlays_in, "active")
            shadows = self._db(overlays_in, "shadow")
        except (psycopg.Error, OverlayError) as exc:
            log.error("district overlay versions not read", error=str(exc).strip()[:300])
            return
        self._take_overlays(texts, active, at_start=True)
        self._take_district_shadows(shadows)

    async def _reload_overlays(self) -> None:
        """Overlay files changed beside the rules, or a district's stored version
        published or promoted: taken into use without a restart; a refused one
        keeps the overlays in force, and the log says so (once)."""
        try:
            texts = await asyncio.to_thread(district_overlay_texts, self._rules())
            active: dict[str, tuple[str, str]] = {}
            shadows: dict[str, tuple[str, str]] = {}
            if self._managed:
                active = await asyncio.to_thread(self._db, overlays_in, "active")
                shadows = await asyncio.to_thread(self._db, overlays_in, "shadow")
        except OverlayError as exc:
            log.error("district overlays not read", problems=str(exc)[:500])
            return
        except psycopg.Error as exc:
            log.warning("district overlay versions not read", error=str(exc).strip()[:200])
            return
        self._take_overlays(texts, active)
        self._take_district_shadows(shadows)

    def _take_overlays(
        self, texts: list[tuple[str, str]], stored: dict[str, Any], at_start: bool = False
    ) -> None:
        cat = getattr(self.engine, "catalogue", None)
        if cat is None:  # an engine given from outside (tests): its own business
            return
        before = self._overlays.taken()
        try:
            if not self._overlays.update(cat, texts, stored):
                if at_start and self._overlays.overlays.by_district:
                    log.info("district overlays in force", districts=self._overlays.describe())
                return
        except OverlayError as exc:
            log.error(
                "district overlays refused: the ones in force are kept",
                problems=exc.problems[:20],
            )
            return
        for w in self._overlays.overlays.warnings:
            log.warning("district overlay", warning=w)
        if self._decoder is not None:  # else _set_registry applies them at start-up
            try:
                self.engine.update_registry(self._overlays.registry(self._registry))
            except CarePlanError as exc:
                self._overlays.undo(before)
                log.error(
                    "district overlays refused: a care plan does not fit them;"
                    " the ones in force are kept",
                    problems=exc.problems[:20],
                )
                return
            self._district_shadows_registry()
        log.info("district overlays in force", districts=self._overlays.describe())

    def _take_district_shadows(self, shadows: dict[str, tuple[str, str]]) -> None:
        """Start, replace or stop each district's shadow run of a candidate overlay."""
        for district in [d for d in self._district_shadows if d not in shadows]:
            ds = self._district_shadows.pop(district)
            log.info("district shadow stopped", district=district, version=ds.version)
            self._end_shadow_alerts(f"shadow run of {district}'s overlay stopped")
        cat = getattr(self.engine, "catalogue", None)
        if not isinstance(self.engine, Engine) or cat is None:
            return
        for district, (version, text) in shadows.items():
            old = self._district_shadows.get(district)
            if (old is not None and old.version == version) or version in self._refused:
                continue
            try:
                cand = read_overlay_texts(cat, [(f"{version}/{district}.yaml", text)])
                ds = DistrictShadow(district, version, cand.by_district[district], cat)
                ds.engine = Engine(cat, ds.registry(self._overlays, self._registry))
            except (OverlayError, CarePlanError, KeyError) as exc:
                log.error(
                    "district shadow refused",
                    district=district,
                    version=version,
                    problems=str(exc)[:500],
                )
                self._refused.add(version)
                continue
            for rid in ds.residents:  # go on where the live engine is, for its residents only
                if rid in self.engine.residents():
                    ds.engine.restore(rid, self.engine.snapshot(rid))
            if old is not None:
                self._end_shadow_alerts(f"shadow run of {district}'s overlay replaced")
            self._district_shadows[district] = ds
            log.info(
                "district shadow started",
                district=district,
                version=version,
                residents=len(ds.residents),
            )

    def _district_shadows_registry(self) -> None:
        for district, ds in list(self._district_shadows.items()):
            try:
                ds.engine.update_registry(ds.registry(self._overlays, self._registry))
            except CarePlanError as exc:
                log.error(
                    "district shadow stopped: a care plan does not fit it",
                    district=district,
                    version=ds.version,
                    problems=str(exc)[:500],
                )
                self._refused.add(ds.version)
                del self._district_shadows[district]

    def _district_shadow_process(self, ev: Event, received: datetime | None) -> None:
        """A district's candidate overlay sees its own residents' events only."""
        for district, ds in list(self._district_shadows.items()):
            if ev.resident not in ds.residents:
                continue
            try:
                for sig in ds.engine.process(ev, received):
                    self._signal(ds.mark(sig))
            except Exception:  # a candidate must never stop the live path
                log.exception("district shadow failed: stopped", district=district)
                del self._district_shadows[district]

    def _district_shadow_advance(self) -> None:
        for district, ds in list(self._district_shadows.items()):
            try:
                for sig in ds.engine.advance(self._timer_clock()):
                    self._signal(ds.mark(sig))
            except Exception:
                log.exception("district shadow failed: stopped", district=district)
                del self._district_shadows[district]

    # --- life ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop within ``STOP_WITHIN`` seconds.

        ``stop`` is honoured in every state: start-up waits on the database (the
        registry, the spool to be stored), and a SIGTERM during a database outage
        used to be ignored for as long as the outage lasted. Nothing is lost by
        stopping early: a message is acknowledged only once it is in the spool.
        """
        startup = asyncio.create_task(self._start_up(), name="start-up")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if startup.done():
                startup.result()  # a start-up error ends the run here
                self.ready.set()
                await stopping
            else:
                log.info("stopping during start-up")
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await startup
        finally:
            stopping.cancel()
            try:
                await asyncio.wait_for(self._shut_down(), STOP_WITHIN - 2)
            except TimeoutError:
                log.error("stopping took too long: the spool keeps what was not stored")
                self._close_pool()

    async def _start_up(self) -> None:
        s = self.settings
        self._pool = ConnectionPool(
            s.database_url,
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
            timeout=10,
        )
        self._pool.open(wait=False)
        await self._check_start()  # before anything is started or stored
        self._spool = Spool(s.spool_dir / self.spool_name, max_bytes=s.spool_max_mb << 20)
        self._drainer = DrainerProcess(
            self._spool.dir,
            self.spool_name,
            s.database_url,
            s.log_format,
            s.log_level,
            on_stored=self._stored,
        )
        await self._drainer.start()
        # The registry is the one thing we cannot start without.
        if s.registry is not None:
            # TRYGG_REGISTRY: the file is the source of truth at start-up.
            await self._db_retry(
                "store registry file", save_registry, load_registry_file(s.registry)
            )
        self._set_registry(await self._db_retry("load registry", load_registry))
        log.info(
            "registry loaded",
            residents=len(self._registry.residents),
            devices=len(self._registry.devices),
        )
        self._alerting = await self._start_alerting(asyncio.get_running_loop())
        # The database now holds everything spooled: the keys of the newest events
        # let ingest drop what the broker (or a device) sends again after a restart.
        restored = await self._db_retry("recent event keys", recent_event_keys, RECENT_KEYS)
        self.dedup.restore(restored)
        log.info("recent event keys restored", keys=len(restored))
        # Several ingest processes may share the device topics (MQTT v5 shared
        # subscription); see docs/ingest.md for the ordering this gives up.
        share = f"$share/{s.mqtt_shared_group}/" if s.mqtt_shared_group else ""
        source = ReceiverProcess(
            s.mqtt_url,
            s.mqtt_client_id,
            [
                f"{share}trygg/{s.site}/devices/+/{channel}"
                for channel in ("events", "scaip", "status")
            ],
            self._receive,
            session_expiry=s.mqtt_session_expiry,
            log_format=s.log_format,
            log_level=s.log_level,
            max_payload_bytes=s.max_payload_bytes,
        )
        self._source = source  # for the API's /readyz, and to be stopped
        await source.start()
        self._loops = [
            asyncio.create_task(self._consume(), name="consume"),
            asyncio.create_task(self._commit(source), name="commit"),
            asyncio.create_task(self._timers(), name="timers"),
            asyncio.create_task(self._reload_registry(), name="registry"),
            asyncio.create_task(self._retention(), name="retention"),
            asyncio.create_task(self._repeat_counts(), name="repeat-counts"),
        ]
        # Polled, not waited for in a thread: a thread blocked in a wait cannot be
        # cancelled, and would hold up a stop during start-up.
        deadline = time.monotonic() + 30
        while not source.connected.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # What start-up built (modules, the catalogue, the registry, the web app)
        # lives as long as the process: keep it out of the collector's full
        # passes, which otherwise stall the event loop for tens of ms at a time.
        gc.collect()
        gc.freeze()

    async def _check_start(self) -> None:
        """Refuse to start (NotStarted, in ``trygg check``'s words) if the care
        plans of the registry that will run do not fit the catalogue that will
        run: the active version in the database (read here, once the database
        answers), else the rules directory's. Before the registry file is
        stored, so that a refused file never becomes the stored registry."""
        s = self.settings
        if self._managed:
            await self._db_retry("catalogue versions", current_versions)  # the database answers
            self._catalogue_at_start()
        catalogue = getattr(self.engine, "catalogue", None)
        if catalogue is None:  # an engine given from outside (tests): its own business
            return
        if s.registry is not None:
            registry = load_registry_file(s.registry)
        else:
            registry = await self._db_retry("load registry", load_registry)
        problems = care_plan_lines(catalogue, s.registry, registry)
        if problems:
            raise NotStarted(problems)

    async def _shut_down(self) -> None:
        """Stop what start-up got as far as starting, in the order that loses nothing:
        no more messages, then the consumer and commit loops (what is spooled is
        acknowledged), the alert service, and the drainer (best effort: the spool
        keeps what it cannot store now)."""
        source = self._source
        if source is not None:
            source.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(source.wait_stopped(), 3)
        # The runner's loops, and what they spawned (a database call that retries
        # for as long as an outage lasts must not hold up the stop).
        for t in [*self._loops, *self._tasks]:
            t.cancel()
        for t in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        log.debug("stop: loops ended")
        self._dead_log.flush(everything=True)
        if self._alerting is not None:
            await self._stop_alerting()
        log.debug("stop: alerting stopped")
        if self._spool is not None:
            self._spool.close()
        if self._drainer is not None:
            await self._drainer.stop(within=3)
        log.debug("stop: drainer stopped")
        self._close_pool()

    def _close_pool(self) -> None:
        """Close the pool without waiting: threads waiting on it for a connection
        (a call during an outage) fail at once instead of at their timeout."""
        if self._pool is not None and not self._pool.closed:
            self._pool.close(timeout=0.5)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- receive ------------------------------------------------------------
    def _receive(self, messages: list[Message]) -> None:
        """A batch from the receiver process: queue it and wake the consumer."""
        self._inbox.extend(messages)
        self._inbox_wake.set()

    def _take(self, batch: list[Message]) -> None:
        inbox, limit = self._inbox, self.settings.batch_max
        while inbox and len(batch) < limit:
            batch.append(inbox.popleft())

    async def _next_batch(self) -> list[Message]:
        """What has arrived (at most ``batch_max``), waiting ``batch_wait_ms`` for more."""
        batch: list[Message] = []
        while not self._inbox:
            self._inbox_wake.clear()
            if self._inbox:  # arrived between the check and the clear
                break
            await self._inbox_wake.wait()
        self._take(batch)
        wait = self.settings.batch_wait_ms / 1000
        if wait > 0 and len(batch) < self.settings.batch_max:
            await asyncio.sleep(wait)
            self._take(batch)
        return batch

    async def _consume(self) -> None:
        """Decode, deduplicate and evaluate each batch at once; hand it to ``_commit``.

        The consumer never waits for the spool: a batch's alarms are decided
        while the previous batch is still being written, so an alarm does not
        queue behind another batch's fsync.
        """
        assert self._spool is not None
        # The spool's size is checked (a directory listing) every 0.25 s, and sooner
        # when a twentieth of its limit was appended since: under sustained load the
        # check once waited for a pause that never came (a 2 MB limit, 10.5 MB spooled).
        checked, appended = 0.0, 0
        step = max(1, self._spool.max_bytes // 20)
        while True:
            if time.monotonic() - checked >= 0.25 or self._spool.appended - appended >= step:
                await self._hold_while_spool_full()
                checked, appended = time.monotonic(), self._spool.appended
            batch = await self._next_batch()
            received = _now()
            assert self._decoder is not None
            records: list[spooled.Record] = []
            replies: list[tuple[str, bytes]] = []  # SCAIP <mrs>, sent once handed off
            health = HealthBatch()
            batch_lag: timedelta | None = None
            for msg in batch:
                self.stats.received += 1
                where = parse_topic(msg.topic, self.settings.site)
                if where is not None and where[1] == "status":
                    online = parse_status(msg.payload)
                    if online is not None and where[0] in self._decoder.devices:
                        health.status(where[0], online, received)
                        continue
                out = self._decoder.decode(msg.topic, msg.payload, received)
                if out.reply is not None:
                    replies.append(out.reply)
                for d in out.dead:
                    records.append(spooled.dead_letter_record(d))
                    self._dead_log.note(d.device, d.reason)
                for ev in out.events:
                    self.stats.events += 1
                    if self.dedup.seen(ev.key):
                        self.stats.duplicates += 1
                        continue
                    health.seen(ev, received)
                    # Late for its own device: stored flagged, and evaluated by the
                    # immediate rules only (an alarm is never dropped for being late).
                    # The flag is what the engine did, not a guess made before it.
                    late0 = self.engine.late_events
                    sigs = self.engine.process(ev, received)
                    late = self.engine.late_events != late0
                    if late:
                        self.stats.late += 1
                    records.append(spooled.event_record(StoredEvent(ev, received, late)))
                    lag = received - ev.time
                    if not late and (batch_lag is None or lag < batch_lag):
                        batch_lag = lag
                    for sig in sigs:
                        if self._alerting is not None:  # the latency histograms (/metrics)
                            self._alerting.cause = (ev.id, received)
                        self._signal(sig)
                    self._alert_event(ev)  # after: an alarm's position goes on its alert
                    self._shadow_process(ev, received)
            if self._alerting is not None:
                self._alerting.cause = None  # what the timer task raises has no event
            if health.devices:
                records.append(
                    spooled.health_record(
                        {
                            d: (
                                h.last_seen.isoformat() if h.last_seen else None,
                                h.battery,
                                h.online,
                            )
                            for d, h in health.devices.items()
                        }
                    )
                )
            if batch_lag is not None:
                self._note_lag(batch_lag)
            # Wake the timer task only for a deadline earlier than it will wake anyway.
            due = self.engine.next_deadline()
            if due is not None and (self._timer_due is None or due < self._timer_due):
                self._wake_timers.set()
            self._handoff.append(Handoff(batch, records, replies))
            self._handoff_ready.set()
            await asyncio.sleep(0)  # let I/O (webhooks, the console feed) go on between batches

    async def _commit(self, source: ReceiverProcess) -> None:
        """Append handed-off batches to the spool (write + fsync), then acknowledge.

        One append for everything waiting (group commit), in arrival order;
        PUBACKs and SCAIP replies only after the fsync, so at-least-once holds.
        The number of batches waiting is bounded by the broker, which sends no
        more than its in-flight limit of unacknowledged messages.
        """
        assert self._spool is not None
        while True:
            await _wait_or_timeout(self._handoff_ready, 1.0)
            if not self._handoff:
                continue
            done: list[Handoff] = []
            while self._handoff:
                done.append(self._handoff.popleft())
            records = [r for h in done for r in h.records]
            await asyncio.to_thread(self._spool.append, records)
            for h in done:
                for topic, reply in h.replies:
                    source.publish(topic, reply, qos=1)
                for msg in h.messages:
                    source.ack(msg)
            self._stored_soon()

    async def _timers(self) -> None:
        while True:
            # Deadlines are compared with the timer clock, not the wall clock: while
            # a backlog holds the timer clock back, a deadline that is past on the
            # wall clock is not yet due, and waiting on the wall clock would spin.
            clock = self._timer_clock()
            deadline = self.engine.next_deadline()
            wait = 1.0
            if deadline is not None:
                wait = max(0.0, min(wait, (deadline - clock).total_seconds()))
            self._timer_due = clock + timedelta(seconds=wait)
            await _wait_or_timeout(self._wake_timers, wait)
            for sig in self.engine.advance(self._timer_clock()):
                self._signal(sig)
            self._shadow_advance()

    def _timer_clock(self) -> datetime:
        """How far absence timers may run: the wall clock, unless catching up
        (the receipt-delay correction, ``trygg.runner.timer_clock``)."""
        return self._receipt.clock(_now(), time.monotonic())

    def _note_lag(self, lag: timedelta) -> None:
        """Record a batch's smallest delay (receipt time - event time)."""
        self._receipt.note(lag, time.monotonic())

    async def _reload_registry(self) -> None:
        """Pick up registry and care-plan changes without a restart."""
        while True:
            await asyncio.sleep(self.settings.registry_reload_seconds)
            try:
                registry = await asyncio.to_thread(self._db, load_registry)
            except psycopg.Error as exc:
                log.warning("registry reload failed", error=str(exc).strip()[:200])
                continue
            if registry != self._registry:
                self._set_registry(registry)
                log.info(
                    "registry reloaded",
                    residents=len(registry.residents),
                    devices=len(registry.devices),
                )
            if self._managed:
                await self._reload_catalogue()
            await self._reload_overlays()

    async def _repeat_counts(self) -> None:
        """Every 5 s: the counts of repeated log lines whose minute is over."""
        while True:
            await asyncio.sleep(5)
            self._dead_log.flush()
            logs.flush_repeated()

    async def _retention(self) -> None:
        """Apply the retention policy daily at about 03:30 local time.

        Off the event path, in a worker thread; idempotent, so a restart that
        runs it twice in a day does no harm. The random minutes spread the
        load when several sites share one database server.
        """
        tz = ZoneInfo(self.settings.report_timezone)
        while True:
            at = next_retention_run(datetime.now(tz)) + timedelta(minutes=random.uniform(0, 20))
            await asyncio.sleep((at - datetime.now(tz)).total_seconds())
            try:
                result = await asyncio.to_thread(
                    self._db, lambda conn: run_retention(conn, self.settings, _now())
                )
                log.info("retention applied", summary=result.summary())
            except psycopg.Error as exc:
                log.error("retention failed; trying again tomorrow", error=str(exc).strip()[:300])

    # --- store (the drainer process) ----------------------------------------
    def pending_bytes(self) -> int:
        """The spool's unstored backlog: from where the drainer has stored to, or,
        before it could tell (no database since start), the whole spool."""
        if self._spool is None:
            return 0
        since = self._drainer.position if self._drainer is not None else None
        if since is None:
            segs = self._spool.segments()
            since = Position(segs[0] if segs else 0, 0)
        pending = self._spool.pending_bytes(since)
        self.stats.spool_bytes = pending
        return pending

    def storage(self) -> tuple[bool, str]:
        """Whether storing keeps up, and if not, why in words (for /readyz): the
        spool above its high-water mark, or nothing stored for ``store_stall_s``
        seconds while records wait."""
        pending = self.pending_bytes()
        problems: list[str] = []
        limit = self._spool.max_bytes if self._spool is not None else 0
        if limit and pending >= limit * SPOOL_HIGH_WATER:
            problems.append(
                f"the spool holds {pending} unstored bytes, above its high-water mark "
                f"({SPOOL_HIGH_WATER:.0%} of {limit})"
            )
        d = self._drainer
        if d is not None and pending > 0:
            idle = time.monotonic() - d.stored_at
            if idle > self.settings.store_stall_s:
                why = ": the database is unavailable" if d.db_down_since is not None else ""
                problems.append(
                    f"nothing stored for {idle:.0f} s with {pending} bytes waiting{why}"
                )
        return not problems, "; ".join(problems)

    async def _hold_while_spool_full(self) -> None:
        """While the spool is at its limit, take no more messages: the broker keeps
        them (it sends no more than its in-flight limit unacknowledged)."""
        assert self._spool is not None
        if self.pending_bytes() < self._spool.max_bytes:
            return
        log.warning(
            "spool full: holding messages at the broker until the database catches up",
            pending_bytes=self.stats.spool_bytes,
            limit_bytes=self._spool.max_bytes,
        )
        began = time.monotonic()
        while self.pending_bytes() >= self._spool.max_bytes:  # noqa: ASYNC110 - files on disk
            await asyncio.sleep(0.5)
        log.info(
            "spool below its limit again: taking messages",
            held_s=round(time.monotonic() - began, 1),
            pending_bytes=self.stats.spool_bytes,
        )

    def _stored(self, stored: int, dead: int) -> None:
        """The drainer stored a run: statistics and the spool's fill level."""
        self.stats.stored += stored
        self.stats.dead_letters += dead
        self.pending_bytes()

    def _stored_soon(self) -> None:
        """Something was appended to the spool: the drainer should look."""
        if self._drainer is not None:
            self._drainer.wake()

    # --- alerts -------------------------------------------------------------
    async def _start_alerting(self, loop: asyncio.AbstractEventLoop) -> AlertService:
        """The alert service (trygg.runner.alerting), its channels and the HTTP API."""
        from trygg.runner.wiring import start_alerting

        return await start_alerting(self, loop)

    async def _stop_alerting(self) -> None:
        from trygg.runner.wiring import stop_alerting

        await stop_alerting(self)

    def _alert_event(self, ev: Event) -> None:
        if self._alerting is not None and gated(ev):
            self._alerting.on_event(ev)

    def _signal(self, sig: Signal) -> None:
        assert self._alerting is not None
        self._alerting.on_signal(sig)


async def _wait_or_timeout(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass, then clear it.

    Cheaper than ``asyncio.wait_for(event.wait(), …)``, which makes a task
    per call; this loop runs once per timer tick or wake-up.
    """
    if seconds > 0 and not event.is_set():
        handle = asyncio.get_running_loop().call_later(seconds, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()
    event.clear()


def next_retention_run(local_now: datetime, at: dtime = dtime(3, 30)) -> datetime:
    """The next ``at`` o'clock local wall time after ``local_now`` (aware, in its zone)."""
    tz = local_now.tzinfo
    day = local_now.date()
    when = datetime.combine(day, at, tz)
    if when <= local_now:
        when = datetime.combine(day + timedelta(days=1), at, tz)
    return when


def _exit_now() -> None:
    log.error("stop took longer than STOP_WITHIN seconds: exiting now", within=STOP_WITHIN)
    logging.shutdown()
    os._exit(1)


def run_forever(settings: Settings, engine: RuleEngine | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if not stop.is_set():
                stop.set()
                # The backstop: whatever holds up the orderly stop (a thread stuck in
                # a connect to a database that does not answer), the process ends in
                # time. Nothing acknowledged is lost: the spool has it, fsync'ed.
                backstop = threading.Timer(STOP_WITHIN, _exit_now)
                backstop.daemon = True  # it must not itself hold the exit up
                backstop.start()

        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, on_signal)
        await EmbeddedRunner(settings, engine).run(stop)

    asyncio.run(main())
