"""The production worker: built from the settings and the database, run under
Faust's worker loop (``trygg worker``).

The catalogue, registry, district overlays and routing are read and checked at
start (a care plan that does not fit refuses the start in ``trygg check``'s
words); the registry, overlays and silences are reloaded while it runs
(``reloads``). Logging is trygg's, not mode's (docs/distributed.md, "Logs").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trygg import logs
from trygg.alerts.silences import Silence
from trygg.distributed.overlays import overlay_inputs, rules_dirs
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.app import Worker
from trygg.distributed.worker.rules_core import RulesCore
from trygg.heap import freeze_startup_heap
from trygg.registry import Registry
from trygg.rules.overlays import OverlayInputs
from trygg.settings import Settings

log = logs.get("trygg.worker")
CLAIM_WAIT_S = 1.0  # the longest a first notification waits to learn who sends it


def build_worker(settings: Settings, applied_log: Path | None = None) -> Worker:
    """The production worker: catalogue, registry and routing from the settings and database."""
    import psycopg
    from psycopg_pool import ConnectionPool

    from trygg.check import NotStarted, care_plan_lines
    from trygg.notify.console import ConsoleFeed
    from trygg.retry import logged, retry_async
    from trygg.rules import load_catalogue
    from trygg.runner.routing import routing_from
    from trygg.runner.wiring import build_channels, webhook_urls
    from trygg.store import DB_AWAY
    from trygg.store.claims import RELAY_LEASE_S, WorkerClaims
    from trygg.store.registry import RegistryReader

    s = settings
    dirs = rules_dirs(s)
    catalogue = load_catalogue(dirs)
    pool = ConnectionPool(
        s.database_url, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}, timeout=10
    )
    pool.open(wait=False)

    def _call(fn: Any, *args: Any) -> Any:
        with pool.connection() as conn:
            return fn(conn, *args)

    async def db(fn: Any, *args: Any) -> Any:
        return await retry_async(
            lambda: asyncio.to_thread(_call, fn, *args),
            retry_on=DB_AWAY,
            on_retry=logged(log, "database unavailable, retrying"),
        )

    claims = WorkerClaims(s.database_url, RELAY_LEASE_S, CLAIM_WAIT_S)

    async def claim(key: str, alert_id: str) -> str | float | None:
        # No retry and a short wait: a first notification is never held for the database
        # (docs/distributed.md, "The relay"); without an answer it is sent.
        try:
            v = await claims.claim(key, alert_id)
        except Exception as exc:
            log.warning("notification claim not answered, sending", error=repr(exc)[:200])
            return None
        return v.timestamp() if isinstance(v, datetime) else v

    async def claim_sent(key: str) -> None:
        try:
            await claims.sent(key)
        except Exception as exc:  # the relay pages it after the worker's lease: logged
            log.warning("notification claim not marked sent", error=repr(exc)[:200])

    stored_registry = RegistryReader()  # parsed again only when it changed

    def _registry() -> Registry:
        with psycopg.connect(s.database_url, connect_timeout=10) as conn:
            return stored_registry.read(conn)

    def _silences() -> list[Silence]:
        from trygg.store.alerts import load_silences

        with psycopg.connect(s.database_url, connect_timeout=10) as conn:
            rows = load_silences(conn, since=datetime.now(UTC))
        return [Silence.model_validate(r) for r in rows]

    def _overlay_inputs() -> OverlayInputs:
        return overlay_inputs(s, dirs)

    registry = _registry()
    # The stored care plans against the catalogue that runs: refused in trygg check's words.
    problems = care_plan_lines(catalogue, None, registry)
    if problems:
        raise NotStarted(problems)
    routing = routing_from(s.routing, webhooks=webhook_urls(s))
    # District overlays: a bad one refuses the start, naming file:line (OverlayError).
    rules = RulesCore.layered(catalogue, registry, *_overlay_inputs())
    alerts = AlertsCore(routing)
    alerts.update_registry(registry)
    w = Worker(
        s,
        rules=rules,
        alerts=alerts,
        db=db,
        claim=claim,
        claim_sent=claim_sent,
        load_registry=lambda: asyncio.to_thread(_registry),
        load_silences=lambda: asyncio.to_thread(_silences),
        load_overlays=lambda: asyncio.to_thread(_overlay_inputs),
        # one MQTT client id per worker process (workers run side by side)
        channels=build_channels(
            s,
            ConsoleFeed(),
            mqtt_client_id=f"{s.mqtt_client_id}-{socket.gethostname()}-{os.getpid()}-notify",
        ),
        applied_log=applied_log,
    )
    w._registry = registry
    return w


def run_worker(settings: Settings, applied_log: Path | None = None) -> None:
    """Run a worker until SIGINT/SIGTERM (Faust's own worker loop)."""
    from faust.worker import Worker as FaustWorker

    w = build_worker(settings, applied_log)
    log.info(
        "worker starting",
        kafka=settings.kafka_bootstrap,
        partitions=settings.kafka_partitions,
        web=f"{settings.worker_web_host}:{settings.worker_web_port}"
        if settings.worker_web
        else None,
        clock=settings.worker_clock,
    )
    fw = FaustWorker(
        w.app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        # trygg's logging, not mode's (docs/distributed.md, "Logs"): its records
        # through trygg.logs' handler, and stdout/stderr left alone (mode would
        # wrap each of trygg's own lines into a "[WARNING] ..." record).
        logging_config=logs.dict_config(settings.log_level),
        redirect_stdouts=False,
    )
    fw.spinner = None  # a terminal spinner: escape codes in a log that is no terminal
    freeze_startup_heap()  # no 70-100 ms full collections in the alarm path (trygg.heap)
    with contextlib.suppress(SystemExit):
        fw.execute_from_commandline()
