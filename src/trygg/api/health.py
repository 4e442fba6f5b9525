"""The health routes: liveness, readiness (MQTT, database, spool), the
Prometheus metrics (:mod:`trygg.api.exposition`) and the notification
channels' health.

``/healthz``, ``/readyz`` and ``/metrics`` answer without a token (probes and
the scraper); ``/api/health/channels`` is an API route like the others.
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse

from trygg.api import schemas
from trygg.api.context import ApiContext
from trygg.api.problems import ProblemError
from trygg.store import ping as ping_database
from trygg.store.access import User


def install(app: FastAPI, api: APIRouter, ctx: ApiContext, current_user: Any) -> None:
    """The probes and ``/metrics`` on ``app``, the channels' health on ``api``."""
    UserDep = Annotated[User, Depends(current_user)]
    service, runner, db = ctx.service, ctx.runner, ctx.db

    @app.get("/healthz", tags=["health"], summary="liveness", response_model=schemas.Liveness)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="readiness: MQTT, database, spool",
        response_model=schemas.Readiness,
        responses={503: {"description": "not ready: the problem has the checks as members"}},
    )
    async def readyz() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        src = getattr(runner, "_source", None)
        checks["mqtt"] = bool(src is not None and src.connected.is_set())
        # The receiver's own reason: disconnected, or its session taken over lately.
        if (why := getattr(src, "not_ready_reason", lambda: None)()) is not None:
            checks["mqtt"], checks["mqtt_reason"] = False, why
        try:
            await asyncio.wait_for(db(ping_database), 2.0)
            checks["database"] = True
        except Exception:
            checks["database"] = False
        storage = getattr(runner, "storage", None)
        if storage is not None:  # the embedded runner: its spool and drainer
            checks["spool"], why = storage()
            checks["spool_bytes"] = runner.stats.spool_bytes
            if why:
                checks["spool_reason"] = why
        else:
            checks["spool"] = True
        checks["alerts"] = service.started
        failing = [k for k in ("mqtt", "database", "spool", "alerts") if not checks[k]]
        if failing:
            raise ProblemError(503, f"not ready: {', '.join(failing)}", ready=False, **checks)
        return {"ready": True, **checks}

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> PlainTextResponse:
        from trygg.api.exposition import render

        return PlainTextResponse(
            render(runner, service, http=app.state),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    @api.get(
        "/api/health/channels",
        tags=["health"],
        summary="notification channels: up, failing since, consecutive failures",
        response_model=schemas.ChannelHealth,
    )
    async def channel_health(u: UserDep) -> dict[str, Any]:
        health = getattr(service, "health", None)
        return {
            "channels": health.snapshot() if health is not None else [],
            "retrying": int(getattr(service, "retrying", 0)),
        }
