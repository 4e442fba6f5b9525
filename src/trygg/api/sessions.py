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

The secret lives in an HttpOnly, SameSite=Strict cookie (``Secure`` and the
``__Host-`` prefix over HTTPS). :class:`SessionCookies` (an ASGI middleware
in front of :class:`trygg.api.limits.RequestGuard`) turns the cookie of an
``/api/`` request without an ``Authorization`` header into the credential the
guard checks, after refusing a state-changing request (anything but GET,
HEAD, OPTIONS) whose ``Origin`` is not trygg's own: SameSite=Strict keeps
other sites' requests from carrying the cookie, and the Origin check also
refuses a sibling site under the same registrable domain. Bearer tokens keep
working as before for API clients.

Every enrolment, exchange, sign-in, sign-out and revocation is written to the
access log (``session.*``). See docs/api.md, "Sign-in".
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import segno
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from trygg import logs
from trygg.api.auth import Auth, AuthUnavailable, is_session
from trygg.api.problems import problem_response
from trygg.store import access as access_store
from trygg.store.access import TEAM_ROLES, User

log = logs.get("trygg.api")

COOKIE = "trygg_session"
COOKIE_SECURE = "__Host-trygg_session"  # over HTTPS: Secure, Path=/, no Domain
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
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


# ------------------------------------------------------------------ cookie and origin


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


# ------------------------------------------------------------------ pages


_PAGE = """<!doctype html>
<html lang="nb"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="dark light">
<title>trygg - {title}</title>
<link rel="stylesheet" href="/console/static/console.css">
</head><body><main class="signin">
<h1><span aria-hidden="true">●</span> trygg</h1>
{body}
</main>{script}</body></html>"""


def page(title: str, body: str, *, status: int = 200, script: str = "") -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body, script=script),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def refused_page(status: int, nb: str, en: str) -> HTMLResponse:
    body = (
        f'<h2>Ikke logget inn</h2><p class="error" role="alert">{html.escape(nb)}</p>'
        f'<p lang="en" class="note">{html.escape(en)}</p>'
        '<p><a class="button" href="/console">Til trygg / To trygg</a></p>'
    )
    return page("ikke logget inn", body, status=status)


_ENROL_STATES = {
    "used": (
        410,
        "Denne lenken er allerede brukt. Be teamlederen om en ny.",
        "This link has been used already. Ask your team leader for a new one.",
    ),
    "expired": (
        410,
        "Denne lenken er utløpt. Be teamlederen om en ny.",
        "This link has expired. Ask your team leader for a new one.",
    ),
    "disabled": (
        403,
        "Brukeren er sperret.",
        "This user is disabled.",
    ),
    None: (
        404,
        "Ukjent lenke. Skann QR-koden eller åpne lenken på nytt.",
        "Unknown link. Scan the QR code or open the link again.",
    ),
}


def qr_svg(text: str) -> str:
    """``text`` as an inline SVG QR code (segno; error correction M)."""
    return str(
        segno.make(text, error="m", micro=False).svg_inline(
            scale=4, border=2, dark="#000", light="#fff", omitsize=True
        )
    )


# ------------------------------------------------------------------ API models


class EnrolBody(BaseModel):
    user: str = Field(min_length=1, max_length=100, description="whom the phone is for")
    team: str | None = Field(
        None,
        description="the user's team; a user that does not exist yet is created on it"
        " (a team leader: one of its own teams)",
    )
    role: Literal["care_staff", "team_leader", "specialist", "auditor", "admin"] | None = Field(
        None, description="a new user's role (default care_staff; a team leader: care_staff only)"
    )


class Enrolment(BaseModel):
    id: str
    user: str
    role: str
    teams: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime
    created_user: bool = Field(description="the user did not exist and was created")
    link: str = Field(description="the one-time link; shown once")
    qr_svg: str = Field(description="the link as a QR code (inline SVG)")


class EnrolmentOne(BaseModel):
    enrolment: Enrolment


class SessionItem(BaseModel):
    id: str
    user: str
    role: str
    teams: list[str]
    kind: Literal["enrolled", "oidc", "token"]
    label: str = Field(description="the device, from its User-Agent")
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool
    current: bool = Field(False, description="the session of this request")


