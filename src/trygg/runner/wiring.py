"""Wiring the alert service, its channels and the HTTP API into the embedded runner.

Kept apart from ``embedded.py`` so that the runner's alert section stays a few
lines: ``start_alerting`` builds the channels from the settings, drains the
spool (so the database is current) and rebuilds the alert service from the
database; ``start_http`` starts the API and console on ``http_host:http_port``
in the same event loop. They take the runner's pieces as arguments: this
module does not know the runner (``embedded.py`` imports it, not the reverse).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from trygg import logs
from trygg.alerts.contacts import Channel
from trygg.notify.base import Channel as ChannelImpl
from trygg.notify.console import ConsoleChannel, ConsoleFeed
from trygg.notify.retry import GiveUp, RetryPolicy
from trygg.registry import Registry
from trygg.runner.alerting import AlertService
from trygg.runner.drainer import DrainerProcess
from trygg.runner.routing import routing_from
from trygg.runner.spool import Position, Spool
from trygg.settings import Settings

log = logs.get("trygg.runner")


def build_channels(
    settings: Any, feed: ConsoleFeed, *, mqtt_client_id: str | None = None
) -> dict[Channel, ChannelImpl]:
    """The notification channels the settings configure. ``mqtt_client_id``: the MQTT
    alert channel's own client id (default ``<TRYGG_MQTT_CLIENT_ID>-notify``); processes
    that run side by side (workers) need one each, or the broker hands one session
    back and forth between them and every publish waits for a reconnect."""
    from trygg.notify.apprise_channel import AppriseChannel
    from trygg.notify.webhooks import NamedWebhooks

    s = settings
    channels: dict[Channel, ChannelImpl] = {
        Channel.WEBHOOK: NamedWebhooks(webhook_urls(s), s.webhook_secret),
        Channel.CONSOLE: ConsoleChannel(feed),
        Channel.APPRISE: AppriseChannel(console_url=console_url(s)),
    }
    if s.smtp_host:
        from trygg.notify.email import Email

        channels[Channel.EMAIL] = Email(
            s.smtp_host,
            s.smtp_port,
            s.smtp_from,
            s.smtp_user,
            s.smtp_password,
            s.smtp_tls,
            console_url=console_url(s),
        )
    from trygg.notify.mqtt import MqttAlerts

    client_id = mqtt_client_id or f"{s.mqtt_client_id}-notify"
    channels[Channel.MQTT] = MqttAlerts(s.mqtt_url, client_id, s.site)
    return channels


def webhook_urls(settings: Any) -> dict[str, str]:
    """The configured webhooks by name (``default``: TRYGG_WEBHOOK_URL)."""
    urls = dict(settings.webhooks)
    if settings.webhook_url:
        urls["default"] = settings.webhook_url
    return urls


def outbox_policy(settings: Any) -> tuple[RetryPolicy, GiveUp]:
    """The notification retry policy and give-up times from the settings."""
    return (
        RetryPolicy(settings.notify_retry_initial_s, settings.notify_retry_max_s),
        GiveUp.parse(settings.notify_give_up),
    )


def console_url(settings: Any) -> str | None:
    if settings.public_url:
        return str(settings.public_url).rstrip("/") + "/console"
    if settings.http_port:
        return f"http://{settings.http_host}:{settings.http_port}/console"
    return None


async def start_alerting(
    settings: Settings,
    spool: Spool,
    drainer: DrainerProcess,
    *,
    db: Callable[..., Any],
    db_retry: Callable[..., Awaitable[Any]],
    on_persisted: Callable[[], None],
    registry: Callable[[], Registry],
) -> AlertService:
    """The alert service for the ``settings``, rebuilt from the database once the
    drainer has stored all of ``spool``. ``db(fn, *args)`` runs ``fn(conn, *args)``
    on a pooled connection (blocking), ``db_retry(what, fn, *args)`` likewise in a
    worker thread, retried while the database is away; ``on_persisted`` wakes the
    drainer; ``registry()`` is the registry in force."""
    s = settings
    routing = routing_from(s.routing, webhooks=webhook_urls(s))
    retry, give_up = outbox_policy(s)
    feed = ConsoleFeed()

    async def append(records: list[dict[str, Any]]) -> Position:
        return await asyncio.to_thread(spool.append, records)

    def stored(pos: Position) -> bool:
        """Whether the database holds everything spooled before ``pos``."""
        return drainer.position is not None and drainer.position >= pos

    async def retried(fn: Any, *args: Any, **kw: Any) -> Any:
        return await db_retry(getattr(fn, "__name__", "alerts"), lambda c: fn(c, *args, **kw))

    async def db_nowait(fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(db, lambda c: fn(c, *args, **kw))

    service = AlertService(
        routing,
        spool_append=append,
        db=retried,
        channels=build_channels(s, feed),
        feed=feed,
        on_persisted=on_persisted,
        registry=registry,
        console_url=console_url(s),
        db_nowait=db_nowait,
        stored=stored,
        retry=retry,
        give_up=give_up,
    )
    # The database must hold everything spooled before the gates are rebuilt.
    await drainer.stored_to(spool.end)
    await service.start(registry())
    return service


async def start_http(settings: Settings, service: AlertService, runner: object) -> Any:
    """The HTTP API and console for ``service`` (``runner``: what the API reports
    on, see trygg.api.app), or None if the port cannot be had; its handle is for
    :func:`stop_alerting`."""
    import uvicorn

    from trygg.api.app import create_app

    s = settings
    app = create_app(service=service, runner=runner)
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in s.http_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((s.http_host, s.http_port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        log.error("HTTP API not started", host=s.http_host, port=s.http_port, error=str(exc))
        return None

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the runner owns SIGINT/SIGTERM
            yield

    config = uvicorn.Config(
        app,
        log_config=None,  # its loggers go to the root logger: trygg.logs renders them
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    log.info("http api listening", url=f"http://{s.http_host}:{s.http_port}/")
    return (server, task, sock)


async def stop_alerting(http: Any, service: AlertService | None) -> None:
    """Stop the HTTP API (``http``: :func:`start_http`'s handle), then the service."""
    if http is not None:
        server, task, sock = http
        server.config.app.state.closing = True
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 3)
        sock.close()
    if service is not None:
        await service.stop()
