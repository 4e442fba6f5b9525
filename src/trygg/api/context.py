"""What the API's groups of routes share: the alert service, the runner (its
registry), the database, and the checks of who may see what.

:func:`trygg.api.app.create_app` makes one :class:`ApiContext` and hands it to
each group (:mod:`trygg.api.health`, :mod:`trygg.api.alert_routes`,
:mod:`trygg.api.silence_routes`, :mod:`trygg.api.residents`,
:mod:`trygg.api.stream`). A user sees the teams of its scope (its teams, or
its districts' teams: :class:`trygg.store.access.User`); anything else is
refused with 403 and a reason. Every read of a resident's data goes to the
access log through :meth:`ApiContext.access`.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import HTTPException

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert
from trygg.alerts.service import Alerts
from trygg.api import words
from trygg.registry import DEFAULT_DISTRICT
from trygg.store.access import TEAM_ROLES, User


def iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: iso(x) for k, x in v.items()}
    if isinstance(v, list):
        return [iso(x) for x in v]
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


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _ERRORS[c]} for c in codes}


def require(u: User, *roles: str) -> None:
    if u.role not in roles:
        raise HTTPException(403, f"the {u.role} role may not do this")


def db_unreachable(exc: BaseException) -> HTTPException:
    """The 503 of a store call that failed: the database is not reachable, and why."""
    return HTTPException(503, f"the database is not reachable: {exc}")


@dataclass(frozen=True)
class ApiContext:
    """``db(fn, *args)`` runs a store function on a pooled connection in a
    worker thread; ``runner``: the embedded runner, or None (then there is no
    registry: every team is in the default district)."""

    service: Alerts
    runner: Any
    db: Callable[..., Awaitable[Any]]

    def registry(self) -> Any:
        return getattr(self.runner, "_registry", None)

    def district_of(self, team: str) -> str:
        reg = self.registry()
        return str(reg.district_of(team)) if reg is not None else DEFAULT_DISTRICT

    def may_see_team(self, u: User, team: str) -> None:
        if not u.scoped or team in u.teams:
            return
        if u.districts:
            d = self.district_of(team)
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

    def district_names(self, u: User) -> dict[str, str]:
        """The districts for the console's header: the user's own (its scope, or
        its teams'), else every district when there is more than the default."""
        reg = self.registry()
        if reg is None:
            return {}
        names = {d.id: d.name or d.id for d in reg.districts}
        if u.scoped:
            ids = sorted({*u.districts, *(self.district_of(t) for t in u.teams)})
        else:
            used = set(reg.team_districts().values())  # districts with teams
            ids = [d for d in reg.district_ids() if d in used]
            if ids in ([], [DEFAULT_DISTRICT]):
                ids = []
        return {i: names.get(i, i) for i in ids}

    def team_of_resident(self, resident: str) -> str | None:
        reg = getattr(self.runner, "_registry", None)
        if reg is None:
            return None
        for r in reg.residents:
            if r.id == resident:
                return str(r.team)
        return None

    def resident_team(self, u: User, resident: str) -> str:
        """The resident's team, when ``u`` may see it (else 404, or 403)."""
        team = self.team_of_resident(resident)
        if team is None:
            raise HTTPException(404, f"no resident {resident!r} in the registry")
        self.may_see_team(u, team)
        return team

    def view(self, a: Alert | dict[str, Any], u: User) -> dict[str, Any]:
        if isinstance(a, Alert):
            d = a.to_dict()
            d["allowed_actions"] = (
                lc.allowed_actions(a, u.name) if u.role in (*TEAM_ROLES, "admin") else []
            )
        else:
            d = dict(a)
            live = self.service.get(str(d.get("id")))
            if live is not None:
                return self.view(live, u)
            d["allowed_actions"] = []
        d["district"] = self.district_of(str(d.get("team")))
        d["rule_words"] = words.rule_words(str(d.get("rule")))
        d["suppressed_why"] = words.suppressed_why(d.get("suppressed_reason"))
        return d

    def access(self, u: User, action: str, resident: str | None, **detail: Any) -> None:
        self.access_as(u.name, u.role, action, resident, **detail)

    def access_as(self, name: str, role: str, action: str, resident: str | None, **d: Any) -> None:
        self.service.log_access(name, role, action, resident, iso(d))
