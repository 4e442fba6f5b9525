"""The device registry: which device belongs to which resident, room and team.

Devices carry no personal data. The registry maps a device id to a resident
(a pseudonym), a room and a heartbeat interval; a resident belongs to a team
and lives in a timezone. Names and addresses are not part of it.

The YAML format is the one in DESIGN.md (contract: replay), read by both
``trygg registry load`` and ``trygg rules replay``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trygg.durations import parse_duration
from trygg.model import DeviceKind, Room

DEFAULT_TIMEZONE = "Europe/Oslo"
DEFAULT_HEARTBEAT = timedelta(minutes=5)
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


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
    heartbeat: timedelta = DEFAULT_HEARTBEAT

    @field_validator("heartbeat", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> timedelta:
        return parse_duration(v)


class Registry(BaseModel):
    """Residents and devices, checked for consistency as a whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    residents: list[Resident] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
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


class RegistryError(ValueError):
    """A registry file that cannot be used, with a message naming file and field."""


def parse_registry(data: Any, source: str = "<registry>") -> Registry:
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: expected a mapping with 'residents' and 'devices'")
    try:
        return Registry.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"{source}: {loc}: {err['msg']}" if loc else f"{source}: {err['msg']}")
        raise RegistryError("\n".join(lines)) from None


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{p}: not valid YAML: {exc}") from None
    return parse_registry(data, str(p))
