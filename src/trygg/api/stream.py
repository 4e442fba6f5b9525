"""The live feed: alert changes as server-sent events (``/api/stream``).

Each subscriber gets the changes of the teams it sees; each alert delivered is
a read of its resident's data (access log). A stream whose credential stops
signing in (a token disabled or replaced, a session revoked or expired) gets
an ``event: revoked`` and is closed (:meth:`trygg.api.auth.Auth.watch`).
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from trygg import logs
from trygg.api.auth import Auth
from trygg.api.context import ApiContext
from trygg.store.access import User

log = logs.get("trygg.api")


def token_of(request: Request) -> str:
    h = request.headers.get("authorization", "")
    return h[7:].strip() if h[:7].lower() == "bearer " else ""


def install(
    app: FastAPI,
    api: APIRouter,
    ctx: ApiContext,
    auth: Auth,
    current_user: Callable[..., Awaitable[User]],
) -> None:
    """``/api/stream`` on ``api``; it ends when ``app.state.closing`` is set."""
    UserDep = Annotated[User, Depends(current_user)]
    service, view, access = ctx.service, ctx.view, ctx.access

    @api.get(
        "/api/stream",
        tags=["alerts"],
        summary="live alert changes (server-sent events)",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "events `alert`, `notify`, `resync`, and `revoked` just before "
                "the stream closes because the token no longer signs in",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    async def stream(request: Request, u: UserDep) -> StreamingResponse:
        sub = service.feed.subscribe(u.teams if u.scoped else None)
        token = token_of(request)
        revoked = auth.watch(token)

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n: hello\n\n"
                quiet = 0.0
                while not app.state.closing:
                    if revoked.is_set():  # disabled or replaced since the stream opened
                        log.info("live stream closed: credential no longer valid", user=u.name)
                        detail = (
                            "the session is revoked or has expired"
                            if u.session is not None
                            else "unknown or disabled token"
                        )
                        yield f'event: revoked\ndata: {{"detail":"{detail}"}}\n\n'.encode()
                        break
                    try:
                        msg = await asyncio.wait_for(sub.queue.get(), 1.0)
                    except TimeoutError:
                        quiet += 1.0
                        if quiet >= 15.0:
                            quiet = 0.0
                            if await request.is_disconnected():
                                break
                            yield b": keep-alive\n\n"
                        continue
                    out = dict(msg)
                    if "alert" in out and isinstance(out["alert"], dict):
                        live = service.get(str(out["alert"].get("id")))
                        a = view(live, u) if live is not None else view(out["alert"], u)
                        if live is None:
                            a["allowed_actions"] = []
                        out["alert"] = a
                        # Each alert a console is shown is a read of the resident's data.
                        if a.get("resident"):
                            access(
                                u,
                                "alert.stream",
                                str(a["resident"]),
                                alert=a.get("id"),
                                event=out.get("type"),
                                state=a.get("state"),
                            )
                    data = json.dumps(out, default=str, separators=(",", ":"))
                    yield f"event: {out.get('type', 'message')}\ndata: {data}\n\n".encode()
            finally:
                auth.unwatch(token, revoked)
                service.feed.unsubscribe(sub)

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
