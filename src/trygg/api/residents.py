"""The residents' data: a resident's timeline, and the access log of who read
residents' data.

Reading a timeline is itself written to the access log. An auditor scoped to
districts reads the entries of its districts' residents only.
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from trygg.api import schemas, words
from trygg.api.context import ApiContext, db_unreachable, errors, iso, require
from trygg.store import access_log as access_store
from trygg.store import alerts as alert_store
from trygg.store.access import TEAM_ROLES, User


def install(api: APIRouter, ctx: ApiContext, current_user: Callable[..., Awaitable[User]]) -> None:
    """``/api/residents/{resident}/timeline`` and ``/api/access-log``, on ``api``."""
    UserDep = Annotated[User, Depends(current_user)]
    service, db, registry = ctx.service, ctx.db, ctx.registry
    view, access, district_of = ctx.view, ctx.access, ctx.district_of
    resident_team = ctx.resident_team

    @api.get(
        "/api/residents/{resident}/timeline",
        tags=["residents"],
        response_model=schemas.Timeline,
        responses=errors(403, 404),
    )
    async def timeline(
        resident: str, u: UserDep, hours: Annotated[float, Query(gt=0, le=24 * 31)] = 24
    ) -> dict[str, Any]:
        require(u, *TEAM_ROLES, "specialist", "admin")
        team = resident_team(u, resident)
        since = service.clock() - timedelta(hours=hours)
        try:
            events = await db(alert_store.resident_events, resident, since)
            alerts = await db(alert_store.query_alerts, resident=resident, since=since, limit=100)
        except Exception as exc:
            raise db_unreachable(exc) from None
        access(u, "resident.timeline", resident, hours=hours)
        by_id = {str(a["id"]): view(a, u) for a in alerts if not a.get("shadow")}
        for a in service.live_alerts():
            if a.resident == resident:
                by_id[a.id] = view(a, u)
        return {
            "resident": resident,
            "team": team,
            "district": district_of(team),
            "events": [{**iso(e), "words": words.event_words(e)} for e in events],
            "alerts": sorted(by_id.values(), key=lambda d: str(d["raised_at"]), reverse=True),
        }

    # ------------------------------------------------------------- access log

    @api.get(
        "/api/access-log", tags=["audit"], response_model=schemas.AccessLog, responses=errors(403)
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
                resident_team(u, resident)
        rows: list[dict[str, Any]] = await db(
            access_store.read_access_log,
            resident=resident,
            actor=actor,
            since=since,
            limit=limit,
            residents=residents,
        )
        return {"entries": iso(rows)}
