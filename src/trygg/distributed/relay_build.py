"""The bridge's relay put together from the settings and the database, and run.

The relay judges alarms as a worker would (``trygg.distributed.relay``), so it is
built from the same parts as the worker (``worker.run.build_worker``): the
catalogue with the district overlays in force, the registry, the routing file and
the notification channels; and it asks the database, through ``store`` calls on a
small pool of its own, who has claimed an alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg_pool import ConnectionPool

from trygg import logs
from trygg.alerts.routing_config import RoutingConfig
from trygg.alerts.silences import Silence
from trygg.distributed.overlays import overlay_inputs, rules_dirs
from trygg.distributed.relay import TICK_S, Relay
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.rules_core import RulesCore
from trygg.registry import Registry
from trygg.settings import Settings
from trygg.store import claims
from trygg.store.alerts import load_records_for_rebuild, load_silences

log = logs.get("trygg.relay")
OVERLAY_RELOAD_S = 10.0


def relay_wanted(settings: Settings) -> bool:
    """On the wall clock only: on the event clock the workers hold events until the
    slowest bridge has reached them, so a late notification there is no stall."""
    return settings.relay_after_s > 0 and settings.worker_clock == "wall"


T = TypeVar("T")
DB_WAIT_S = 3.0  # the longest the relay waits for the database (then the workers page)
CLAIMS_KEPT = timedelta(days=1)


class DbStore:
    """The relay's ``Store`` over the database (``store.claims``, ``store.alerts``)."""

    def __init__(self, pool: ConnectionPool, routing: RoutingConfig, name: str) -> None:
        self.pool = pool
        self.routing = routing
        self.name = name

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            with self.pool.connection() as conn:
                return fn(conn, *args)

        return await asyncio.wait_for(asyncio.to_thread(call), DB_WAIT_S)

    async def claims(self, alert_id: str) -> dict[str, bool | float]:
        got = await self._run(claims.alert_claims, alert_id)
        return {k: v.timestamp() if isinstance(v, datetime) else v for k, v in got.items()}

    async def state(self, resident: str) -> tuple[list[list[dict[str, Any]]], list[Silence]]:
        def read(conn: psycopg.Connection) -> tuple[list[list[dict[str, Any]]], list[Silence]]:
            now = datetime.now(UTC)
            recs = load_records_for_rebuild(
                conn, now - self.routing.gates.lookback, resident=resident
            )
            return recs, [Silence.model_validate(r) for r in load_silences(conn, since=now)]

        return await self._run(read)

    async def claim(self, alert_id: str, keys: list[str]) -> bool:
        return await self._run(claims.claim_for_relay, alert_id, keys, self.name)

    async def settle(self, delivered: list[str], failed: list[str]) -> None:
        await self._run(claims.relay_settled, delivered, failed)

    async def forget_old(self) -> int:
        return await self._run(claims.forget_old_claims, CLAIMS_KEPT)


def build_relay(settings: Settings, registry: Registry, producer: AIOKafkaProducer) -> Relay:
    """The relay of one bridge; raises (OverlayError) where the worker would refuse to start."""
    from trygg.notify.console import ConsoleFeed
    from trygg.rules import load_catalogue
    from trygg.runner.routing import routing_from
    from trygg.runner.wiring import build_channels, webhook_urls

    s = settings
    dirs = rules_dirs(s)
    rules = RulesCore.layered(load_catalogue(dirs), registry, *overlay_inputs(s, dirs))
    routing = routing_from(s.routing, webhooks=webhook_urls(s))
    alerts = AlertsCore(routing)
    alerts.update_registry(registry)

    async def send(records: list[tuple[str, str, bytes]]) -> None:
        futs = [await producer.send(t, v, key=k.encode()) for t, k, v in records]
        await asyncio.gather(*futs)

    pool = ConnectionPool(
        s.database_url, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}, timeout=3
    )
    pool.open(wait=False)
    return Relay(
        s,
        rules=rules,
        alerts=alerts,
        channels=build_channels(s, ConsoleFeed(), mqtt_client_id=f"{s.mqtt_client_id}-relay"),
        store=DbStore(pool, routing, s.mqtt_client_id),
        send=send,
    )


async def run_relay(relay: Relay, settings: Settings) -> None:
    """Look at the watches every ``TICK_S``, reload the district overlays, and delete
    old claims hourly, until cancelled."""
    side = [
        asyncio.create_task(_reload_overlays(relay, settings), name="relay-overlays"),
        asyncio.create_task(_forget_old_claims(relay), name="relay-claims"),
    ]
    log.info("relay running", after_s=settings.relay_after_s)
    try:
        while True:
            await asyncio.sleep(TICK_S)
            relay.tick()
    finally:
        for t in side:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for ch in relay.channels.values():
            with contextlib.suppress(Exception):
                await ch.aclose()
        if isinstance(relay.store, DbStore):
            await asyncio.to_thread(relay.store.pool.close)


async def _forget_old_claims(relay: Relay) -> None:
    while isinstance(relay.store, DbStore):
        with contextlib.suppress(Exception):
            await relay.store.forget_old()
        await asyncio.sleep(3600)


async def _reload_overlays(relay: Relay, s: Settings) -> None:
    """The district overlays in force, as the worker reloads them (a refused one
    leaves those in force, as there)."""
    dirs = rules_dirs(s)
    while True:
        await asyncio.sleep(OVERLAY_RELOAD_S)
        try:
            inputs = await asyncio.to_thread(overlay_inputs, s, dirs)
            if relay.rules.update_overlays(*inputs):
                relay.types = relay.rules.engine.immediate_types()
                log.info("relay: district overlays reloaded")
        except Exception as exc:
            log.warning("relay: overlays not reloaded", error=str(exc)[:200])
