"""``trygg api``: the HTTP API and care-staff console for the distributed runner.

This module serves it: the listening socket and uvicorn, the database pool,
the Kafka producer for staff actions and the registry reload, started and
stopped together (``serve``, ``run_api``). The alert service behind the API
(reads from the database, staff actions through Kafka, silences, the access
log) is :mod:`trygg.distributed.alert_service`.

See docs/distributed.md ("The API and console").
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import psycopg

from trygg import logs
from trygg.child import stop_on_signals
from trygg.distributed.alert_service import ApiRunner, DistributedAlertService, Link
from trygg.retry import logged, retry_async
from trygg.settings import Settings
from trygg.store.registry import load_registry

log = logs.get("trygg.api")


# --------------------------------------------------------------------- wiring


class Database:
    """A small connection pool: ``call`` for the API's async reads (in a thread),
    ``call_sync`` for the few writes create_app makes synchronously."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(
            url, min_size=1, max_size=8, open=False, kwargs={"autocommit": True}, timeout=timeout
        )

    def open(self) -> None:
        self.pool.open(wait=False)

    def call_sync(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        with self.pool.connection() as conn:
            return fn(conn, *args, **kw)

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(self.call_sync, fn, *args, **kw)

    def close(self) -> None:
        self.pool.close()


class Actions:
    """The Kafka producer for staff actions (acks=all, like the bridge's), connected in
    the background so the API answers /healthz while Kafka is still coming up."""

    def __init__(self, settings: Settings, link: Link) -> None:
        self.settings = settings
        self.link = link
        self.producer: Any = None

    async def connect(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        from trygg.distributed.bridge import producer_kwargs

        async def start() -> Any:
            producer = AIOKafkaProducer(**producer_kwargs(self.settings))
            try:
                await producer.start()
            except (KafkaError, OSError):
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            return producer

        self.producer = await retry_async(
            start,
            retry_on=(KafkaError, OSError),
            on_retry=logged(log, "kafka unavailable, retrying"),
        )
        self.link.connected.set()
        log.info("kafka connected")

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """Return once the broker has the record (acks=all)."""
        await self.producer.send_and_wait(topic, value, key=key)

    async def close(self) -> None:
        self.link.connected.clear()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()


async def _reload_registry(db: Database, runner: ApiRunner, every: float) -> None:
    """The registry (teams of residents and devices) for the access checks."""
    while True:
        try:
            reg = await db.call(load_registry)
            if reg != runner._registry:
                runner._registry = reg
                log.info("registry loaded", residents=len(reg.residents))
        except (psycopg.Error, OSError) as exc:
            log.warning("registry reload failed", error=str(exc).strip()[:200])
        await asyncio.sleep(every)


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _server_class() -> type[Any]:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # run_api owns SIGINT/SIGTERM
            yield

    return _Server


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API and console until ``stop`` is set."""
    import uvicorn

    from trygg.api.app import create_app

    _Server = _server_class()
    s = settings
    sock = _listen(s.http_host, s.http_port)  # first: a taken port fails before anything runs
    db = Database(s.database_url)
    db.open()
    runner = ApiRunner()
    actions = Actions(s, runner._source)
    service = DistributedAlertService(
        s, db=db.call, db_sync=db.call_sync, send=actions.send, runner=runner
    )
    app = create_app(
        service=service,
        runner=runner,
        db=db.call,
        max_body_bytes=s.http_max_body_bytes,
        settings=s,  # sign-in: session lifetimes, the identity provider, the public URL
    )
    config = uvicorn.Config(
        app,
        log_config=None,  # its loggers go to the root logger: trygg.logs renders them (JSON)
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]), name="http"),
        asyncio.create_task(actions.connect(), name="kafka"),
        asyncio.create_task(service.run_poll(), name="poll"),
        asyncio.create_task(_reload_registry(db, runner, s.registry_reload_seconds), name="reg"),
    ]
    log.info("api listening", url=f"http://{s.http_host}:{s.http_port}/", kafka=s.kafka_bootstrap)
    await stop.wait()
    app.state.closing = True
    server.should_exit = True
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(tasks[0], 3)
    for t in tasks[1:]:
        t.cancel()
    for t in tasks[1:]:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await service.flush()
    await actions.close()
    sock.close()
    await asyncio.to_thread(db.close)
    log.info("api stopped")


def run_api(settings: Settings) -> None:
    """Run ``trygg api`` until SIGINT/SIGTERM."""

    async def main() -> None:
        await serve(settings, stop_on_signals())

    asyncio.run(main())
