"""Routing and escalation: who is told about an alert, and when.

The routing file (YAML, validated with pydantic; see ``routing.example.yaml``
and ``docs/alerts.md``) names recipients with their channel addresses, the
shifts in local time, each team's people on duty per shift and its leader,
and per severity an escalation policy::

    red:    team on duty at once, team leader after 60 s, response centre after 180 s
    yellow: team on duty, re-notified every 10 min until acknowledged
    green:  team on duty, daytime only, as a digest

Escalation is pure and *derived from the alert's records only*: level 1 is
the ``notified`` record, level n >= 2 an ``escalated`` record with
``data.level = n``, reminders are ``renotified`` records. The base time is
the ``raised`` record (or the ``released`` record of a held alert). So after
a restart :meth:`Escalator.due` over the reloaded alerts neither repeats a
step already recorded nor skips one that fell due while trygg was down (each
due level is sent once, in order; missed reminders collapse into one).

The I/O layer drives it: ``steps = escalator.due(open_alerts, now)``; for
each step persist ``step.apply(alert, now)`` (the new record) together with
the step's notifications in an outbox, then deliver; sleep until
``escalator.next_deadline(open_alerts, now)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit
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

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, Step
from trygg.alerts.gates import GateConfig
from trygg.durations import parse_duration
from trygg.model import Severity
from trygg.plain import (
    Problem,
    YamlSyntaxError,
    dotted,
    line_of,
    read_yaml,
    validation_problems,
)

__all__ = [
    "TEAM_LEADER",
    "TEAM_ON_DUTY",
    "Channel",
    "Contact",
    "EscalationStep",
    "Escalator",
    "Notification",
    "Policy",
    "PolicyStep",
    "Recipient",
    "RoutingConfig",
    "RoutingError",
    "Shift",
    "TeamConfig",
    "load_routing",
    "parse_routing",
]

TEAM_ON_DUTY = "team_on_duty"
TEAM_LEADER = "team_leader"
_SPECIAL_TARGETS = (TEAM_ON_DUTY, TEAM_LEADER)


class Channel(StrEnum):
    WEBHOOK = "webhook"  # address: the name of a webhook configured in settings (not the URL)
    EMAIL = "email"  # address: an e-mail address
    MQTT = "mqtt"  # address: a team name -> trygg/{site}/teams/{team}/alerts
    CONSOLE = "console"  # address: a team name (the live console feed)
    APPRISE = "apprise"  # address: an Apprise URL (ntfy, SMS, Teams, Matrix), secrets as ${VAR}


_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_SECRET_PARAMS = frozenset(
    {"token", "key", "apikey", "api_key", "secret", "password", "pass", "pwd", "access_token"}
)


def _literal_secret(url: str) -> str | None:
    """The part of an Apprise URL that holds a literal secret, or None: passwords
    and token-like query parameters must be ``${VAR}`` references."""
    try:
        u = urlsplit(url)
        password = u.password
    except ValueError:
        return None
    if password and not _ENV_REF.match(unquote(password)):
        return "the password"
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        if k.lower() in _SECRET_PARAMS and v and not _ENV_REF.match(v):
            return f"the parameter {k!r}"
    return None


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel
    address: str = Field(min_length=1)

    @model_validator(mode="after")
    def _address(self) -> Contact:
        if self.channel is Channel.EMAIL and "@" not in self.address:
            raise ValueError(f"{self.address!r} is not an e-mail address")
        if self.channel is Channel.WEBHOOK and "://" in self.address:
            raise ValueError(
                "a webhook contact names a webhook from the settings, not a URL "
                "(URLs and their secrets stay out of the routing file)"
            )
        if self.channel is Channel.APPRISE:
            if "://" not in self.address:
                raise ValueError(
                    f"{self.address!r} is not an Apprise URL (ntfys://..., json://..., ...)"
                )
            where = _literal_secret(self.address)
            if where is not None:
                raise ValueError(
                    f"{where} of an apprise URL must come from the environment, as ${{NAME}}"
                    " (secrets stay out of the routing file)"
                )
        return self


class Recipient(BaseModel):
    """A person, a role phone or a desk (the response centre) with its contacts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contacts: list[Contact] = Field(min_length=1)
    description: str = ""