class SessionList(BaseModel):
    sessions: list[SessionItem]


class SessionOne(BaseModel):
    session: SessionItem


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


class TokenSignIn(BaseModel):
    token: str = Field(min_length=1, max_length=200, description="a bearer token")


class SignedIn(BaseModel):
    user: str
    role: str
    session: CurrentSession


class SignInConfig(BaseModel):
    oidc: bool = Field(description="an identity provider's sign-in is offered")
    token: bool = Field(True, description="a bearer token may be typed into the console")


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


# ------------------------------------------------------------------ routes


def install(
    app: FastAPI,
    *,
    auth: Auth,
    db: Db,
    access: Access,
    config: SessionConfig,
    user_dep: Callable[..., Awaitable[User]],
    oidc: Any = None,
) -> None:
    """The sign-in routes: ``/auth/*`` (pages and cookies) and ``/api/enrolments``,
    ``/api/sessions`` (``user_dep``: the API's dependency for the authenticated user)."""
    from fastapi import APIRouter

    device_ttl = timedelta(days=config.device_days)
    signin_ttl = timedelta(hours=config.signin_hours)
    enrol_ttl = timedelta(minutes=config.enrol_minutes)

    def log_session(u: User | dict[str, Any], action: str, **detail: Any) -> None:
        name = u.name if isinstance(u, User) else str(u["name"])
        role = u.role if isinstance(u, User) else str(u["role"])
        access(name, role, action, None, **detail)

    def origin_ok(request: Request) -> None:
        if not same_origin(request.scope, config.public_url):
            raise HTTPException(
                403, "this request must come from trygg's own pages (its Origin is not trygg's)"
            )

    def base_url(request: Request) -> str:
        if config.public_url:
            return config.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    async def store(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await db(fn, *args, **kw)
        except (ValueError, HTTPException):
            raise
        except Exception as exc:
            raise HTTPException(503, f"the database is not reachable: {exc}") from None

    async def revoke_cookie_session(request: Request, by: str, reason: str) -> None:
        """The session of this browser's cookie, if it still signs in, revoked."""
        old = cookie_secret(request.scope)
        if not old:
            return
        try:
            u = await auth.user(old)
        except AuthUnavailable:
            return
        if (
            u is not None
            and u.session is not None
            and await store(access_store.revoke_session, u.session, by=by)
        ):
            log_session(u, "session.revoke", session=u.session, by=by, reason=reason)
        auth.forget(old)

    # -------------------------------------------------------------- pages

    router = APIRouter(tags=["sign-in"])

    @router.get(
        "/auth/config",
        summary="which sign-ins the console offers",
        response_model=SignInConfig,
    )
    async def signin_config() -> dict[str, Any]:
        return {"oidc": oidc is not None, "token": True}

    @router.get(
        "/auth/enrol",
        summary="the page an enrolment link opens (one tap uses the code)",
        response_class=HTMLResponse,
        responses={200: {"content": {"text/html": {}}}},
    )
    async def enrol_page(code: str = "") -> HTMLResponse:
        info = await store(access_store.peek_enrolment, code) if code else None
        state = info["state"] if info else None
        if state != "ok" or info is None:
            status, nb, en = _ENROL_STATES[state]
            return refused_page(status, nb, en)
        who = html.escape(str(info["user"]))
        teams = html.escape(", ".join(info["teams"]))
        body = (
            "<h2>Koble til denne telefonen</h2>"
            f"<p>Telefonen logges inn som <strong>{who}</strong>"
            f"{' (' + teams + ')' if teams else ''}.</p>"
            f'<p lang="en" class="note">This phone is signed in as {who}.</p>'
            '<form method="post" action="/auth/enrol">'
            f'<input type="hidden" name="code" value="{html.escape(code)}">'
            '<button type="submit" class="primary" id="enrol">Koble til / Connect</button>'
            "</form>"
        )
        # The code leaves the address bar (and the history) at once.
        script = '<script>history.replaceState(null, "", "/auth/enrol");</script>'
        return page("koble til telefon", body, script=script)

    @router.post(
        "/auth/enrol",
        summary="use an enrolment code (form field `code`): a session cookie and a redirect"
        " to /console",
        status_code=303,
        response_class=RedirectResponse,
        responses={303: {"description": "signed in: to /console"}},
    )
    async def enrol_exchange(request: Request) -> Response:
        if not same_origin(request.scope, config.public_url):
            return refused_page(
                403,
                "Forespørselen kom ikke fra trygg. Åpne lenken på nytt.",
                "The request did not come from trygg's page. Open the link again.",
            )
        body = (await request.body()).decode("utf-8", "replace")
        code = (parse_qs(body).get("code") or [""])[0].strip()
        label = device_label(request.headers.get("user-agent"))
        if not code:
            status, nb, en = _ENROL_STATES[None]
            return refused_page(status, nb, en)
        secret, sess = await store(
            access_store.exchange_enrolment, code, valid_for=device_ttl, label=label
        )
        if secret is None:
            state = sess["state"] if sess else None
            if sess is not None:
                u = await store(access_store.get_user, sess["user"])
                if u is not None:
                    log_session(
                        u,
                        "session.exchange_refused",
                        enrolment=sess["id"],
                        reason=state,
                        device=label,
                    )
            status, nb, en = _ENROL_STATES[state]
            return refused_page(status, nb, en)
        # this browser's earlier session (another user's, perhaps) ends
        await revoke_cookie_session(request, by=str(sess["user"]), reason="replaced")
        u = await store(access_store.get_user, sess["user"])
        log_session(
            u,
            "session.exchange",
            session=sess["id"],
            enrolment=sess["enrolment"],
            device=label,
            expires_at=sess["expires_at"],
        )
        resp = RedirectResponse("/console", status_code=303)
        set_session_cookie(resp, request, secret, sess["expires_at"])
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @router.post(
        "/auth/token",
        summary="sign the console in with a bearer token: a session cookie for"
        " TRYGG_SESSION_SIGNIN_HOURS",
        response_model=SignedIn,
        responses=_errors(401, 403, 422, 503),
    )
    async def token_signin(body: TokenSignIn, request: Request) -> Response:
        origin_ok(request)
        token = body.token.strip()
        if is_session(token):
            raise HTTPException(401, "unknown or disabled token")
        try:
            u = await auth.user(token)
        except AuthUnavailable as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        if u is None:
            raise HTTPException(401, "unknown or disabled token")
        label = device_label(request.headers.get("user-agent"))
        await revoke_cookie_session(request, by=u.name, reason="replaced")
        secret, sess = await store(
            access_store.create_session,
            u.name,
            kind="token",
            created_by=u.name,
            valid_for=signin_ttl,
            label=label,
            token=token,
        )
        log_session(
            u,
            "session.signin",
            session=sess["id"],
            method="token",
            device=label,
            expires_at=sess["expires_at"],
        )
        resp = JSONResponse(
            {
                "user": u.name,
                "role": u.role,
                "session": {
                    "id": sess["id"],
                    "kind": "token",
                    "expires_at": sess["expires_at"].isoformat(),
                },
            },
            headers={"Cache-Control": "no-store"},
        )
        set_session_cookie(resp, request, secret, sess["expires_at"])
        return resp

    @router.post(
        "/auth/logout",
        summary="sign out: the cookie's session is revoked and the cookie removed",
        status_code=204,
        response_class=Response,
        responses=_errors(403),
    )
    async def logout(request: Request) -> Response:
        origin_ok(request)
        secret = cookie_secret(request.scope)
        if secret:
            try:
                u = await auth.user(secret)
            except AuthUnavailable:
                u = None
            if (
                u is not None
                and u.session is not None
                and await store(access_store.revoke_session, u.session, by=u.name)
            ):
                log_session(u, "session.revoke", session=u.session, by=u.name, reason="signed out")
            auth.forget(secret)
        resp = Response(status_code=204, headers={"Cache-Control": "no-store"})
        clear_session_cookie(resp, request)
        return resp

    if oidc is not None:
        oidc.install(router, store=store, log_session=log_session, signin_ttl=signin_ttl)

    app.include_router(router)

    # -------------------------------------------------------------- API

    api = APIRouter(tags=["sign-in"])

    def may_manage(u: User, teams: list[str]) -> bool:
        return u.role == "admin" or (u.role == "team_leader" and bool(set(teams) & set(u.teams)))

    @api.post(
        "/api/enrolments",
        status_code=201,
        summary="a one-time link and QR code that signs a phone in as a user",
        response_model=EnrolmentOne,
        responses=_errors(403, 404, 422),
    )
    async def enrol(
        body: EnrolBody, request: Request, u: User = Depends(user_dep)
    ) -> dict[str, Any]:
        me: User = u
        if me.role not in ("team_leader", "admin"):
            raise HTTPException(403, f"the {me.role} role may not do this")
        target = await store(access_store.get_user, body.user)
        created = False
        if target is None:
            if body.team is None:
                raise HTTPException(404, f"no user {body.user!r}: give a team to create one on it")
            role = body.role or "care_staff"
            if me.role == "team_leader" and (role != "care_staff" or body.team not in me.teams):
                raise HTTPException(
                    403,
                    "a team leader may create care staff on its own teams only"
                    f" ({', '.join(me.teams)})",
                )
            try:
                target = await store(
                    access_store.ensure_user, body.user, role, [body.team], source="api"
                )
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            created = True
        else:
            if target["disabled_at"] is not None:
                raise HTTPException(403, f"user {body.user} is disabled")
            if body.team is not None and body.team not in target["teams"]:
                raise HTTPException(422, f"user {body.user} is not on team {body.team}")
            if me.role == "team_leader" and not (
                target["role"] in TEAM_ROLES and set(target["teams"]) & set(me.teams)
            ):
                raise HTTPException(
                    403,
                    f"user {body.user} is not care staff of your teams ({', '.join(me.teams)})",
                )
        try:
            code, enr = await store(
                access_store.create_enrolment, body.user, created_by=me.name, valid_for=enrol_ttl
            )
        except ValueError as exc:
            raise HTTPException(403, str(exc)) from None
        link = f"{base_url(request)}/auth/enrol?code={code}"
        log_session(
            me,
            "session.enrol",
            user=body.user,
            enrolment=enr["id"],
            expires_at=enr["expires_at"],
            created_user=created,
            via="api",
        )
        return {"enrolment": {**enr, "created_user": created, "link": link, "qr_svg": qr_svg(link)}}

    @api.get(
        "/api/sessions",
        summary="sessions: your own; a team leader's teams'; an admin's all",
        response_model=SessionList,
    )
    async def sessions(
        u: User = Depends(user_dep),
        user: str | None = None,
        active: bool = True,
    ) -> dict[str, Any]:
        me: User = u
        if me.role == "admin":
            rows = await store(access_store.list_sessions, user=user, active=active)
        elif me.role == "team_leader":
            rows = await store(
                access_store.list_sessions, user=user, teams=list(me.teams), active=active
            )
            if user is None or user == me.name:
                own = await store(access_store.list_sessions, user=me.name, active=active)
                seen = {r["id"] for r in rows}
                rows += [r for r in own if r["id"] not in seen]
        else:
            rows = await store(access_store.list_sessions, user=me.name, active=active)
        for r in rows:
            r["current"] = r["id"] == me.session
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        return {"sessions": rows}

    @api.post(
        "/api/sessions/{session_id}/revoke",
        summary="end a session now (its live stream closes within seconds)",
        response_model=SessionOne,
        responses=_errors(403, 404),
    )
    async def revoke(session_id: str, u: User = Depends(user_dep)) -> dict[str, Any]:
        me: User = u
        s = await store(access_store.get_session, session_id)
        if s is None:
            raise HTTPException(404, f"no session {session_id}")
        if s["user"] != me.name and not may_manage(me, s["teams"]):
            raise HTTPException(403, "you may revoke your own sessions and your teams' only")
        if await store(access_store.revoke_session, s["id"], by=me.name):
            log_session(
                me, "session.revoke", session=s["id"], user=s["user"], kind=s["kind"], by=me.name
            )
        rows = await store(access_store.list_sessions, user=s["user"], active=False)
        row = next(r for r in rows if r["id"] == s["id"])
        row["current"] = row["id"] == me.session
        return {"session": row}

    app.include_router(api, responses=_errors(401, 413, 503))
