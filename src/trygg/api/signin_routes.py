"""The sign-in routes, ``/auth/*``: the pages and the cookies.

The phone opens the one-time link of its enrolment (:mod:`trygg.api.session_routes`),
``/auth/enrol?code=te_...``; the page takes the code out of the address bar and
one tap posts it to ``POST /auth/enrol``, which uses it (once) and answers with
a session cookie and a redirect to ``/console``: no code or token is left in a
URL, none in the page's storage. Link previews that fetch the link do not use
it up: only the POST does. A bearer token typed into the console becomes a
session too (``POST /auth/token``); ``POST /auth/logout`` ends the cookie's
session. The identity provider's sign-in (:mod:`trygg.api.oidc`) adds its two
routes to the same router.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from trygg.api.auth import AuthUnavailable, is_session
from trygg.api.cookies import (
    clear_session_cookie,
    cookie_secret,
    same_origin,
    set_session_cookie,
)
from trygg.api.pages import page, refused_page
from trygg.api.sessions import CurrentSession, SignIn, device_label, errors
from trygg.store import access as access_store

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


class TokenSignIn(BaseModel):
    token: str = Field(min_length=1, max_length=200, description="a bearer token")


class SignedIn(BaseModel):
    user: str
    role: str
    session: CurrentSession


class SignInConfig(BaseModel):
    oidc: bool = Field(description="an identity provider's sign-in is offered")
    token: bool = Field(True, description="a bearer token may be typed into the console")


def install(app: FastAPI, s: SignIn, *, oidc: Any = None) -> None:
    """The ``/auth/*`` routes (``oidc``: the identity provider's sign-in, if any)."""
    auth, config, store, log_session = s.auth, s.config, s.store, s.log_session
    origin_ok, revoke_cookie_session = s.origin_ok, s.revoke_cookie_session
    device_ttl, signin_ttl = s.device_ttl, s.signin_ttl

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
        responses=errors(401, 403, 422, 503),
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
        responses=errors(403),
    )
    async def logout(request: Request) -> Response:
        origin_ok(request)
        await revoke_cookie_session(request, by=None, reason="signed out")
        secret = cookie_secret(request.scope)
        if secret:  # its cached answer goes even when it could not be checked now
            auth.forget(secret)
        resp = Response(status_code=204, headers={"Cache-Control": "no-store"})
        clear_session_cookie(resp, request)
        return resp

    if oidc is not None:
        oidc.install(router, store=store, log_session=log_session, signin_ttl=signin_ttl)

    app.include_router(router)
