"""The embedded runner: the whole pipeline on one asyncio event loop, with two helpers.

    receiver process --Messages--> queue --> decode --> dedup --> rules --> alerts --> notify
                                                  \\--> spool (fsync) --> PUBACK
                                   spool files --> drainer process --> store (exactly once)

The receiver process (trygg.ingest.receiver) runs paho and hands messages
over in batches; the event path on the loop (consume, commit, timers) is
:class:`trygg.runner.pipeline.Pipeline`. The drainer, a process of its own
(trygg.runner.drainer), writes the spool to PostgreSQL whenever PostgreSQL is
there; while it is not, the spool grows (bounded) and alerting goes on.

This module starts and stops it all, in the order that loses nothing, with
its collaborators: the catalogue versions and district overlays
(trygg.runner.catalogues), the shadow runs (trygg.runner.shadows), the
periodic reloads and retention (trygg.runner.periodic), and the alert
service with its HTTP API (trygg.runner.wiring).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from typing import Any

from psycopg_pool import ConnectionPool

from trygg import logs
from trygg.check import NotStarted, care_plan_lines
from trygg.heap import freeze_startup_heap
from trygg.ingest.decode import DecodeLimits, Decoder
from trygg.ingest.dedup import RecentKeys
from trygg.ingest.receiver import ReceiverProcess
from trygg.registry import Registry
from trygg.registry import load_registry as load_registry_file
from trygg.retry import logged, retry_async
from trygg.rules import CarePlanError, Engine
from trygg.runner.alerting import AlertService
from trygg.runner.catalogues import Catalogues, standard_engine
from trygg.runner.drainer import DrainerProcess
from trygg.runner.periodic import next_retention_run, reload_registry, repeat_counts, retention
from trygg.runner.pipeline import Pipeline, RuleEngine
from trygg.runner.spool import Spool
from trygg.runner.wiring import start_alerting, start_http, stop_alerting
from trygg.settings import Settings
from trygg.store import DB_AWAY
from trygg.store.events import recent_event_keys
from trygg.store.registry import load_registry, save_registry
from trygg.store.versions import current as current_versions

__all__ = ["STOP_WITHIN", "EmbeddedRunner", "RuleEngine", "next_retention_run", "run_forever"]

log = logs.get("trygg.runner")

# SIGTERM to exit, in every state (tested): orchestrators kill after 10-30 s.
STOP_WITHIN = 10.0
# /readyz says not ready above this share of TRYGG_SPOOL_MAX_MB.
SPOOL_HIGH_WATER = 0.8
# Event keys restored at start-up: as many as the live set is sure to hold.
RECENT_KEYS = RecentKeys().capacity // 2


class EmbeddedRunner(Pipeline):
    """The event path (:class:`Pipeline`) with what starts, reloads and stops it."""

    def __init__(self, settings: Settings, engine: RuleEngine | None = None) -> None:
        super().__init__(settings, engine or standard_engine(settings))
        self.spool_name = settings.mqtt_client_id
        self.ready = asyncio.Event()
        self._pool: ConnectionPool | None = None
        self._registry: Registry = Registry()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []  # the runner's own loops (consume, ...)
        self._source: ReceiverProcess | None = None
        self._http: Any = None  # the HTTP API (trygg.runner.wiring.start_http)
        # Catalogue versions (docs/rules.md): without an engine given, the active
        # version stored in the database is run, and a shadow candidate beside it.
        # District overlays: the engine runs the registry they resolve; a bad
        # overlay file refuses the start here, like a bad rule file.
        self._catalogues = Catalogues(
            settings,
            self,
            self._shadows,
            managed=engine is None,
            db=self._db,
            registry=lambda: self._registry,
            started=lambda: self._decoder is not None,
        )

    @property
    def _shadow(self) -> Engine | None:
        """The catalogue version running in shadow, if any."""
        return self._shadows.engine

    @property
    def _shadow_version(self) -> str | None:
        return self._shadows.version

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
            self.engine.update_registry(self._catalogues.overlays.registry(registry))
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
        self._shadows.refused.clear()  # a version refused for its care plans may fit now
        self._shadows.update_registry(self._catalogues.overlays, registry)

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
        self._alerting = await self._start_alerting()
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
            asyncio.create_task(
                reload_registry(
                    s, self._db, lambda: self._registry, self._set_registry, self._catalogues
                ),
                name="registry",
            ),
            asyncio.create_task(retention(s, self._db), name="retention"),
            asyncio.create_task(repeat_counts(self._dead_log), name="repeat-counts"),
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
        if self._catalogues.managed:
            await self._db_retry("catalogue versions", current_versions)  # the database answers
            self._catalogues.at_start()
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

    # --- alerts -------------------------------------------------------------
    async def _start_alerting(self) -> AlertService:
        """The alert service (trygg.runner.alerting), its channels and the HTTP API."""
        assert self._spool is not None and self._drainer is not None
        service = await start_alerting(
            self.settings,
            self._spool,
            self._drainer,
            db=self._db,
            db_retry=self._db_retry,
            on_persisted=self._stored_soon,
            registry=lambda: self._registry,
        )
        if self.settings.http_port:
            self._http = await start_http(self.settings, service, self)
        return service

    async def _stop_alerting(self) -> None:
        await stop_alerting(self._http, self._alerting)


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
        runner = EmbeddedRunner(settings, engine)
        freeze_startup_heap()  # no long full collections in the alarm path (trygg.heap)
        await runner.run(stop)

    asyncio.run(main())
