"""The routing file: who is told about an alert, and when.

The routing file (YAML, validated with pydantic; see ``routing.example.yaml``
and ``docs/alerts.md``) names recipients with their channel addresses, the
shifts in local time, each team's people on duty per shift and its leader,
and per severity an escalation policy::

    red:    team on duty at once, team leader after 60 s, response centre after 180 s
    yellow: team on duty, re-notified every 10 min until acknowledged
    green:  team on duty, daytime only, as a digest

This module holds the file's model (:class:`RoutingConfig`) and its reading:
every problem of a file at once, each at its line (:func:`routing_problems`,
:func:`parse_routing_text`, :func:`load_routing`). Recipients and their
channels are in :mod:`trygg.alerts.contacts`, shifts in
:mod:`trygg.alerts.shifts`, the escalation timetable in
:mod:`trygg.alerts.escalation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trygg.alerts.contacts import Contact, Recipient
from trygg.alerts.gate_config import GateConfig
from trygg.alerts.shifts import Shift, coverage, default_shifts, local_instant
from trygg.durations import Duration, parse_duration
from trygg.model import Severity
from trygg.plain import (
    Problem,
    checked_yaml,
    dotted,
    line_of,
    read_file,
    validation_problems,
)

__all__ = [
    "SPECIAL_TARGETS",
    "TEAM_LEADER",
    "TEAM_ON_DUTY",
    "Policy",
    "PolicyStep",
    "RoutingConfig",
    "RoutingError",
    "TeamConfig",
    "cross_problems",
    "load_routing",
    "parse_routing",
    "parse_routing_text",
    "routing_problems",
]

TEAM_ON_DUTY = "team_on_duty"
TEAM_LEADER = "team_leader"
SPECIAL_TARGETS = (TEAM_ON_DUTY, TEAM_LEADER)


class TeamConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    contacts: list[Contact] = Field(
        default_factory=list, description="team-wide channels: MQTT team topic, console"
    )
    on_duty: dict[str, list[str]] = Field(
        default_factory=dict, description="shift name -> recipients on duty"
    )
    leader: str | dict[str, str] | None = Field(
        None, description="recipient id, or shift name -> recipient id"
    )
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else _zone(v)

    def leader_for(self, shift: str) -> str | None:
        if isinstance(self.leader, dict):
            return self.leader.get(shift)
        return self.leader


class PolicyStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    after: Duration = Field(default=timedelta(0), description="after the alert was raised")
    notify: list[str] = Field(min_length=1, description="team_on_duty, team_leader or recipients")


class Policy(BaseModel):
    """An escalation policy: levels 1..n, each ``after`` the raise if still unacknowledged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: list[PolicyStep] = Field(min_length=1)
    renotify_every: timedelta | None = None
    renotify_max: int | None = Field(default=None, ge=0)
    only_during: list[str] = Field(
        default_factory=list, description="shift names; outside them steps wait for the next"
    )
    digest: bool = Field(default=False, description="tell channels to batch these into a digest")

    @field_validator("renotify_every", mode="before")
    @classmethod
    def _renotify(cls, v: Any) -> timedelta | None:
        if v is None:
            return None
        d = parse_duration(v)
        if d <= timedelta(0):
            raise ValueError("renotify_every must be longer than 0s")
        return d

    @model_validator(mode="after")
    def _increasing(self) -> Policy:
        prev: timedelta | None = None
        for i, s in enumerate(self.steps):
            if prev is not None and s.after <= prev:
                raise ValueError(
                    f"step {i + 1} comes after {s.after} but must come later than step {i}"
                )
            prev = s.after
        return self


def _default_policies() -> dict[Severity, Policy]:
    return {
        Severity.RED: Policy(
            steps=[
                PolicyStep(after=timedelta(0), notify=[TEAM_ON_DUTY]),
                PolicyStep(after=timedelta(seconds=60), notify=[TEAM_LEADER]),
            ],
            renotify_every=timedelta(minutes=2),
        ),
        Severity.YELLOW: Policy(
            steps=[PolicyStep(after=timedelta(0), notify=[TEAM_ON_DUTY])],
            renotify_every=timedelta(minutes=10),
        ),
        Severity.GREEN: Policy(
            steps=[PolicyStep(after=timedelta(0), notify=[TEAM_ON_DUTY])], digest=True
        ),
    }


