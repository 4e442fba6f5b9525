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
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BaseModel, Field

from trygg import logs
from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import OPEN_STATES, Alert, CancelReason, Outcome, State
from trygg.alerts.lifecycle import ConflictError, TransitionError
from trygg.alerts.service import Alerts
from trygg.alerts.silences import Silence, SilenceScope
from trygg.api import problems, schemas, words
from trygg.api import sessions as sessions_mod
from trygg.api.auth import Auth
from trygg.api.limits import RequestGuard, authenticate
from trygg.api.limits import max_body_bytes as body_limit
from trygg.api.oidc import Oidc
from trygg.api.problems import ProblemError
from trygg.model import Severity
from trygg.registry import DEFAULT_DISTRICT
from trygg.store import access as access_store
from trygg.store import alerts as alert_store
from trygg.store import ping as ping_database
from trygg.store.access import TEAM_ROLES, User

log = logs.get("trygg.api")
STATIC = Path(__file__).resolve().parent / "static"
# Swagger UI's files (and its licence) from the swagger-ui-py package: /docs
# works on a closed network, without a CDN.
SWAGGER_UI = Path(str(files("swagger_ui") / "static"))
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEV_RANK = {"red": 0, "yellow": 1, "green": 2}

StaffAction = Literal[
    "acknowledge", "take", "assign", "accept", "arrive", "resolve", "cancel", "note"
]


class ActionBody(BaseModel):
    expected_version: int | None = Field(
        None, description="the alert version you saw; a stale one gives 409 with the reason"
    )
    assignee: str | None = Field(None, description="for assign: whom to hand the alert to")
    outcome: Outcome | None = Field(
        None, description="for resolve/cancel: what it turned out to be"
    )
    reason: CancelReason | None = Field(None, description="for cancel: why (required)")
    note: str = Field("", max_length=2000)


class SilenceBody(BaseModel):
    scope: Literal["resident", "device"]
    target: str = Field(min_length=1, description="resident id or device id")
    start: AwareDatetime | None = Field(None, description="default: now")
    end: AwareDatetime
    reason: str = Field(min_length=1, description="why (resident in hospital, device in service)")
    rules: list[str] = Field(default_factory=list, description="only these rules (default: all)")


class EndSilenceBody(BaseModel):
    note: str = ""


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _iso(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_iso(x) for x in v]
    return v


