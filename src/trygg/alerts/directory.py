"""The directory: what the gates need from the registry (resident -> team,
device -> kind), without the registry itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trygg.model import (
    DeviceKind,
)

__all__ = ["DeviceInfo", "Directory"]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    resident: str
    kind: DeviceKind


@dataclass(frozen=True, slots=True)
class Directory:
    """What the gates need from the registry: resident -> team, device -> kind."""

    teams: Mapping[str, str] = field(default_factory=dict)
    devices: Mapping[str, DeviceInfo] = field(default_factory=dict)
    default_team: str = "unassigned"

    def team_of(self, resident: str) -> str:
        return self.teams.get(resident, self.default_team)

    def kind_of(self, device: str | None) -> DeviceKind | None:
        if device is None:
            return None
        info = self.devices.get(device)
        return info.kind if info is not None else None

    @classmethod
    def from_registry(cls, registry: Any, default_team: str = "unassigned") -> Directory:
        """From a :class:`trygg.registry.Registry` (or anything shaped like it)."""
        return cls(
            teams={r.id: r.team for r in registry.residents},
            devices={d.id: DeviceInfo(d.resident, DeviceKind(d.kind)) for d in registry.devices},
            default_team=default_team,
        )
