"""Guards that run before a request's body is read (an ASGI middleware).

FastAPI reads a request's body before it resolves the route's dependencies,
so a token checked in a dependency is checked only after the whole body has
been taken in: a 300 MB upload without a token was read, and held in memory,
before its 401. :class:`RequestGuard` sits in front of the app and, before it
lets anything read the body:

1. authenticates every ``/api/`` request (the bearer token, see
   :mod:`trygg.api.auth`); the user goes to ``request.state.user`` for the
   route; no, an unknown or a disabled token gets its 401 at once;
2. refuses a declared ``Content-Length`` over the limit with 413;
3. counts the body as it streams in (chunked uploads declare no length) and
   stops at the limit with 413.

An answer given while the client is still sending carries ``Connection:
close``, so the server closes the connection rather than reading (and
discarding) the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trygg.api.auth import Auth, AuthUnavailable
from trygg.api.problems import BODY_TOO_LARGE, ProblemError, problem_response

DEFAULT_MAX_BODY = 64 * 1024


def max_body_bytes(settings: Any = None) -> int:
    """The body limit: the settings' ``http_max_body_bytes``
    (``TRYGG_HTTP_MAX_BODY_BYTES``, checked with the other settings), else 64 KiB
    (an app built without settings, in tests)."""
    v = getattr(settings, "http_max_body_bytes", None)
    return int(v) if v is not None else DEFAULT_MAX_BODY


class BodyTooLarge(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than {limit} bytes",
            type=BODY_TOO_LARGE,
            title="Request body too large",
            max_bytes=limit,
        )


def bearer_token(scope: Scope) -> str:
    for k, v in scope.get("headers", ()):
        if k == b"authorization":
            h = v.decode("latin-1")
            return h[7:].strip() if h[:7].lower() == "bearer " else ""
    return ""


async def authenticate(auth: Auth, token: str) -> Any:
    """The token's user, or a :class:`ProblemError` (401, or 503 when the
    database cannot say)."""
    if not token:
        raise ProblemError(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        u = await auth.user(token)
    except AuthUnavailable as exc:
        raise ProblemError(503, str(exc), headers={"Retry-After": "5"}) from None
    if u is None:
        raise ProblemError(401, "unknown or disabled token", headers={"WWW-Authenticate": "Bearer"})
    return u


class RequestGuard:
    """Authentication and the body limit, before the body (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Auth,
        max_body: int,
        protected: Callable[[str], bool] = lambda path: path.startswith("/api/"),
        counters: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.max_body = max_body
        self.protected = protected
        self.counters = counters if counters is not None else {}

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        chunked = False
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
            elif k == b"transfer-encoding":
                chunked = True
        pending = chunked or bool(length)  # body bytes the client may still be sending

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and pending:
                # Answered before the whole body was read: close, do not read the rest.
                headers = [h for h in message.get("headers", ()) if h[0] != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        path: str = scope.get("path", "")
        if self.protected(path):
            try:
                user = await authenticate(self.auth, bearer_token(scope))
            except ProblemError as exc:
                self._count("unauthenticated" if exc.status_code == 401 else "auth_unavailable")
                resp = problem_response(
                    exc.status_code,
                    str(exc.detail),
                    instance=path,
                    headers=dict(exc.headers) if exc.headers else None,
                )
                await resp(scope, receive, guarded_send)
                return
            scope.setdefault("state", {})["user"] = user
        if length is not None and length > self.max_body:
            self._count("body_too_large")
            err = BodyTooLarge(self.max_body)
            resp = problem_response(
                413,
                str(err.detail),
                type=err.type,
                title=err.title,
                instance=path,
                **err.extensions,
            )
            await resp(scope, receive, guarded_send)
            return

        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen, pending
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    self._count("body_too_large")
                    raise BodyTooLarge(self.max_body)
                if not message.get("more_body", False):
                    pending = False
            return message

        await self.app(scope, limited_receive, guarded_send)