def _zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Europe/Oslo)") from None
    return v


class RoutingConfig(BaseModel):
    """The routing file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    timezone: str = "Europe/Oslo"
    shifts: list[Shift] = Field(default_factory=default_shifts)
    recipients: dict[str, Recipient] = Field(default_factory=dict)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    default_team: str | None = Field(
        None, description="the team whose routing applies to alerts of teams not listed"
    )
    fallback: list[str] = Field(
        default_factory=list,
        description="recipients for alerts of unknown teams when there is no default_team",
    )
    policies: dict[Severity, Policy] = Field(default_factory=_default_policies)
    gates: GateConfig = GateConfig()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _zone(v)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RoutingConfig:
        if info.context and info.context.get(_FIELDS_ONLY):
            return self  # parse_routing checks these on the raw data, all at once
        problems = cross_problems(self.model_dump())
        if problems:
            raise ValueError("; ".join(f"{dotted(p)}: {msg}" for p, msg in problems))
        return self

    # ----------------------------------------------------------- time of day

    def tz_for(self, team: str) -> ZoneInfo:
        t = self.teams.get(team)
        return ZoneInfo(t.timezone if t is not None and t.timezone else self.timezone)

    def shift_at(self, at: datetime, tz: ZoneInfo | None = None) -> Shift | None:
        """The shift at instant ``at`` in local wall-clock time (DST-correct)."""
        local = at.astimezone(tz or ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        for s in self.shifts:
            if s.contains(local):
                return s
        return None

    def next_in_shifts(self, at: datetime, shifts: list[str], tz: ZoneInfo) -> datetime:
        """``at`` if it falls in one of ``shifts``, else when the next of them starts."""
        if not shifts:
            return at
        cur = self.shift_at(at, tz)
        if cur is not None and cur.name in shifts:
            return at
        local_day = at.astimezone(tz).date()
        best: datetime | None = None
        for d in range(0, 3):
            day = local_day + timedelta(days=d)
            for s in self.shifts:
                if s.name not in shifts:
                    continue
                cand = local_instant(day, s.start, tz)
                if cand > at and (best is None or cand < best):
                    best = cand
            if best is not None:
                return best
        raise ValueError(f"no shift among {shifts} starts within 3 days")  # unreachable


class RoutingError(ValueError):
    """A routing file that cannot be used: every problem, one ``file:line: field: reason`` each."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


_FIELDS_ONLY = "trygg.alerts.routing: fields only"
_Path = tuple[str | int, ...]


