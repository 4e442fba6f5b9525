"""The device registry: which device belongs to which resident, room and team.

Devices carry no personal data. The registry maps a device id to a resident
(a pseudonym), a room and a heartbeat interval; a resident belongs to a team
and lives in a timezone; a team belongs to a district (bydel). Names and
addresses are not part of it.

Districts are optional: ``districts:`` declares them and ``teams:`` puts a
team in one. A team not listed under ``teams:`` is in the default district
(``default``), so a registry without districts keeps working, all its teams
in one district.

The YAML format is the one in DESIGN.md (contract: replay), read by both
``trygg registry load`` and ``trygg rules replay``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
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

from trygg.durations import Duration
from trygg.model import DeviceKind, Room
from trygg.plain import (
    Loc,
    Path_,
    Problem,
    checked_yaml,
    line_of,
    read_file,
    validation_problems,
)

DEFAULT_TIMEZONE = "Europe/Oslo"
DEFAULT_HEARTBEAT = timedelta(minutes=5)
DEFAULT_DISTRICT = "default"
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_DISTRICT_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class District(BaseModel):
    """A district (bydel): teams that share the city standard and one overlay of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_DISTRICT_ID, description="lower case: also the overlay's file name")
    name: str | None = Field(default=None, max_length=120)


class Team(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    district: str = Field(default=DEFAULT_DISTRICT, pattern=_DISTRICT_ID)


class Resident(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID, description="a pseudonym, never a name")
    team: str = Field(min_length=1, max_length=64)
    timezone: str = DEFAULT_TIMEZONE
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown timezone {v!r} (use an IANA name such as Europe/Oslo)"
            raise ValueError(msg) from None
        return v

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Device(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID)
    resident: str
    kind: DeviceKind
    room: Room | None = None
    heartbeat: Duration = DEFAULT_HEARTBEAT


class Registry(BaseModel):
    """Districts, teams, residents and devices, checked for consistency as a whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    districts: list[District] = Field(default_factory=list)
    teams: list[Team] = Field(default_factory=list)
    residents: list[Resident] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Registry:
        if info.context and info.context.get(_NO_CROSS_CHECK):
            return self  # registry_problems checks these on the raw data, all at once
        if self.districts or self.teams:
            shape = {
                "districts": [{"id": d.id} for d in self.districts],
                "teams": [{"id": t.id, "district": t.district} for t in self.teams],
                "residents": [{"team": r.team} for r in self.residents] if self.districts else [],
            }
            for path, msg in _district_problems(shape):
                what = _KINDS.get(str(path[0]), str(path[0]))
                raise ValueError(f"{what} {path[1] + 1} ({path[0]}): {msg}")  # type: ignore[operator]
        seen: set[str] = set()
        for r in self.residents:
            if r.id in seen:
                raise ValueError(f"resident {r.id!r} is listed twice")
            seen.add(r.id)
        devs: set[str] = set()
        for d in self.devices:
            if d.id in devs:
                raise ValueError(f"device {d.id!r} is listed twice")
            devs.add(d.id)
            if d.resident not in seen:
                raise ValueError(f"device {d.id!r} belongs to unknown resident {d.resident!r}")
        return self

    def resident_by_id(self) -> dict[str, Resident]:
        return {r.id: r for r in self.residents}

    def device_by_id(self) -> dict[str, Device]:
        return {d.id: d for d in self.devices}

    def district_of(self, team: str) -> str:
        """The district of ``team`` (the default district when it is not listed)."""
        for t in self.teams:
            if t.id == team:
                return t.district
        return DEFAULT_DISTRICT

    def team_districts(self) -> dict[str, str]:
        """Every team (listed, or of a resident) -> its district."""
        out = {t.id: t.district for t in self.teams}
        for r in self.residents:
            out.setdefault(r.team, DEFAULT_DISTRICT)
        return out

    def district_ids(self) -> list[str]:
        """The districts declared or used, in order (declared first)."""
        out = [d.id for d in self.districts]
        for d in self.team_districts().values():
            if d not in out:
                out.append(d)
        return out

    def resident_districts(self) -> dict[str, str]:
        """Resident id -> district."""
        teams = self.team_districts()
        return {r.id: teams[r.team] for r in self.residents}


class RegistryError(ValueError):
    """A registry file that cannot be used: every problem, one ``file:line: reason`` each."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def parse_registry(
    data: Any, source: str = "<registry>", locs: Mapping[Path_, Loc] | None = None
) -> Registry:
    """Validate registry data (parsed YAML); raises RegistryError with every problem.

    ``locs`` (from :func:`trygg.plain.read_yaml`) puts each problem on its line."""
    problems = registry_problems(data, source, locs)
    if problems:
        raise RegistryError([str(p) for p in problems])
    return Registry.model_validate(data)


