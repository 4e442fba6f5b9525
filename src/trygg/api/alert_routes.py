"""The alert routes: list and filter alerts, one alert with its records, and
the staff's actions on it (acknowledge, take, assign, ... ).

Staff actions go to the alert service in-process, so two staff pressing
*take* at once are serialised: one wins, the other gets 409 with "alert is
taken by …". Each alert listed or read is a read of its resident's data: it
goes to the access log.
"""

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, Field

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import OPEN_STATES, Alert, CancelReason, Outcome, State
from trygg.alerts.refusals import ConflictError, TransitionError
from trygg.api import problems, schemas
from trygg.api.context import ApiContext, db_unreachable, errors, iso, require
from trygg.model import Severity
from trygg.store import alerts as alert_store
from trygg.store.access import TEAM_ROLES, User

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

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


def install(api: APIRouter, ctx: ApiContext, current_user: Callable[..., Awaitable[User]]) -> None:
    """``/api/alerts``, ``/api/alerts/{alert_id}`` and its actions, on ``api``."""
    UserDep = Annotated[User, Depends(current_user)]
    service, db, registry = ctx.service, ctx.db, ctx.registry
    view, access = ctx.view, ctx.access
    may_see_team, district_of = ctx.may_see_team, ctx.district_of

    @api.get(
        "/api/alerts",
        tags=["alerts"],
        summary="list and filter alerts, newest first",
        response_model=schemas.AlertList,
        responses=errors(403, 422),
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
                raise db_unreachable(exc) from None
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
            raise db_unreachable(exc) from None
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
        responses=errors(403, 404),
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
            "deliveries": iso(dl),
        }

    @api.post(
        "/api/alerts/{alert_id}/{action}",
        tags=["alerts"],
        summary="act on an alert",
        response_model=schemas.AlertOne,
        responses=errors(403, 404, 409, 422, 504),
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
