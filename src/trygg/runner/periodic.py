"""The embedded runner's periodic tasks, off the event path.

- the registry reload (every ``registry_reload_seconds``), and with it the
  catalogue versions and the district overlays (:mod:`trygg.runner.catalogues`);
- the retention policy, daily at about 03:30 local time;
- the counts of repeated log lines, every 5 s.

Each is a loop the runner starts as a task and cancels when it stops; each
takes what it needs as arguments.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from trygg import logs
from trygg.registry import Registry
from trygg.repeats import RepeatLog
from trygg.runner.catalogues import Catalogues
from trygg.settings import Settings
from trygg.store.registry import RegistryReader
from trygg.store.retention import run_retention

log = logs.get("trygg.runner")


async def reload_registry(
    settings: Settings,
    db: Callable[..., Any],
    current: Callable[[], Registry],
    take: Callable[[Registry], None],
    catalogues: Catalogues,
) -> None:
    """Pick up registry and care-plan changes without a restart (``take`` them,
    the runner's ``_set_registry``), then catalogue versions and overlays. The registry
    is parsed again only when the database's digest of it changed (``RegistryReader``:
    parsing holds the GIL, and the event loop with it)."""
    stored = RegistryReader()
    while True:
        await asyncio.sleep(settings.registry_reload_seconds)
        try:
            registry = await asyncio.to_thread(db, stored.read)
        except psycopg.Error as exc:
            log.warning("registry reload failed", error=str(exc).strip()[:200])
            continue
        if registry != current():
            take(registry)
            log.info(
                "registry reloaded",
                residents=len(registry.residents),
                devices=len(registry.devices),
            )
        if catalogues.managed:
            await catalogues.reload()
        await catalogues.reload_overlays()


async def repeat_counts(dead_log: RepeatLog) -> None:
    """Every 5 s: the counts of repeated log lines whose minute is over."""
    while True:
        await asyncio.sleep(5)
        dead_log.flush()
        logs.flush_repeated()


async def retention(settings: Settings, db: Callable[..., Any]) -> None:
    """Apply the retention policy daily at about 03:30 local time.

    Off the event path, in a worker thread; idempotent, so a restart that
    runs it twice in a day does no harm. The random minutes spread the
    load when several sites share one database server.
    """
    tz = ZoneInfo(settings.report_timezone)
    while True:
        at = next_retention_run(datetime.now(tz)) + timedelta(minutes=random.uniform(0, 20))
        await asyncio.sleep((at - datetime.now(tz)).total_seconds())
        try:
            result = await asyncio.to_thread(
                db, lambda conn: run_retention(conn, settings, datetime.now(UTC))
            )
            log.info("retention applied", summary=result.summary())
        except psycopg.Error as exc:
            log.error("retention failed; trying again tomorrow", error=str(exc).strip()[:300])


def next_retention_run(local_now: datetime, at: dtime = dtime(3, 30)) -> datetime:
    """The next ``at`` o'clock local wall time after ``local_now`` (aware, in its zone)."""
    tz = local_now.tzinfo
    day = local_now.date()
    when = datetime.combine(day, at, tz)
    if when <= local_now:
        when = datetime.combine(day + timedelta(days=1), at, tz)
    return when
