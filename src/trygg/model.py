"""The contracts between pipeline stages.

Everything a later stage needs from an earlier one is defined here and only
here: the MQTT event payload (``EventPayload``), the validated and enriched
``Event`` that ingest hands on, the ``Signal`` the rule engine emits and the
vocabularies they use. Stages import these types, never each other's
internals, which keeps the stages replaceable (the distributed runner moves
them into separate processes without touching them).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator


class EventType(StrEnum):
    """The event vocabulary of DESIGN.md (contract: events on MQTT)."""

    BUTTON_PRESSED = "button.pressed"
    PULLCORD_PULLED = "pullcord.pulled"
    FALL_DETECTED = "fall.detected"
    FALL_CANCELLED = "fall.cancelled"
    ALARM_RESET = "alarm.reset"
    BED_OCCUPIED = "bed.occupied"
    BED_VACANT = "bed.vacant"
    CHAIR_OCCUPIED = "chair.occupied"
    CHAIR_VACANT = "chair.vacant"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    MOTION_DETECTED = "motion.detected"
    SMOKE_DETECTED = "smoke.detected"
    WATER_DETECTED = "water.detected"
    SEIZURE_DETECTED = "seizure.detected"
    TEMPERATURE = "temperature"
    DOSE_TAKEN = "dose.taken"
    DOSE_MISSED = "dose.missed"
    DISPENSER_FAULT = "dispenser.fault"
    BATTERY = "battery"
    HEARTBEAT = "heartbeat"
    LOCATION = "location"
    # Extensions (issue 21): every alarm of SCAIP's tables (SS 91100 Annex A/C)
    # has an event, and a message session's abort and a resident's cancel are
    # events of their own, distinct from the contract's ``alarm.reset``.
    ALARM_ABORTED = "alarm.aborted"  # SCAIP RE: the unit aborts its message session
    ALARM_CANCELLED = "alarm.cancelled"  # the resident cancels (pendant cancel, reset)
    CO_DETECTED = "co.detected"  # carbon-monoxide detector
    GAS_DETECTED = "gas.detected"  # (natural) gas detector
    HEAT_DETECTED = "heat.detected"  # heat detector: fire by temperature
    WANDERING_DETECTED = "wandering.detected"  # wandering sensor
    UNIT_ALARM = "unit.alarm"  # the local unit's own alarm (not its pendant)
    SOS_PRESSED = "sos.pressed"  # a tracking device's SOS
    INACTIVITY_DETECTED = "inactivity.detected"  # an activity detector used inverted


# A SCAIP message session (SS 91100 §4.3/§4.4) is the messages of one unit with
# the same ``ref``. The session's first message has the ``ref`` as its event id;
# its updates (IN) and its abort (RE) have ``<ref>~<mty>~<digest>`` (ingest's
# ``scaip.Mrq.event_id``), so each is an event of its own and the alert gates
# can still find the session (``session_of``). ``~`` is never part of a ref.
SESSION_SEP = "~"


def session_of(event_id: str) -> str:
    """The message session an event id belongs to: its part before ``~`` (or itself)."""
    return event_id.split(SESSION_SEP, 1)[0]


class Room(StrEnum):
    """Rooms a device can be placed in; a door in the entrance is the front door."""

    BEDROOM = "bedroom"
    BATHROOM = "bathroom"
    KITCHEN = "kitchen"
    LIVINGROOM = "livingroom"
    HALLWAY = "hallway"
    ENTRANCE = "entrance"


class DeviceKind(StrEnum):
    BED = "bed"
    CHAIR = "chair"
    MOTION = "motion"
    DOOR = "door"
    BUTTON = "button"
    PULLCORD = "pullcord"
    FALL = "fall"
    SMOKE = "smoke"
    WATER = "water"
    DISPENSER = "dispenser"
    THERMOMETER = "thermometer"
    SEIZURE = "seizure"
    GPS = "gps"


class Severity(StrEnum):
    """Alert severity, VKP severity levels 1-3."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return {"green": 1, "yellow": 2, "red": 3}[self.value]


# Plausible physical ranges; a reading outside them is a broken sensor or a
# malformed payload, and goes to the dead letters rather than to the rules.
VALUE_RANGES: dict[EventType, tuple[float, float]] = {
    EventType.TEMPERATURE: (-60.0, 120.0),
    EventType.BATTERY: (0.0, 100.0),
}
# What PostgreSQL can hold, checked before anything is spooled: a value the
# database refused would otherwise stop at the drainer, not at the decoder.
# Any value must fit `real` (devices.battery); events.value is `double precision`.
VALUE_MAX = 3.4e38  # float4's largest is 3.40282e38
VALUE_MIN = 1.2e-38  # float4's smallest normal; below ~1e-45 the cast to real fails
# timestamptz refuses a UTC offset of 16 hours or more; Python takes up to 24.
MAX_UTC_OFFSET = timedelta(hours=16)
_MIN_UTC_OFFSET = -MAX_UTC_OFFSET


