"""Helpers shared by the rule-engine tests (pure: no database, no broker)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from trygg.model import DeviceKind, Event, EventType, Room
from trygg.registry import Registry, parse_registry
from trygg.rules.catalogue import Catalogue, load_catalogue

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "rules"
OSLO = ZoneInfo("Europe/Oslo")

_CAT: Catalogue | None = None


def standard() -> Catalogue:
    global _CAT
    if _CAT is None:
        _CAT = load_catalogue([RULES])
    return _CAT


def registry(
    devices: list[dict[str, Any]], residents: list[dict[str, Any]] | None = None
) -> Registry:
    res = residents or [{"id": "r-1", "team": "t"}]
    return parse_registry({"residents": res, "devices": devices})


HOME = [
    {"id": "bed-1", "resident": "r-1", "kind": "bed", "room": "bedroom"},
    {"id": "pir-bath", "resident": "r-1", "kind": "motion", "room": "bathroom"},
    {"id": "pir-living", "resident": "r-1", "kind": "motion", "room": "livingroom"},
    {"id": "door-1", "resident": "r-1", "kind": "door", "room": "entrance"},
    {"id": "fall-1", "resident": "r-1", "kind": "fall", "room": "livingroom"},
    {"id": "therm-1", "resident": "r-1", "kind": "thermometer", "room": "livingroom"},
]


def local(text: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=OSLO, fold=fold)


_n = 0


def ev(
    reg: Registry,
    device: str,
    type_: str,
    at: datetime,
    value: float | None = None,
    eid: str | None = None,
) -> Event:
    global _n
    _n += 1
    d = reg.device_by_id()[device]
    return Event(
        device=device,
        id=eid or f"e{_n}",
        type=EventType(type_),
        time=at,
        resident=d.resident,
        kind=DeviceKind(d.kind),
        room=Room(d.room) if d.room else None,
        value=value,
    )