def _parse_clock(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError('write a time of day as "HH:MM"')
    if isinstance(v, int):
        # YAML 1.1 reads an unquoted 15:00 as the sexagesimal number 900.
        if v == 0 or 60 <= v < 24 * 60:
            return time(v // 60, v % 60)
        raise ValueError('write a time of day as "HH:MM" (quoted)')
    return v


class Shift(BaseModel):
    """A shift in local wall-clock time; ``end`` before ``start`` runs past midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, v: Any) -> Any:
        return _parse_clock(v)

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


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


def _dur(v: Any) -> timedelta:
    return parse_duration(v)


class PolicyStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    after: timedelta = Field(default=timedelta(0), description="after the alert was raised")
    notify: list[str] = Field(min_length=1, description="team_on_duty, team_leader or recipients")

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, v: Any) -> timedelta:
        return _dur(v)


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


def _default_shifts() -> list[Shift]:
    return [
        Shift(name="day", start=time(7), end=time(15)),
        Shift(name="evening", start=time(15), end=time(23)),
        Shift(name="night", start=time(23), end=time(7)),
    ]


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
    shifts: list[Shift] = Field(default_factory=_default_shifts)
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
                cand = _local_instant(day, s.start, tz)
                if cand > at and (best is None or cand < best):
                    best = cand
            if best is not None:
                return best
        raise ValueError(f"no shift among {shifts} starts within 3 days")  # unreachable


def _local_instant(day: date, t: time, tz: ZoneInfo) -> datetime:
    """The first instant at which local wall-clock time on ``day`` reaches ``t``.

    Usually that is simply ``t`` on ``day``. When ``t`` falls in the gap of a
    clocks-forward night (02:30 in Oslo on the last Sunday of March) it is the
    instant the clocks jump, consistent with :meth:`RoutingConfig.shift_at`.
    When ``t`` occurs twice (clocks back) it is the first occurrence.
    """
    naive = datetime.combine(day, t)
    aware = naive.replace(tzinfo=tz, fold=0)
    utc = ZoneInfo("UTC")
    if aware.astimezone(utc).astimezone(tz).replace(tzinfo=None) == naive:
        return aware
    # in a gap: search between the two readings for the jump
    lo = naive.replace(tzinfo=tz, fold=1).astimezone(utc)
    hi = aware.astimezone(utc)
    if hi < lo:
        lo, hi = hi, lo
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(tz)


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
        names = {s.name for s in _default_shifts()}
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
            out.extend((("shifts",), msg) for msg in _coverage(parsed))
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
                    if t not in _SPECIAL_TARGETS and unknown(t):
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


def _coverage(shifts: list[Shift]) -> list[str]:
    """Each set of shifts that overlap (at its first minute) and each gap in the day."""
    out: list[str] = []
    overlaps: set[tuple[str, ...]] = set()
    gaps: list[list[int]] = []  # [first minute, minute after]
    for minute in range(24 * 60):
        t = time(minute // 60, minute % 60)
        hits = tuple(s.name for s in shifts if s.contains(t))
        if len(hits) > 1 and hits not in overlaps:
            overlaps.add(hits)
            out.append(f"{' and '.join(hits)} overlap at {t:%H:%M}")
        if not hits:
            if gaps and gaps[-1][1] == minute:
                gaps[-1][1] = minute + 1
            else:
                gaps.append([minute, minute + 1])
    if len(gaps) > 1 and gaps[0][0] == 0 and gaps[-1][1] == 24 * 60:  # across midnight
        gaps[0][0] = gaps.pop()[0]

    def hhmm(m: int) -> str:
        return f"{m // 60 % 24:02d}:{m % 60:02d}"

    for a, b in gaps:
        span = hhmm(a) if (b - a) % (24 * 60) == 1 else f"{hhmm(a)}-{hhmm(b)}"
        out.append(f"no shift covers {span}")
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
    try:
        doc = read_yaml(text, source)
    except YamlSyntaxError as exc:
        raise RoutingError(str(exc)) from None
    problems = sorted([*doc.problems, *routing_problems(doc.data, source, doc.locs)])
    if problems:
        raise RoutingError([str(p) for p in problems])
    return RoutingConfig.model_validate(doc.data if doc.data is not None else {})


def load_routing(path: str | Path) -> RoutingConfig:
    """Read and validate a routing file (the only function here that does I/O)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_routing_text(text, str(p))


# ------------------------------------------------------------------- escalation


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one address. ``key`` is the idempotency key: the same
    step to the same address always has the same key, so a receiver (or the
    outbox) can drop repeats."""

    alert_id: str
    action: str  # notify | escalate | renotify
    level: int
    n: int  # reminder number (0 for notify/escalate)
    target: str  # the policy target: team_on_duty, team_leader or a recipient
    recipient: str  # recipient id or "team:<name>" for team-wide channels
    channel: Channel
    address: str
    due_at: datetime
    digest: bool = False

    @property
    def key(self) -> str:
        return (
            f"{self.alert_id}:{self.action}:{self.level}:{self.n}:"
            f"{self.channel.value}:{self.address}"
        )

    def to_row(self, address: str) -> dict[str, Any]:
        """The notification as stored (``alert_notifications``) and sent between
        workers, with the address resolved (``{team}`` filled in)."""
        return {
            "key": self.key,
            "alert_id": self.alert_id,
            "action": self.action,
            "level": self.level,
            "n": self.n,
            "target": self.target,
            "recipient": self.recipient,
            "channel": self.channel.value,
            "address": address,
            "due_at": self.due_at.isoformat(),
            "digest": self.digest,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Notification:
        """Back from :meth:`to_row` or a database row (``due_at`` text or datetime)."""
        due = row["due_at"]
        return cls(
            alert_id=row["alert_id"],
            action=row["action"],
            level=row["level"],
            n=row["n"],
            target=row["target"],
            recipient=row["recipient"],
            channel=Channel(row["channel"]),
            address=row["address"],
            due_at=datetime.fromisoformat(due) if isinstance(due, str) else due,
            digest=row["digest"],
        )


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """A due step of an alert's escalation: record it with :meth:`apply`."""

    alert_id: str
    action: str  # notify (level 1) | escalate (level >= 2) | renotify
    level: int
    n: int
    due_at: datetime
    targets: tuple[str, ...]
    notifications: tuple[Notification, ...]

    @property
    def key(self) -> str:
        return f"{self.alert_id}:{self.action}:{self.level}:{self.n}"

    @property
    def unrouted(self) -> bool:
        """True when no address was found (log it loudly; the step is still recorded)."""
        return not self.notifications

    def apply(self, alert: Alert, now: datetime) -> Alert:
        """Append the record that marks this step done."""
        if alert.id != self.alert_id:
            raise ValueError(f"step for alert {self.alert_id} applied to {alert.id}")
        targets = list(self.targets)
        if self.action == "notify":
            return lc.notify(alert, now, targets=targets)
        if self.action == "escalate":
            return lc.escalate(alert, now, self.level, targets=targets)
        return lc.renotify(alert, now, targets=targets)


class Escalator:
    """Pure escalation over a :class:`RoutingConfig`; holds no per-alert state."""

    def __init__(self, routing: RoutingConfig) -> None:
        self.routing = routing

    # ----------------------------------------------------------- schedule

    def _policy(self, alert: Alert) -> Policy:
        return self.routing.policies[alert.severity]

    @staticmethod
    def _base(alert: Alert) -> datetime:
        released = [r.at for r in alert.records if r.step is Step.RELEASED]
        return released[-1] if released else alert.raised_at

    @staticmethod
    def _active(alert: Alert) -> bool:
        return alert.is_open and not alert.state.is_acknowledged and alert.routed

    def _next(
        self, alert: Alert, now: datetime | None = None
    ) -> tuple[str, int, int, datetime] | None:
        """The next step (action, level, n, due time): the earlier of the next
        level and the next reminder. Given ``now``, a level that is due by then
        takes precedence over a reminder that fell due earlier, so a reminder
        never leaves a due level behind."""
        if not self._active(alert):
            return None
        pol = self._policy(alert)
        tz = self.routing.tz_for(alert.team)
        done = alert.escalation_level
        base = self._base(alert)
        nxt_level: datetime | None = None
        if done < len(pol.steps):
            nxt_level = self.routing.next_in_shifts(
                base + pol.steps[done].after, pol.only_during, tz
            )
        nxt_re: datetime | None = None
        if (
            done >= 1
            and pol.renotify_every is not None
            and (pol.renotify_max is None or alert.renotify_count < pol.renotify_max)
            and alert.last_notified_at is not None
        ):
            nxt_re = self.routing.next_in_shifts(
                alert.last_notified_at + pol.renotify_every, pol.only_during, tz
            )
        if nxt_level is not None and (
            nxt_re is None or nxt_level <= nxt_re or (now is not None and nxt_level <= now)
        ):
            return ("notify" if done == 0 else "escalate", done + 1, 0, nxt_level)
        if nxt_re is not None:
            return ("renotify", done, alert.renotify_count + 1, nxt_re)
        return None

    def schedule(self, alert: Alert) -> list[tuple[int, datetime, tuple[str, ...]]]:
        """The levels still to come if nobody acknowledges: (level, when, targets)."""
        if not self._active(alert):
            return []
        pol = self._policy(alert)
        tz = self.routing.tz_for(alert.team)
        base = self._base(alert)
        out = []
        for i in range(alert.escalation_level, len(pol.steps)):
            when = self.routing.next_in_shifts(base + pol.steps[i].after, pol.only_during, tz)
            out.append((i + 1, when, tuple(pol.steps[i].notify)))
        return out

    def steps_due(self, alert: Alert, now: datetime) -> list[EscalationStep]:
        """Every step due for ``alert`` at ``now``, in order. Levels that fell due
        while trygg was down are each returned once; a reminder is returned only
        when no level is due, and at most one."""
        out: list[EscalationStep] = []
        a = alert
        pol = self._policy(alert)
        while True:
            nxt = self._next(a, now)
            if nxt is None or nxt[3] > now:
                break
            action, level, n, due_at = nxt
            if action == "renotify" and out:
                break
            targets = self._targets(pol, action, level)
            step = EscalationStep(
                alert_id=alert.id,
                action=action,
                level=level,
                n=n,
                due_at=due_at,
                targets=targets,
                notifications=tuple(self._notifications(a, action, level, n, targets, now)),
            )
            out.append(step)
            a = step.apply(a, now)  # simulate, to see what is due after it
            if action == "renotify":
                break
        return out

    def due(self, alerts: Iterable[Alert], now: datetime) -> list[EscalationStep]:
        """All due steps over ``alerts``, oldest due first."""
        out: list[EscalationStep] = []
        for a in alerts:
            out.extend(self.steps_due(a, now))
        return sorted(out, key=lambda s: (s.due_at, s.alert_id, s.level, s.n))

    def plan(self, alert: Alert, now: datetime) -> list[Notification]:
        """The notifications to send now for a (new) alert: those of its due steps."""
        return [n for s in self.steps_due(alert, now) for n in s.notifications]

    def next_deadline(self, alerts: Iterable[Alert], now: datetime) -> datetime | None:
        """The earliest time a step is due (may be <= now if one is overdue)."""
        times = [n[3] for a in alerts if (n := self._next(a)) is not None]
        return min(times) if times else None

    # ----------------------------------------------------------- addresses

    @staticmethod
    def _targets(pol: Policy, action: str, level: int) -> tuple[str, ...]:
        if action != "renotify":
            return tuple(pol.steps[level - 1].notify)
        seen: list[str] = []
        for st in pol.steps[:level]:
            for t in st.notify:
                if t not in seen:
                    seen.append(t)
        return tuple(seen)

    def recipients(self, team: str, target: str, at: datetime) -> list[tuple[str, list[Contact]]]:
        """Who ``target`` means for ``team`` at instant ``at``: (recipient, contacts)."""
        r = self.routing
        tc = r.teams.get(team)
        if tc is None and r.default_team is not None:
            team = r.default_team
            tc = r.teams[team]
        if target not in _SPECIAL_TARGETS:
            return [(target, list(r.recipients[target].contacts))]
        if tc is None:
            return [(p, list(r.recipients[p].contacts)) for p in r.fallback]
        shift = r.shift_at(at, r.tz_for(team))
        sname = shift.name if shift is not None else ""
        if target == TEAM_ON_DUTY:
            out: list[tuple[str, list[Contact]]] = []
            if tc.contacts:
                out.append((f"team:{team}", list(tc.contacts)))
            for p in tc.on_duty.get(sname, []):
                out.append((p, list(r.recipients[p].contacts)))
            return out
        leader = tc.leader_for(sname)
        if leader is None:  # no leader on this shift: fall back to the team on duty
            return self.recipients(team, TEAM_ON_DUTY, at)
        return [(leader, list(r.recipients[leader].contacts))]

    def _notifications(
        self,
        alert: Alert,
        action: str,
        level: int,
        n: int,
        targets: tuple[str, ...],
        now: datetime,
    ) -> list[Notification]:
        digest = self._policy(alert).digest
        out: list[Notification] = []
        seen: set[tuple[Channel, str]] = set()
        for t in targets:
            for who, contacts in self.recipients(alert.team, t, now):
                for c in contacts:
                    if (c.channel, c.address) in seen:
                        continue
                    seen.add((c.channel, c.address))
                    out.append(
                        Notification(
                            alert_id=alert.id,
                            action=action,
                            level=level,
                            n=n,
                            target=t,
                            recipient=who,
                            channel=c.channel,
                            address=c.address,
                            due_at=now,
                            digest=digest,
                        )
                    )
        return out