def registry_problems(
    data: Any, source: str = "<registry>", locs: Mapping[Path_, Loc] | None = None
) -> list[Problem]:
    """Every problem of registry data, in file order: fields of each resident and
    device, ids listed twice, devices of unknown residents."""
    locs = locs or {}
    if not isinstance(data, dict):
        return [Problem(source, 1, "expected a mapping with 'residents' and 'devices'")]

    def line(path: Path_) -> int:
        return line_of(locs, path, (source, 0))[1]

    def subject(path: Path_) -> tuple[str, Path_]:
        if len(path) >= 2 and path[0] in _KINDS and isinstance(path[1], int):
            items = data.get(path[0])
            item = items[path[1]] if isinstance(items, list) and path[1] < len(items) else None
            ident = item.get("id") if isinstance(item, dict) else None
            name = _KINDS[str(path[0])]
            who = f"{name} {ident!r}" if isinstance(ident, str) else f"{name} {path[1] + 1}"
            return who, path[2:]
        return "", path

    found: list[Problem] = []
    try:
        Registry.model_validate(data, context={_NO_CROSS_CHECK: True})
    except ValidationError as exc:
        found.extend(validation_problems(exc, Registry, source, locs, subject))
    for path, msg in [*_district_problems(data), *_cross_problems(data, line)]:
        who, _ = subject(path)
        found.append(Problem(source, line(path), f"{who + ' ' if who else ''}{msg}"))
    return sorted(found, key=lambda p: p.line)


_KINDS = {"districts": "district", "teams": "team", "residents": "resident", "devices": "device"}
_NO_CROSS_CHECK = "trygg.registry: fields only"


def _district_problems(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    """Districts and teams listed twice, teams in an undeclared district, and (once
    districts are declared) residents of a team that is in none."""
    out: list[tuple[Path_, str]] = []
    districts = data.get("districts")
    teams = data.get("teams")
    declared: dict[str, int] = {}
    for i, d in enumerate(districts if isinstance(districts, list) else []):
        did = d.get("id") if isinstance(d, dict) else None
        if not isinstance(did, str):
            continue
        if did in declared:
            out.append((("districts", i), "is listed twice"))
        else:
            declared[did] = i
    listed: dict[str, int] = {}
    for i, t in enumerate(teams if isinstance(teams, list) else []):
        if not isinstance(t, dict):
            continue
        tid, dist = t.get("id"), t.get("district", DEFAULT_DISTRICT)
        if isinstance(tid, str):
            if tid in listed:
                out.append((("teams", i), "is listed twice"))
            else:
                listed[tid] = i
        if declared and isinstance(dist, str) and dist not in declared:
            known = ", ".join(declared)
            out.append(
                (("teams", i, "district"), f"is in unknown district {dist!r} (declared: {known})")
            )
    if declared and DEFAULT_DISTRICT not in declared:
        for i, r in enumerate(data.get("residents") or []):
            team = r.get("team") if isinstance(r, dict) else None
            if isinstance(team, str) and team not in listed:
                out.append(
                    (
                        ("residents", i, "team"),
                        f"is of team {team!r}, which is in no district (list it under teams:)",
                    )
                )
    return out


def _cross_problems(data: dict[str, Any], line: Any) -> list[tuple[Path_, str]]:
    """Ids listed twice and devices of unknown residents, on the raw data (so that
    they are found even when other fields are wrong)."""
    out: list[tuple[Path_, str]] = []
    residents = data.get("residents")
    devices = data.get("devices")
    known: dict[str, int] = {}
    for i, r in enumerate(residents if isinstance(residents, list) else []):
        rid = r.get("id") if isinstance(r, dict) else None
        if not isinstance(rid, str):
            continue
        if rid in known:
            first = line(("residents", known[rid]))
            out.append((("residents", i), f"is listed twice (also on line {first})"))
        else:
            known[rid] = i
    seen: dict[str, int] = {}
    for i, d in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(d, dict):
            continue
        did, res = d.get("id"), d.get("resident")
        if isinstance(did, str):
            if did in seen:
                first = line(("devices", seen[did]))
                out.append((("devices", i), f"is listed twice (also on line {first})"))
            else:
                seen[did] = i
        if isinstance(res, str) and res not in known:
            out.append((("devices", i, "resident"), f"belongs to unknown resident {res!r}"))
    return out


def read_registry_text(text: str, source: str = "<registry>") -> Registry:
    """Parse and validate registry YAML; raises RegistryError with every problem."""
    return Registry.model_validate(checked_yaml(text, source, registry_problems, RegistryError))


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry YAML file."""
    p = Path(path)
    return read_registry_text(read_file(p, RegistryError), str(p))
