"""The HTTP API (FastAPI) and the care-staff console, around the running alert service.

Authentication is a bearer token (``trygg users add``) or, in the console, a
session cookie (an enrolled phone, an OpenID Connect sign-in:
:mod:`trygg.api.sessions`, :mod:`trygg.api.oidc`); roles:

============ ================================================================
care_staff   sees and acts on the alerts of its own teams only (else 403);
             reads the timelines of its teams' residents; silences for them
team_leader  as care_staff, and enrols and revokes its teams' phones
specialist   reads every alert and timeline; manages silences
auditor      reads alerts and the access log; changes nothing
admin        everything
============ ================================================================

A team leader, specialist or auditor may be scoped to districts (``trygg
users add --district``): it then sees the teams of those districts only (its
``teams`` hold them, :class:`trygg.store.access.User`); anything of another
district is refused with 403 and a reason naming the district.

Every read of a resident's data (alert detail, timeline, alert lists, each
alert delivered on the live stream) is written to the access log (who, when,
what, which resident) through the runner's spool. Staff actions go to the
alert service in-process, so two staff pressing *take* at once are
serialised: one wins, the other gets 409 with "alert is taken by …".

Before a body is read, :class:`trygg.api.limits.RequestGuard` checks the
token of every ``/api/`` request and the body's size; every error is an RFC
9457 problem (:mod:`trygg.api.problems`); the answers are typed
(:mod:`trygg.api.schemas`). See docs/api.md.
"""

import asyncio
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from trygg.alerts.service import Alerts
from trygg.api import (
    alert_routes,
    console,
    health,
    problems,
    residents,
    session_routes,
    signin_routes,
    silence_routes,
    stream,
)
from trygg.api import sessions as sessions_mod
from trygg.api.auth import Auth
from trygg.api.context import ApiContext, errors
from trygg.api.cookies import SessionCookies
from trygg.api.limits import RequestGuard, authenticate
from trygg.api.limits import max_body_bytes as body_limit
from trygg.api.oidc import Oidc
from trygg.store.access import User

# Swagger UI's files (and its licence) from the swagger-ui-py package: /docs
# works on a closed network, without a CDN.
SWAGGER_UI = Path(str(files("swagger_ui") / "static"))


def create_app(
    *,
    service: Alerts,
    runner: Any = None,
    db: Any = None,
    max_body_bytes: int | None = None,
    settings: Any = None,
) -> FastAPI:
    """The ASGI app. ``db(fn, *args)`` runs a store function on a pooled
    connection in a worker thread (default: the runner's pool, no retries).
    ``max_body_bytes``: the request body limit (default: see
    :func:`trygg.api.limits.max_body_bytes`). ``settings``: for the sign-in
    (session lifetimes, the identity provider, the public URL; default: the
    runner's, else the defaults without an identity provider)."""

    if db is None:

        async def db(fn: Any, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(runner._db, lambda c: fn(c, *args, **kw))

    auth = Auth(db)
    app = FastAPI(
        title="trygg",
        version="1",
        description="Alerts, silences, residents' timelines and the access log. "
        "Authenticate with `Authorization: Bearer <token>` (`trygg users add`). "
        "Every error is an RFC 9457 problem (`application/problem+json`).",
        docs_url=None,  # served below from the package's own Swagger UI files
        redoc_url=None,
    )
    app.state.service = service
    app.state.closing = False
    app.state.auth = auth
    refused: dict[str, int] = {}  # requests refused before their body was read: /metrics
    app.state.refused = refused
    problems.install(app)
    limit = (
        body_limit(settings or getattr(runner, "settings", None))
        if max_body_bytes is None
        else max_body_bytes
    )
    app.add_middleware(RequestGuard, auth=auth, max_body=limit, counters=refused)
    # In front of the guard: the console's session cookie as the credential,
    # with the Origin check of cookie-signed changes (trygg.api.cookies).
    if settings is None:
        settings = getattr(runner, "settings", None)
    session_config = sessions_mod.SessionConfig.from_settings(settings)
    app.add_middleware(SessionCookies, public_url=session_config.public_url, counters=refused)
    api = APIRouter(responses=errors(401, 413, 503))

    # ------------------------------------------------------------- auth

    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="bearer",
        bearerFormat="opaque",
        description="a token from `trygg users add` (shown once)",
    )

    async def current_user(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> User:
        # RequestGuard has checked the token before the body was read.
        u = getattr(request.state, "user", None)
        if isinstance(u, User):
            return u
        return await authenticate(auth, creds.credentials if creds else "")  # type: ignore[no-any-return]

    UserDep = Annotated[User, Depends(current_user)]
    ctx = ApiContext(service=service, runner=runner, db=db)
    health.install(app, api, ctx, current_user)

    # ------------------------------------------------------------- me

    @api.get(
        "/api/me",
        tags=["users"],
        response_model=sessions_mod.MeWithSession,
        response_model_exclude_none=True,
    )
    async def me(u: UserDep) -> dict[str, Any]:
        return {**sessions_mod.me_view(u), "district_names": ctx.district_names(u) or None}

    alert_routes.install(api, ctx, current_user)
    silence_routes.install(api, ctx, current_user)
    residents.install(api, ctx, current_user)
    stream.install(app, api, ctx, auth, current_user)
    app.include_router(api)

    # ------------------------------------------------------------- sign-in

    signin = sessions_mod.SignIn(auth=auth, db=db, access=ctx.access_as, config=session_config)
    signin_routes.install(app, signin, oidc=Oidc.from_settings(settings))
    session_routes.install(app, signin, user_dep=current_user)

    # ------------------------------------------------------------- API docs

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="trygg API",
            swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/static/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/static/favicon-32x32.png",
        )

    app.mount("/docs/static", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.openapi_errors(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    console.install(app)

    return app