def storable(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates escaped (``\\x00``,
    ``\\ud800``), everything else as it is."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class Position(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class EventPayload(BaseModel):
    """One event as a device publishes it (DESIGN.md, contract: events on MQTT).

    Unknown extra fields are ignored rather than refused, so that a device
    firmware that adds a field does not turn every one of its alarms into a
    dead letter.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    type: EventType
    time: AwareDatetime
    value: float | None = None
    room: Room | None = None
    position: Position | None = None

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        # One comparison on the hot path: NaN and infinities fail it too.
        if v is not None and not VALUE_MIN <= abs(v) <= VALUE_MAX and v != 0:
            if not math.isfinite(v):
                raise ValueError("value must be a finite number")
            raise ValueError(
                f"value {v:g} is out of range: 0 or a magnitude from {VALUE_MIN:g}"
                f" to {VALUE_MAX:g} (what the database's real holds)"
            )
        return v

    @model_validator(mode="after")
    def _value_fits_type(self) -> EventPayload:
        # Here rather than in validators of their own: one call per event on the
        # hot path. (JSON parsers refuse lone surrogates; a Python caller may not.)
        if "\x00" in self.id:
            raise ValueError("id contains NUL (U+0000), which the database cannot store")
        # tzinfo.utcoffset: a quarter of the cost of datetime.utcoffset here.
        tz = self.time.tzinfo
        offset = tz.utcoffset(self.time) if tz is not None else None
        if offset is not None and not _MIN_UTC_OFFSET < offset < MAX_UTC_OFFSET:
            minutes = int(abs(offset).total_seconds()) // 60
            raise ValueError(
                f"time has a UTC offset of {'-' if offset < timedelta(0) else '+'}"
                f"{minutes // 60:02d}:{minutes % 60:02d}: the database holds less than"
                " 16 hours either way (real ones are -12:00 to +14:00)"
            )
        bounds = VALUE_RANGES.get(self.type)
        if bounds is not None:
            if self.value is None:
                raise ValueError(f"a {self.type.value} event needs a numeric 'value'")
            lo, hi = bounds
            if not lo <= self.value <= hi:
                raise ValueError(f"{self.type.value} value {self.value} is outside {lo:g}..{hi:g}")
        if self.type is EventType.LOCATION and self.position is None:
            raise ValueError("a location event needs a 'position' with lat and lon")
        return self


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """A validated event for a known device, enriched from the device registry.

    ``time`` is when the device observed it (timezone-aware); ``room`` is the
    payload's room or else the device's registered room.

    Treat it as immutable. It is not a frozen dataclass only because a frozen
    one takes three times as long to build (``object.__setattr__`` per
    field), and ingest builds one per event: ~5 % of the batched ingest path.
    """

    device: str
    id: str
    type: EventType
    time: datetime
    resident: str
    kind: DeviceKind
    room: Room | None = None
    value: float | None = None
    position: tuple[float, float] | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The deduplication key: an event id is unique per device."""
        return (self.device, self.id)


def event_of(
    p: EventPayload, device: str, resident: str, kind: DeviceKind, room: Room | None
) -> Event:
    """A checked payload as an Event of its device: the device's id, resident and
    kind from the registry, and the device's room unless the payload names one."""
    pos = p.position
    return Event(
        device,
        p.id,
        p.type,
        p.time,
        resident,
        kind,
        p.room or room,
        p.value,
        None if pos is None else (pos.lat, pos.lon),
    )


DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024  # what a dead letter keeps of its payload
DEAD_LETTER_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that was not a valid event for a known device, kept with its reason.

    Bounded and storable by construction, whoever builds one: ``payload``
    keeps at most the first ``DEAD_LETTER_PAYLOAD_BYTES`` (64 KiB) of what came
    in, ``size`` and ``sha256`` are of the whole payload (given when the caller
    only has its head, else computed here), and ``topic``, ``reason`` and
    ``device`` have NUL and lone surrogates escaped, which PostgreSQL's text
    cannot hold; the reason is cut to ``DEAD_LETTER_REASON_CHARS``.
    """

    topic: str
    payload: bytes
    reason: str
    received_at: datetime
    device: str | None = None
    size: int = -1  # of the whole payload; -1: len(payload)
    sha256: bytes = b""  # of the whole payload; b"": computed from payload

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen
        payload = self.payload
        if self.size < 0:
            set_(self, "size", len(payload))
        if not self.sha256:
            set_(self, "sha256", hashlib.sha256(payload).digest())
        if len(payload) > DEAD_LETTER_PAYLOAD_BYTES or type(payload) is not bytes:
            set_(self, "payload", bytes(payload[:DEAD_LETTER_PAYLOAD_BYTES]))
        set_(self, "topic", storable(self.topic))
        reason = storable(self.reason)
        if len(reason) > DEAD_LETTER_REASON_CHARS:
            reason = reason[: DEAD_LETTER_REASON_CHARS - 3] + "..."
        set_(self, "reason", reason)
        if self.device is not None:
            set_(self, "device", storable(self.device))


class SignalAction(StrEnum):
    FIRE = "fire"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Signal:
    """What the rule engine decides: a rule fires or clears for a resident.

    ``at`` is the (event or timer) time the decision belongs to, never the
    wall clock of the machine that computed it, so replay and live agree.
    ``device`` is set for per-device rules (device offline, battery low).
    ``shadow`` marks a signal of a candidate catalogue running in shadow mode
    (docs/rules.md): its alerts are stored apart and never routed.
    """

    action: SignalAction
    rule: str
    resident: str
    at: datetime
    code: str
    severity: Severity
    catalogue_version: str
    events: tuple[str, ...] = ()
    device: str | None = None
    title: str = field(default="", compare=False)
    shadow: bool = False
