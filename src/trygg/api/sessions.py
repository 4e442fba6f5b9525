"""Console sign-in fit for a phone: enrolment, device sessions, the session cookie.

A team leader (or an admin) enrols a phone: ``POST /api/enrolments`` (the
console's *Telefoner* panel, with a QR code) or ``trygg users enrol`` gives a
one-time link, ``/auth/enrol?code=te_...``, valid for
``TRYGG_SESSION_ENROL_MINUTES`` (10). The phone opens it, the page takes the
code out of the address bar and one tap posts it to ``POST /auth/enrol``,
which uses it (once) and answers with a session cookie and a redirect to
``/console``: no code or token is left in a URL, none in the page's storage.
Link previews that fetch the link do not use it up: only the POST does.

Sessions:

=========== ================================ =====================================
kind        made by                          lasts (fixed, from its start)
=========== ================================ =====================================
enrolled    an enrolment code, once          ``TRYGG_SESSION_DEVICE_DAYS`` (30)
oidc        an OpenID Connect sign-in        ``TRYGG_SESSION_SIGNIN_HOURS`` (12)
token       a bearer token typed into the    ``TRYGG_SESSION_SIGNIN_HOURS``; ends
            console (``/console#token=``)    when the token is replaced too
=========== ================================ =====================================

Each can be revoked (``POST /api/sessions/{id}/revoke``: the user itself, its
team leader, an admin; ``trygg users revoke``); a revoked or expired session
is refused at once and its open live stream closed within about two seconds
(:class:`trygg.api.auth.Auth`, as for a disabled token).

The secret lives in an HttpOnly, SameSite=Strict cookie; a cookie-signed
change must come from trygg's own pages (:mod:`trygg.api.cookies`). The
routes: ``/auth/*`` in :mod:`trygg.api.signin_routes`, the identity
provider's in :mod:`trygg.api.oidc`, ``/api/enrolments`` and
``/api/sessions`` in :mod:`trygg.api.session_routes`; this module holds what
they share (:class:`SignIn`).

Every enrolment, exchange, sign-in, sign-out and revocation is written to the
access log (``session.*``). See docs/api.md, "Sign-in".
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from trygg.api.auth import Auth, AuthUnavailable
from trygg.api.context import db_unreachable
from trygg.api.cookies import cookie_secret, same_origin
from trygg.store import access as access_store
from trygg.store.access import User

Db = Callable[..., Awaitable[Any]]
Access = Callable[..., None]

_ERRORS = {
    401: "no, an unknown or a disabled bearer token, or a session that is revoked or expired",
    403: "your role, or your team, may not do this; or a cookie-signed request from elsewhere",
    404: "no such user or session",
    413: "the request body is over the limit (64 KiB by default)",
    422: "the request failed validation (`errors` says where)",
    503: "the database or the credential check is not reachable now",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _ERRORS[c]} for c in codes}


# ------------------------------------------------------------------ settings


class SessionConfig(BaseModel):
    """What the sign-in needs from the settings (defaults: the settings' own)."""

    enrol_minutes: int = 10
    device_days: int = 30
    signin_hours: int = 12
    public_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SessionConfig:
        if settings is None:
            return cls()
        return cls(
            enrol_minutes=settings.session_enrol_minutes,
            device_days=settings.session_device_days,
            signin_hours=settings.session_signin_hours,
            public_url=settings.public_url or None,
        )


def device_label(user_agent: str | None) -> str:
    """A few words for the device, from its User-Agent ('Android 14 · Chrome')."""
    ua = user_agent or ""
    os_ = ""
    for pat, name in (
        (r"Android ([\d.]+)", "Android {}"),
        (r"iPhone OS ([\d_]+)", "iPhone iOS {}"),
        (r"iPad; CPU OS ([\d_]+)", "iPad iOS {}"),
        (r"Windows NT", "Windows"),
        (r"Mac OS X", "macOS"),
        (r"CrOS", "ChromeOS"),
        (r"Linux", "Linux"),
    ):
        m = re.search(pat, ua)
        if m:
            os_ = name.format(*(g.replace("_", ".") for g in m.groups()))
            break
    browser = ""
    for pat, name in (
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("HeadlessChrome/", "Chromium (headless)"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ):
        if pat in ua:
            browser = name
            break
    words = " · ".join(x for x in (os_, browser) if x)
    return words or ua[:80] or "unknown device"


# ------------------------------------------------------------------ who is signed in


class CurrentSession(BaseModel):
    id: str
    kind: str
    expires_at: datetime


class MeWithSession(BaseModel):
    name: str
    role: str
    teams: list[str]
    districts: list[str] | None = Field(
        None,
        description="the districts the user is scoped to (then teams has theirs as well);"
        " absent when it is scoped to none",
    )
    district_names: dict[str, str] | None = Field(
        None,
        description="for the console's header, id -> name: the districts of a scoped user"
        " (its districts and its teams'), else every district; absent when the registry"
        " has only the default district",
    )
    session: CurrentSession | None = Field(
        None, description="signed in with a session (cookie), not a bearer token"
    )


def me_view(u: User) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": u.name,
        "role": u.role,
        "teams": list(u.teams),
        "session": None,
    }
    if u.districts:
        d["districts"] = list(u.districts)
    if u.session is not None and u.expires_at is not None:
        d["session"] = {"id": u.session, "kind": u.session_kind, "expires_at": u.expires_at}
    return d


# ------------------------------------------------------------------ what the routes share


class SignIn:
    """The sign-in routes' shared parts: the session lifetimes, the store
    (a database error is 503), the access log, and the Origin check."""

    def __init__(self, *, auth: Auth, db: Db, access: Access, config: SessionConfig) -> None:
        self.auth = auth
        self.db = db
        self.access = access
        self.config = config
        self.device_ttl = timedelta(days=config.device_days)
        self.signin_ttl = timedelta(hours=config.signin_hours)
        self.enrol_ttl = timedelta(minutes=config.enrol_minutes)

    def log_session(self, u: User | dict[str, Any], action: str, **detail: Any) -> None:
        name = u.name if isinstance(u, User) else str(u["name"])
        role = u.role if isinstance(u, User) else str(u["role"])
        self.access(name, role, action, None, **detail)

    def origin_ok(self, request: Request) -> None:
        if not same_origin(request.scope, self.config.public_url):
            raise HTTPException(
                403, "this request must come from trygg's own pages (its Origin is not trygg's)"
            )

    def base_url(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    async def store(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await self.db(fn, *args, **kw)
        except (ValueError, HTTPException):
            raise
        except Exception as exc:
            raise db_unreachable(exc) from None

    async def revoke_cookie_session(self, request: Request, by: str | None, reason: str) -> None:
        """The session of this browser's cookie, if it still signs in, revoked by
        ``by`` (None: by its own user, who signs out)."""
        old = cookie_secret(request.scope)
        if not old:
            return
        try:
            u = await self.auth.user(old)
        except AuthUnavailable:
            return
        if u is not None and u.session is not None:
            who = u.name if by is None else by
            if await self.store(access_store.revoke_session, u.session, by=who):
                self.log_session(u, "session.revoke", session=u.session, by=who, reason=reason)
        self.auth.forget(old)