# What each error status means on the routes that can answer it (the body is
# always an RFC 9457 problem, application/problem+json).
_ERRORS = {
    401: "no, an unknown or a disabled bearer token",
    403: "your role, or your team, may not do this",
    404: "no such alert, silence or resident (a malformed id too)",
    409: "the action is not allowed now; `detail` says why",
    413: "the request body is over the limit (64 KiB by default)",
    422: "the request failed validation (`errors` says where)",
    503: "the database or the token check is not reachable now",
    504: "no worker confirmed the action in time (distributed stack)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _ERRORS[c]} for c in codes}


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
    # with the Origin check of cookie-signed changes (trygg.api.sessions).
    if settings is None:
        settings = getattr(runner, "settings", None)
    session_config = sessions_mod.SessionConfig.from_settings(settings)
    app.add_middleware(
        sessions_mod.SessionCookies, public_url=session_config.public_url, counters=refused
    )
    api = APIRouter(responses=_errors(401, 413, 503))

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

    def token_of(request: Request) -> str:
        h = request.headers.get("authorization", "")
        return h[7:].strip() if h[:7].lower() == "bearer " else ""

    def require(u: User, *roles: str) -> None:
        if u.role not in roles:
            raise HTTPException(403, f"the {u.role} role may not do this")

    def registry() -> Any:
        return getattr(runner, "_registry", None)

    def district_of(team: str) -> str:
        reg = registry()
        return str(reg.district_of(team)) if reg is not None else DEFAULT_DISTRICT

    def may_see_team(u: User, team: str) -> None:
        if not u.scoped or team in u.teams:
            return
        if u.districts:
            d = district_of(team)
            if d in u.districts:  # a team the registry has put there since sign-in
                return
            raise HTTPException(
                403,
                f"this belongs to team {team} in district {d}; you are scoped to district"
                f" {', '.join(u.districts)}",
            )
        raise HTTPException(
            403,
            f"this belongs to team {team}; you are on {', '.join(u.teams) or 'no team'}",
        )

    def district_names(u: User) -> dict[str, str]:
        """The districts for the console's header: the user's own (its scope, or
        its teams'), else every district when there is more than the default."""
        reg = registry()
        if reg is None:
            return {}
        names = {d.id: d.name or d.id for d in reg.districts}
        if u.scoped:
            ids = sorted({*u.districts, *(district_of(t) for t in u.teams)})
        else:
            used = set(reg.team_districts().values())  # districts with teams
            ids = [d for d in reg.district_ids() if d in used]
            if ids in ([], [DEFAULT_DISTRICT]):
                ids = []
        return {i: names.get(i, i) for i in ids}

    def team_of_resident(resident: str) -> str | None:
        reg = getattr(runner, "_registry", None)
        if reg is None:
            return None
        for r in reg.residents:
            if r.id == resident:
                return str(r.team)
        return None

    def view(a: Alert | dict[str, Any], u: User) -> dict[str, Any]:
        if isinstance(a, Alert):
            d = a.to_dict()
            d["allowed_actions"] = (
                lc.allowed_actions(a, u.name) if u.role in (*TEAM_ROLES, "admin") else []
            )
        else:
            d = dict(a)
            live = service.get(str(d.get("id")))
            if live is not None:
                return view(live, u)
            d["allowed_actions"] = []
        d["district"] = district_of(str(d.get("team")))
        d["rule_words"] = words.rule_words(str(d.get("rule")))
        d["suppressed_why"] = words.suppressed_why(d.get("suppressed_reason"))
        return d

    def access(u: User, action: str, resident: str | None, **detail: Any) -> None:
        service.log_access(u.name, u.role, action, resident, _iso(detail))

    # ------------------------------------------------------------- health

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
        from trygg.api.metrics import render

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

    # ------------------------------------------------------------- me

    @api.get(
        "/api/me",
        tags=["users"],
        response_model=sessions_mod.MeWithSession,
        response_model_exclude_none=True,
    )
    async def me(u: UserDep) -> dict[str, Any]:
        return {**sessions_mod.me_view(u), "district_names": district_names(u) or None}

    # ------------------------------------------------------------- alerts

    @api.get(
        "/api/alerts",
        tags=["alerts"],
        summary="list and filter alerts, newest first",
        response_model=schemas.AlertList,
        responses=_errors(403, 422),
    )
    async def list_alerts(
        u: UserDep,
        team: Annotated[list[str] | None, Query()] = None,
        district: Annotated[
            list[str] | None, Query(description="only the teams of these districts")
        ] = None,
        state: Annotated[
            list[str] | None, Query(description="a state, or 'open' / 'closed'")
        ] = None,
        severity: Annotated[list[Severity] | None, Query()] = None,
        rule: Annotated[list[str] | None, Query()] = None,
        resident: str | None = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        flapping: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        teams = team
        if district:
            for d in district:
                if u.districts and d not in u.districts:
                    raise HTTPException(
                        403,
                        f"district {d} is not yours; you are scoped to district"
                        f" {', '.join(u.districts)}",
                    )
            reg = registry()
            in_districts = [
                t
                for t, d in (reg.team_districts() if reg is not None else {}).items()
                if d in district
            ]
            teams = [t for t in teams if t in in_districts] if teams else in_districts
        if u.scoped:
            for t in team or ():
                may_see_team(u, t)
            if teams is None:
                teams = list(u.teams)
            elif district:  # of the districts' teams, those the user may see
                teams = [t for t in teams if t in u.teams or district_of(t) in u.districts]
        states: set[str] | None = None
        if state:
            states = set()
            for s in state:
                if s == "open":
                    states |= {x.value for x in OPEN_STATES}
                elif s == "closed":
                    states |= {"resolved", "cancelled"}
                elif s in {x.value for x in State}:
                    states.add(s)
                else:
                    raise problems.invalid(("query", "state"), f"unknown state {s!r}", s)
        sevs = [s.value for s in severity] if severity else None
        open_only = states is not None and states <= {x.value for x in OPEN_STATES}

        def match(a: Alert) -> bool:
            return (
                (teams is None or a.team in teams)
                and (states is None or a.state.value in states)
                and (sevs is None or a.severity.value in sevs)
                and (rule is None or a.rule in rule)
                and (resident is None or a.resident == resident)
                and (since is None or a.raised_at >= since)
                and (until is None or a.raised_at < until)
                and (flapping is None or a.flapping == flapping)
            )

        out: dict[str, dict[str, Any]] = {}
        if not open_only:
            try:
                rows = await db(
                    alert_store.query_alerts,
                    teams=teams,
                    states=sorted(states) if states is not None else None,
                    severities=sevs,
                    rules=rule,
                    resident=resident,
                    since=since,
                    until=until,
                    flapping=flapping,
                    limit=limit,
                )
            except Exception as exc:
                raise HTTPException(503, f"the database is not reachable: {exc}") from None
            for r in rows:
                if not r.get("shadow"):
                    out[str(r["id"])] = view(r, u)
        # Memory is newer than the database (the spool is stored behind): open
        # alerts, and alerts closed but perhaps not stored yet, replace their rows.
        for a in service.live_alerts():
            if match(a):
                out[a.id] = view(a, u)
            elif a.id in out:
                del out[a.id]
        items = sorted(out.values(), key=lambda d: str(d.get("raised_at")), reverse=True)[:limit]
        residents = sorted({str(d["resident"]) for d in items})
        if residents:
            access(u, "alerts.list", None, residents=residents, count=len(items))
        return {"alerts": items, "count": len(items)}

    async def _alert_for(u: UserDep, alert_id: str) -> Alert:
        # Alert ids are UUIDs (the database's type): anything else is no alert,
        # not a database error.
        if service.get(alert_id) is None and not _UUID.match(alert_id):
            raise HTTPException(404, f"no alert {alert_id}")
        try:
            a = await service.load(alert_id)
            snap = None if a is not None else await db(alert_store.get_snapshot, alert_id)
        except (psycopg.Error, OSError) as exc:
            raise HTTPException(503, f"the database is not reachable: {exc}") from None
        if a is None:
            if snap is None or snap.get("shadow"):  # shadow alerts are not shown (rules.md)
                raise HTTPException(404, f"no alert {alert_id}")
            may_see_team(u, str(snap["team"]))
            raise HTTPException(404, f"alert {alert_id} has no lifecycle records")
        may_see_team(u, a.team)
        return a

    @api.get(
        "/api/alerts/{alert_id}",
        tags=["alerts"],
        summary="one alert with its records",
        response_model=schemas.AlertDetail,
        responses=_errors(403, 404),
    )
    async def get_alert(alert_id: str, u: UserDep) -> dict[str, Any]:
        a = await _alert_for(u, alert_id)
        access(u, "alert.read", a.resident, alert=a.id)
        try:
            dl = await db(alert_store.deliveries, a.id)
        except Exception:
            dl = []
        return {
            "alert": view(a, u),
            "records": [r.to_dict() for r in a.records],
            "vkp_events": [
                {"code": c, "name": n, "at": at.isoformat(), "actor": actor}
                for c, n, at, actor in lc.vkp_events(a)
            ],
            "schedule": [
                {"level": lv, "at": when.isoformat(), "notify": list(t)}
                for lv, when, t in service.escalator.schedule(a)
            ],
            "deliveries": _iso(dl),
        }

    @api.post(
        "/api/alerts/{alert_id}/{action}",
        tags=["alerts"],
        summary="act on an alert",
        response_model=schemas.AlertOne,
        responses=_errors(403, 404, 409, 422, 504),
    )
    async def act(
        alert_id: str, action: StaffAction, body: ActionBody, u: UserDep
    ) -> dict[str, Any]:
        require(u, *TEAM_ROLES, "admin")
        a = await _alert_for(u, alert_id)
        try:
            b = await service.act(
                a.id,
                action,
                u.name,
                expected_version=body.expected_version,
                assignee=body.assignee,
                outcome=body.outcome.value if body.outcome else None,
                reason=body.reason.value if body.reason else None,
                note=body.note,
            )
        except KeyError:
            raise HTTPException(404, f"no alert {alert_id}") from None
        except ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        except TransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"alert": view(b, u)}

    # ------------------------------------------------------------- silences

    def _silence_team(target_scope: str, target: str) -> str | None:
        if target_scope == "resident":
            return team_of_resident(target)
        reg = getattr(runner, "_registry", None)
        if reg is not None:
            for d in reg.devices:
                if d.id == target:
                    return team_of_resident(d.resident)
        return None

    def _sil(s: Any) -> dict[str, Any]:
        d: dict[str, Any] = s.model_dump(mode="json")
        d["active"] = s.active(service.clock())
        return d

    @api.get("/api/silences", tags=["silences"], response_model=schemas.SilenceList)
    async def list_silences(u: UserDep, active: bool = False) -> dict[str, Any]:
        now = service.clock()
        items = service.silences(now if active else None)
        if u.scoped:
            items = [s for s in items if _silence_team(s.scope.value, s.target) in u.teams]
        return {"silences": [_sil(s) for s in items]}

    @api.post(
        "/api/silences",
        tags=["silences"],
        status_code=201,
        response_model=schemas.SilenceOne,
        responses=_errors(403, 404, 422),
    )
    async def create_silence(body: SilenceBody, u: UserDep) -> dict[str, Any]:
        require(u, *TEAM_ROLES, "specialist", "admin")
        team = _silence_team(body.scope, body.target)
        if team is None:
            raise HTTPException(404, f"no {body.scope} {body.target!r} in the registry")
        may_see_team(u, team)
        start = body.start or service.clock()
        if body.end <= start:
            raise problems.invalid(
                ("body", "end"), "a silence must end after it starts", body.end.isoformat()
            )
        s = service.add_silence(
            Silence(
                id=str(uuid.uuid4()),
                scope=SilenceScope(body.scope),
                target=body.target,
                start=start,
                end=body.end,
                created_by=u.name,
                reason=body.reason,
                rules=tuple(body.rules),
            )
        )
        return {"silence": _sil(s)}

    @api.post(
        "/api/silences/{silence_id}/end",
        tags=["silences"],
        response_model=schemas.SilenceOne,
        responses=_errors(403, 404),
    )
    async def end_silence(
        silence_id: str, u: UserDep, body: EndSilenceBody | None = None
    ) -> dict[str, Any]:
        require(u, *TEAM_ROLES, "specialist", "admin")
        s = service.silence(silence_id)
        if s is None:
            raise HTTPException(404, f"no current silence {silence_id}")
        team = _silence_team(s.scope.value, s.target)
        if team is not None:
            may_see_team(u, team)
        return {"silence": _sil(service.end_silence(silence_id, u.name))}

    # ------------------------------------------------------------- residents

    @api.get(
        "/api/residents/{resident}/timeline",
        tags=["residents"],
        response_model=schemas.Timeline,
        responses=_errors(403, 404),
    )
    async def timeline(
        resident: str, u: UserDep, hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24
    ) -> dict[str, Any]:
        require(u, *TEAM_ROLES, "specialist", "admin")
        team = team_of_resident(resident)
        if team is None:
            raise HTTPException(404, f"no resident {resident!r} in the registry")
        may_see_team(u, team)
        since = service.clock() - timedelta(hours=hours)
        try:
            events = await db(alert_store.resident_events, resident, since)
            alerts = await db(alert_store.query_alerts, resident=resident, since=since, limit=100)
        except Exception as exc:
            raise HTTPException(503, f"the database is not reachable: {exc}") from None
        access(u, "resident.timeline", resident, hours=hours)
        by_id = {str(a["id"]): view(a, u) for a in alerts if not a.get("shadow")}
        for a in service.live_alerts():
            if a.resident == resident:
                by_id[a.id] = view(a, u)
        return {
            "resident": resident,
            "team": team,
            "district": district_of(team),
            "events": [{**_iso(e), "words": words.event_words(e)} for e in events],
            "alerts": sorted(by_id.values(), key=lambda d: str(d["raised_at"]), reverse=True),
        }

    # ------------------------------------------------------------- access log

    @api.get(
        "/api/access-log", tags=["audit"], response_model=schemas.AccessLog, responses=_errors(403)
    )
    async def access_log(
        u: UserDep,
        resident: str | None = None,
        actor: str | None = None,
        since: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> dict[str, Any]:
        require(u, "auditor", "admin")
        residents: list[str] | None = None
        if u.scoped:  # an auditor of some districts: the reads of their residents only
            reg = registry()
            residents = [
                r.id
                for r in (reg.residents if reg is not None else [])
                if r.team in u.teams or district_of(r.team) in u.districts
            ]
            if resident is not None:
                team = team_of_resident(resident)
                if team is None:
                    raise HTTPException(404, f"no resident {resident!r} in the registry")
                may_see_team(u, team)
        rows: list[dict[str, Any]] = await db(
            access_store.read_access_log,
            resident=resident,
            actor=actor,
            since=since,
            limit=limit,
            residents=residents,
        )
        return {"entries": _iso(rows)}

    # ------------------------------------------------------------- live feed

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

    app.include_router(api)

    # ------------------------------------------------------------- sign-in

    def access_as(name: str, role: str, action: str, resident: str | None, **d: Any) -> None:
        service.log_access(name, role, action, resident, _iso(d))

    sessions_mod.install(
        app,
        auth=auth,
        db=db,
        access=access_as,
        config=session_config,
        user_dep=current_user,
        oidc=Oidc.from_settings(settings),
    )

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

    # ------------------------------------------------------------- console

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console")

    @app.get("/console", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    # The installable console: its service worker (scope /console, so it is served
    # from there, not from /console/static/) and its web app manifest.
    @app.get("/console/sw.js", include_in_schema=False)
    async def console_sw() -> FileResponse:
        return FileResponse(
            STATIC / "sw.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/console"},
        )

    @app.get("/console/manifest.webmanifest", include_in_schema=False)
    async def console_manifest() -> FileResponse:
        return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    return app
