"""The console's session cookie: where its secret lives, and how it becomes
the credential of an ``/api/`` request.

The secret lives in an HttpOnly, SameSite=Strict cookie (``Secure`` and the
``__Host-`` prefix over HTTPS). :class:`SessionCookies` (an ASGI middleware
in front of :class:`trygg.api.limits.RequestGuard`) turns the cookie of an
``/api/`` request without an ``Authorization`` header into the credential the
guard checks, after refusing a state-changing request (anything but GET,
HEAD, OPTIONS) whose ``Origin`` is not trygg's own: SameSite=Strict keeps
other sites' requests from carrying the cookie, and the Origin check also
refuses a sibling site under the same registrable domain. Bearer tokens keep
working as before for API clients. The sessions themselves:
:mod:`trygg.api.sessions`.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from trygg.api.auth import is_session
from trygg.api.problems import problem_response

COOKIE = "trygg_session"
COOKIE_SECURE = "__Host-trygg_session"  # over HTTPS: Secure, Path=/, no Domain
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


def cookie_secret(scope: Scope) -> str:
    """The session secret of the request's cookie ('' if none)."""
    raw = _header(scope, b"cookie")
    if not raw:
        return ""
    jar = cookie_parser(raw)
    v = jar.get(COOKIE_SECURE) or jar.get(COOKIE) or ""
    return v if is_session(v) else ""


def same_origin(scope: Scope, public_url: str | None) -> bool:
    """Is the request's ``Origin`` trygg's own: the host it was sent to, or the
    public URL's? A request without ``Origin`` counts only if the browser says
    it is same-origin (``Sec-Fetch-Site``)."""
    origin = _header(scope, b"origin")
    if not origin or origin == "null":
        return _header(scope, b"sec-fetch-site") == "same-origin"
    o = urlsplit(origin)
    if public_url:
        p = urlsplit(public_url)
        if (o.scheme, o.netloc) == (p.scheme, p.netloc):
            return True
    host = _header(scope, b"host")
    return bool(host) and o.netloc == host


class SessionCookies:
    """The session cookie as the credential of ``/api/`` requests (module doc)."""

    def __init__(
        self, app: ASGIApp, *, public_url: str | None, counters: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.public_url = public_url
        self.counters = counters if counters is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and str(scope.get("path", "")).startswith("/api/")
            and _header(scope, b"authorization") is None
        ):
            secret = cookie_secret(scope)
            if secret:
                if scope.get("method") not in SAFE_METHODS and not same_origin(
                    scope, self.public_url
                ):
                    self.counters["cross_site"] = self.counters.get("cross_site", 0) + 1
                    resp = problem_response(
                        403,
                        "a request signed in by the session cookie must come from trygg's own"
                        " pages (its Origin is not trygg's)",
                        instance=str(scope.get("path")),
                        headers={"Connection": "close"},
                    )
                    await resp(scope, receive, send)
                    return
                headers = [
                    *scope.get("headers", ()),
                    (b"authorization", b"Bearer " + secret.encode()),
                ]
                scope = {**scope, "headers": headers}
                scope.setdefault("state", {})["via_cookie"] = True
        await self.app(scope, receive, send)


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(resp: Response, request: Request, secret: str, expires: datetime) -> None:
    max_age = max(1, round((expires - datetime.now(expires.tzinfo)).total_seconds()))
    secure = _https(request)
    resp.set_cookie(
        COOKIE_SECURE if secure else COOKIE,
        secret,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(resp: Response, request: Request) -> None:
    for name in (COOKIE, COOKIE_SECURE):
        resp.delete_cookie(
            name,
            path="/",
            secure=name == COOKIE_SECURE,
            httponly=True,
            samesite="strict",
        )