def cross_problems(data: Mapping[str, Any]) -> list[tuple[_Path, str]]:
    """What the fields alone do not show, on raw (or dumped) routing data, all of
    it: shifts that overlap or leave a gap, missing policies, and names of shifts,
    recipients and teams that are not defined. Parts that are not even of the
    right shape are skipped (their field errors say so)."""
    out: list[tuple[_Path, str]] = []
    raw_shifts = data.get("shifts")
    names: set[str] | None = None
    if raw_shifts is None:
        names = {s.name for s in default_shifts()}
    elif isinstance(raw_shifts, list):
        names = set()
        parsed: list[Shift] | None = []
        for i, item in enumerate(raw_shifts):
            name = item.get("name") if isinstance(item, Mapping) else None
            if isinstance(name, str):
                if name in names:
                    out.append((("shifts", i, "name"), f"shift {name!r} is defined twice"))
                names.add(name)
            try:
                shift = Shift.model_validate(item)
            except ValidationError:
                parsed = None
            if parsed is not None:
                parsed.append(shift)
        if parsed:
            out.extend((("shifts",), msg) for msg in coverage(parsed))
    raw_recipients = data.get("recipients", {})
    recipients = set(raw_recipients) if isinstance(raw_recipients, Mapping) else None

    def unknown(p: Any) -> bool:
        return recipients is not None and isinstance(p, str) and p not in recipients

    def unknown_shift(sh: Any) -> bool:
        return names is not None and isinstance(sh, str) and sh not in names

    policies = data.get("policies")
    if isinstance(policies, Mapping):
        keys = {str(k) for k in policies}
        missing = [s.value for s in Severity if s.value not in keys]
        if missing:
            out.append((("policies",), f"no policy for {', '.join(missing)}"))
        for sev, pol in policies.items():
            if not isinstance(pol, Mapping):
                continue
            steps = pol.get("steps")
            for i, st in enumerate(steps if isinstance(steps, list) else []):
                notify = st.get("notify") if isinstance(st, Mapping) else None
                for t in notify if isinstance(notify, list) else []:
                    if t not in SPECIAL_TARGETS and unknown(t):
                        out.append(
                            (
                                ("policies", str(sev), "steps", i, "notify"),
                                f"unknown recipient {t!r} (use {TEAM_ON_DUTY}, {TEAM_LEADER} "
                                "or a name under recipients)",
                            )
                        )
            only = pol.get("only_during")
            for sh in only if isinstance(only, list) else []:
                if unknown_shift(sh):
                    out.append((("policies", str(sev), "only_during"), f"unknown shift {sh!r}"))
    teams = data.get("teams")
    for tname, team in teams.items() if isinstance(teams, Mapping) else []:
        if not isinstance(team, Mapping):
            continue
        on_duty = team.get("on_duty")
        for sh, people in on_duty.items() if isinstance(on_duty, Mapping) else []:
            where: _Path = ("teams", tname, "on_duty", sh)
            if unknown_shift(sh):
                out.append((where, f"unknown shift {sh!r}"))
            for p in people if isinstance(people, list) else []:
                if unknown(p):
                    out.append((where, f"unknown recipient {p!r}"))
        leader = team.get("leader")
        leaders = (
            list(leader.items())
            if isinstance(leader, Mapping)
            else [("", leader)]
            if leader
            else []
        )
        for sh, p in leaders:
            where = ("teams", tname, "leader", sh) if sh else ("teams", tname, "leader")
            if sh and unknown_shift(sh):
                out.append((where, f"unknown shift {sh!r}"))
            if unknown(p):
                out.append((where, f"unknown recipient {p!r}"))
        if not team.get("contacts") and not team.get("on_duty"):
            out.append((("teams", tname), "give it contacts or people on_duty"))
    default_team = data.get("default_team")
    if isinstance(default_team, str) and not (isinstance(teams, Mapping) and default_team in teams):
        out.append((("default_team",), f"unknown team {default_team!r}"))
    fallback = data.get("fallback")
    for p in fallback if isinstance(fallback, list) else []:
        if unknown(p):
            out.append((("fallback",), f"unknown recipient {p!r}"))
    return out


def routing_problems(
    data: Any, source: str = "<routing>", locs: Mapping[_Path, tuple[str, int]] | None = None
) -> list[Problem]:
    """Every problem of routing data (parsed YAML), each at its line when ``locs``
    (from :func:`trygg.plain.read_yaml`) is given."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = 1 if locs else 0
        return [Problem(source, line, "expected a mapping (recipients, teams, policies, …)")]
    locs = locs or {}
    found: list[Problem] = []
    try:
        RoutingConfig.model_validate(data, context={_FIELDS_ONLY: True})
    except ValidationError as exc:
        found.extend(validation_problems(exc, RoutingConfig, source, locs))
    for path, msg in cross_problems(data):
        _, line = line_of(locs, path, (source, 0))
        found.append(Problem(source, line, f"{dotted(path)}: {msg}"))
    return sorted(found, key=lambda p: p.line)


def parse_routing(
    data: Any,
    source: str = "<routing>",
    locs: Mapping[_Path, tuple[str, int]] | None = None,
) -> RoutingConfig:
    """Validate routing data (already parsed YAML); raises RoutingError listing
    every problem. Pure."""
    problems = routing_problems(data, source, locs)
    if problems:
        raise RoutingError([str(p) for p in problems])
    return RoutingConfig.model_validate(data if data is not None else {})


def parse_routing_text(text: str, source: str = "<routing>") -> RoutingConfig:
    data = checked_yaml(text, source, routing_problems, RoutingError)
    return RoutingConfig.model_validate(data if data is not None else {})


def load_routing(path: str | Path) -> RoutingConfig:
    """Read and validate a routing file (the only function here that does I/O)."""
    p = Path(path)
    return parse_routing_text(read_file(p, RoutingError), str(p))
