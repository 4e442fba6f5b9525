"""The sessions' API: enrol a phone (a one-time link and its QR code), list
sessions, revoke one.

A team leader (or an admin) enrols a phone: ``POST /api/enrolments`` (the
console's *Telefoner* panel) gives the link, ``/auth/enrol?code=te_...``,
that :mod:`trygg.api.signin_routes` redeems. Each user sees and revokes its
own sessions; a team leader its teams' too; an admin all. Every enrolment and
revocation is written to the access log (``session.*``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import segno
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from trygg.api.sessions import SignIn, errors
from trygg.store import access as access_store
from trygg.store.access import TEAM_ROLES, User


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


def install(app: FastAPI, s: SignIn, *, user_dep: Callable[..., Awaitable[User]]) -> None:
    """``/api/enrolments`` and ``/api/sessions`` (``user_dep``: the API's
    dependency for the authenticated user)."""
    store, log_session, base_url = s.store, s.log_session, s.base_url
    enrol_ttl = s.enrol_ttl

    api = APIRouter(tags=["sign-in"])

    def may_manage(u: User, teams: list[str]) -> bool:
        return u.role == "admin" or (u.role == "team_leader" and bool(set(teams) & set(u.teams)))

    @api.post(
        "/api/enrolments",
        status_code=201,
        summary="a one-time link and QR code that signs a phone in as a user",
        response_model=EnrolmentOne,
        responses=errors(403, 404, 422),
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
        responses=errors(403, 404),
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

    app.include_router(api, responses=errors(401, 413, 503))
