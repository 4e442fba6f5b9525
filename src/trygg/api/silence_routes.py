"""The silence routes: list, create and end the silences of a resident or a device.

A silence (:mod:`trygg.alerts.silences`) covers its target for a while
(resident in hospital, device in service), for every rule or some; a user
scoped to teams or districts sees, makes and ends the silences of those only.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

from trygg.alerts.silences import Silence, SilenceScope
from trygg.api import problems, schemas
from trygg.api.context import ApiContext, errors, require
from trygg.store.access import TEAM_ROLES, User


class SilenceBody(BaseModel):
    scope: Literal["resident", "device"]
    target: str = Field(min_length=1, description="resident id or device id")
    start: AwareDatetime | None = Field(None, description="default: now")
    end: AwareDatetime
    reason: str = Field(min_length=1, description="why (resident in hospital, device in service)")
    rules: list[str] = Field(default_factory=list, description="only these rules (default: all)")


class EndSilenceBody(BaseModel):
    note: str = ""


def install(api: APIRouter, ctx: ApiContext, current_user: Callable[..., Awaitable[User]]) -> None:
    """``/api/silences`` and ``/api/silences/{silence_id}/end``, on ``api``."""
    UserDep = Annotated[User, Depends(current_user)]
    service, runner = ctx.service, ctx.runner
    may_see_team, team_of_resident = ctx.may_see_team, ctx.team_of_resident

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
        responses=errors(403, 404, 422),
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
        responses=errors(403, 404),
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
