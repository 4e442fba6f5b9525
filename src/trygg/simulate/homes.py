"""Simulated homes: residents, their devices and their habits.

``build_homes`` makes N homes deterministically from a seed and returns both
the device registry (the same model ``trygg registry load`` reads) and the
``Home`` objects the generator needs (device ids by role, personal routine
parameters such as usual bedtime). Ids are pseudonyms: ``r-0001``,
``bed-0001``, ``motion-bathroom-0001`` ...
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from trygg.durations import format_duration
from trygg.model import DeviceKind, Room
from trygg.registry import DEFAULT_TIMEZONE, Registry, parse_registry

# Oslo district-like team names (home care is organised per district).
DEFAULT_TEAMS: tuple[str, ...] = ("stovner-nord", "grorud-sentrum", "sagene-ost", "nordstrand-syd")

MOTION_ROOMS: tuple[Room, ...] = (
    Room.BEDROOM,
    Room.BATHROOM,
    Room.KITCHEN,
    Room.LIVINGROOM,
    Room.HALLWAY,
)

# Device kinds that run on batteries and report their level now and then.
BATTERY_KINDS = frozenset(
    {
        DeviceKind.MOTION,
        DeviceKind.DOOR,
        DeviceKind.BUTTON,
        DeviceKind.FALL,
        DeviceKind.SMOKE,
        DeviceKind.THERMOMETER,
    }
)


@dataclass(frozen=True, slots=True)
class SimDevice:
    id: str
    kind: DeviceKind
    room: Room | None
    heartbeat_s: int = 300

    @property
    def battery(self) -> bool:
        return self.kind in BATTERY_KINDS


@dataclass(slots=True)
class Home:
    """One simulated home: a resident, the devices and the resident's habits."""

    index: int
    resident: str
    team: str
    timezone: str
    devices: list[SimDevice]
    # Habits, in minutes after local midnight.
    wake_mean: float = 450.0
    bed_mean: float = 1350.0
    outing_prob: float = 0.4
    night_visit_weights: tuple[float, float, float] = (0.35, 0.45, 0.2)
    dose_times: tuple[float, ...] = ()
    temp_base: float = 21.5
    tz: ZoneInfo = field(init=False, repr=False)
    by_role: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tz = ZoneInfo(self.timezone)
        roles: dict[str, str] = {}
        for d in self.devices:
            if d.kind is DeviceKind.MOTION and d.room is not None:
                roles[f"motion-{d.room.value}"] = d.id
            else:
                roles[d.kind.value] = d.id
        self.by_role = roles

    def device(self, role: str) -> str | None:
        """The id of the device in a role: ``bed``, ``door``, ``motion-kitchen`` ..."""
        return self.by_role.get(role)

    def motion(self, room: str) -> str:
        return self.by_role[f"motion-{room}"]


def build_homes(
    n: int,
    seed: int = 1,
    *,
    teams: tuple[str, ...] | list[str] = DEFAULT_TEAMS,
    timezone: str = DEFAULT_TIMEZONE,
    dispenser_share: float = 0.4,
    fall_share: float = 0.3,
    smoke_share: float = 0.8,
    thermometer_share: float = 0.5,
    heartbeat: timedelta = timedelta(minutes=5),
) -> tuple[Registry, list[Home]]:
    """Build ``n`` homes deterministically from ``seed``.

    Every home has a bed sensor, a motion sensor in each of bedroom, bathroom,
    kitchen, living room and hallway, a front-door sensor (room ``entrance``)
    and a safety-alarm button; the given shares of homes also have a
    medication dispenser, a (wearable) fall detector, a smoke detector and a
    thermometer.
    """
    if n < 0:
        raise ValueError("the number of residents cannot be negative")
    if not teams:
        raise ValueError("at least one team is needed")
    rng = random.Random(f"trygg-homes/{seed}")
    hb = int(heartbeat.total_seconds())
    if hb <= 0:
        raise ValueError("the heartbeat interval must be positive")
    homes: list[Home] = []
    for i in range(n):
        num = f"{i + 1:04d}"
        rid = f"r-{num}"
        devs = [SimDevice(f"bed-{num}", DeviceKind.BED, Room.BEDROOM, hb)]
        devs += [
            SimDevice(f"motion-{room.value}-{num}", DeviceKind.MOTION, room, hb)
            for room in MOTION_ROOMS
        ]
        devs.append(SimDevice(f"door-{num}", DeviceKind.DOOR, Room.ENTRANCE, hb))
        devs.append(SimDevice(f"button-{num}", DeviceKind.BUTTON, None, hb))
        # Draw every share for every home so that changing one share does not
        # reshuffle the others.
        has_disp, has_fall, has_smoke, has_thermo = (rng.random() for _ in range(4))
        if has_disp < dispenser_share:
            devs.append(SimDevice(f"dispenser-{num}", DeviceKind.DISPENSER, Room.KITCHEN, hb))
        if has_fall < fall_share:
            devs.append(SimDevice(f"fall-{num}", DeviceKind.FALL, None, hb))
        if has_smoke < smoke_share:
            devs.append(SimDevice(f"smoke-{num}", DeviceKind.SMOKE, Room.KITCHEN, hb))
        if has_thermo < thermometer_share:
            devs.append(
                SimDevice(f"thermometer-{num}", DeviceKind.THERMOMETER, Room.LIVINGROOM, hb)
            )
        doses = rng.choice(((480.0, 1200.0), (480.0, 840.0, 1200.0), (510.0,), (480.0, 1260.0)))
        homes.append(
            Home(
                index=i,
                resident=rid,
                team=rng.choice(list(teams)),
                timezone=timezone,
                devices=devs,
                wake_mean=rng.uniform(435.0, 480.0),
                bed_mean=rng.uniform(1320.0, 1380.0),
                outing_prob=rng.uniform(0.2, 0.7),
                night_visit_weights=rng.choice(
                    ((0.5, 0.4, 0.1), (0.35, 0.45, 0.2), (0.2, 0.5, 0.3))
                ),
                dose_times=doses,
                temp_base=rng.uniform(20.5, 22.5),
            )
        )
    return registry_of(homes), homes


def registry_data(homes: list[Home]) -> dict[str, Any]:
    """The registry as plain data in the DESIGN.md YAML format."""
    residents: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    for h in homes:
        residents.append({"id": h.resident, "team": h.team, "timezone": h.timezone})
        for d in h.devices:
            entry: dict[str, Any] = {"id": d.id, "resident": h.resident, "kind": d.kind.value}
            if d.room is not None:
                entry["room"] = d.room.value
            entry["heartbeat"] = format_duration(timedelta(seconds=d.heartbeat_s))
            devices.append(entry)
    return {"residents": residents, "devices": devices}


def registry_of(homes: list[Home]) -> Registry:
    return parse_registry(registry_data(homes), "<simulated homes>")


def registry_yaml(homes: list[Home]) -> str:
    """The registry YAML for ``homes``, as ``trygg registry load`` reads it."""
    header = "# Generated by `trygg simulate`: pseudonymous simulated homes.\n"
    return header + yaml.safe_dump(registry_data(homes), sort_keys=False, allow_unicode=True)
