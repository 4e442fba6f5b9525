"""Which events a rule step listens to: event types plus optional conditions.

Built by the catalogue from a rule's ``when``/``of``/``first``/... (a list
name, a macro or a mapping) and shared by every resident; calling it on an
event is the hot path of every rule, so the common case (types only) is one
set lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trygg.model import DeviceKind, Event, EventType, Room

ALL_TYPES: frozenset[EventType] = frozenset(EventType)


@dataclass(slots=True, eq=False)
class Matcher:
    """Which events a rule step listens to: types plus optional conditions."""

    types: frozenset[EventType]
    rooms: frozenset[Room] | None = None
    not_rooms: frozenset[Room] | None = None
    kinds: frozenset[DeviceKind] | None = None
    not_kinds: frozenset[DeviceKind] | None = None
    above: float | None = None
    below: float | None = None
    # No condition besides the types (``plain``), and every type (``any``).
    plain: bool = field(init=False, default=False)
    any: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        conditions = (
            self.rooms,
            self.not_rooms,
            self.kinds,
            self.not_kinds,
            self.above,
            self.below,
        )
        self.plain = all(c is None for c in conditions)
        self.any = self.plain and self.types == ALL_TYPES

    def __call__(self, ev: Event) -> bool:
        if ev.type not in self.types:
            return False
        if self.plain:
            return True
        if self.rooms is not None and ev.room not in self.rooms:
            return False
        if self.not_rooms is not None and ev.room in self.not_rooms:
            return False
        if self.kinds is not None and ev.kind not in self.kinds:
            return False
        if self.not_kinds is not None and ev.kind in self.not_kinds:
            return False
        if self.above is not None and (ev.value is None or not ev.value > self.above):
            return False
        return not (self.below is not None and (ev.value is None or not ev.value < self.below))
