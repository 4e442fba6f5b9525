"""An ``Mrq`` -> the one event it means in trygg's vocabulary. Pure.

The mapping from device type (``dty``) and status code (``stc``) to an event
type is the table in docs/ingest.md; this module is its one implementation.
An ``<mrq>`` becomes at most one event. A message trygg has no event for is
refused with ``MrqError`` (``snu`` 5), naming its codes (``trygg.ingest.scaip_codes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from trygg.ingest.scaip_codes import DEVICE_TYPES, STATUS_CODES, code_name
from trygg.ingest.scaip_mrq import IN, ME, PI, RE, Mrq, MrqError, Snu
from trygg.model import EventType, Room

# Location codes (lco) that name one of trygg's rooms; others keep the
# device's registered room.
ROOMS: dict[int, Room] = {
    11: Room.BATHROOM,
    37: Room.BATHROOM,  # handicap bathroom
    12: Room.BEDROOM,
    21: Room.KITCHEN,
    13: Room.KITCHEN,  # dining room
    43: Room.LIVINGROOM,
    46: Room.LIVINGROOM,  # lounge
    42: Room.HALLWAY,
    39: Room.ENTRANCE,  # front door
}

# Status codes that mean the same whatever the device type.
ALIVE_CODES = {
    70,  # normal state
    75,  # online
    86,  # power restored
    91,  # re-established
    94,  # restoral: a technical condition is over (never cancels an alarm, see below)
    102,  # test transmission, primary channel
    103,  # test transmission, redundant channel
    112,  # IP connection re-established
    113,  # mobile network re-established
    114,  # POTS re-established
    115,  # primary link re-established
    116,  # redundant link re-established
    124,  # radio test transmission re-established
}
# Battery levels for status codes that carry none (a percentage in ite/stt wins).
BATTERY_LEVELS = {14: 0.0, 16: 10.0, 15: 100.0}  # failure, low (< 15 % fires), OK
# Temperatures for stc 100/101 without a reading (a number in ite/stt wins):
# beyond the catalogue's 28 / 16 degC thresholds.
TEMPERATURES = {100: 30.0, 101: 10.0}

# A device-type alarm is raised only for these status codes, or none at all
# (SS 91100 Table 1, status-code: "When omitted, alarm state shall be assumed"):
# a smoke detector's "maintenance needed" must not become a fire.
ALARM_CODES = {None, 6, 7, 9, 10, 11, 46, 79, 110}

# dty -> event for an alarm (ALARM_CODES) from that device type.
ALARM_BY_DEVICE: dict[int, EventType] = {
    3: EventType.BUTTON_PRESSED,  # personal trigger (the pendant)
    6: EventType.BUTTON_PRESSED,  # personal attack trigger
    7: EventType.BUTTON_PRESSED,  # panic button
    4: EventType.PULLCORD_PULLED,  # fixed trigger: pull cords and wall buttons (VKP 4.14)
    5: EventType.FALL_DETECTED,
    30: EventType.FALL_DETECTED,  # automatic man-down
    23: EventType.SMOKE_DETECTED,
    47: EventType.SMOKE_DETECTED,  # fire alarm system
    25: EventType.HEAT_DETECTED,  # heat detector: a fire alarm, not a room temperature
    26: EventType.CO_DETECTED,  # carbon-monoxide detector
    21: EventType.GAS_DETECTED,  # (natural) gas detector
    33: EventType.WATER_DETECTED,
    34: EventType.WATER_DETECTED,  # bath sensor: the bath overflows
    17: EventType.SEIZURE_DETECTED,
    # Annex A: the activity detector is "also for inverted use as inactivity
    # detection"; its alarm is that no activity was seen. Movement is stc 119.
    10: EventType.INACTIVITY_DETECTED,
    18: EventType.MOTION_DETECTED,
    14: EventType.DOOR_OPENED,
    15: EventType.WANDERING_DETECTED,  # wandering sensor ("used together with location")
    # The local unit's own alarm (stc 9, or none); its manual alarm (10) is the
    # pendant, reported as the unit itself (below).
    0: EventType.UNIT_ALARM,
    1: EventType.UNIT_ALARM,
    2: EventType.UNIT_ALARM,
    45: EventType.UNIT_ALARM,
    48: EventType.UNIT_ALARM,
    51: EventType.SOS_PRESSED,  # tracking device: its SOS (manual or automatic alarm)
}
# Local units, controllers and unknown devices report a pendant press as stc 10.
BUTTON_HOSTS = {0, 1, 2, 45, 48}

# Who may cancel: a deliberate cancel or reset by the resident (stc 19 cancel,
# 92 automatic reset, 93 manual reset) from a trigger the resident holds or
# the unit it belongs to. It cancels only an alert that no one has
# acknowledged yet (trygg.alerts.gates). From any other device type a reset
# says only that the device is back to normal: a smoke detector's reset must
# not cancel a fire alarm before anyone has looked.
CANCEL_CODES = {19, 92, 93}
CANCELLING_DEVICES = {0, 1, 2, 3, 4, 6, 7, 45, 48, 51}

# dty -> {stc -> event} for sensors whose state the status code tells.
BY_DEVICE_AND_STATUS: dict[int, dict[int | None, EventType]] = {
    # A fall pendant's own button (manual alarm) is a button press; cancel/abort
    # within the guard time is the resident saying "I am fine" (the fall rule's
    # own cancel); a reset cancels like a pendant's.
    5: {
        19: EventType.FALL_CANCELLED,
        2: EventType.FALL_CANCELLED,
        92: EventType.ALARM_CANCELLED,
        93: EventType.ALARM_CANCELLED,
        10: EventType.BUTTON_PRESSED,
    },
    11: {  # pill dispenser
        81: EventType.DOSE_MISSED,
        83: EventType.DOSE_TAKEN,
        82: EventType.HEARTBEAT,  # a reminder is routine, not a fault
    },
    12: {  # bed monitor
        3: EventType.BED_VACANT,  # absent
        9: EventType.BED_VACANT,  # its automatic alarm is "out of bed"
        69: EventType.BED_VACANT,  # non-active
        71: EventType.BED_OCCUPIED,
        117: EventType.BED_OCCUPIED,  # lying in bed
        121: EventType.BED_OCCUPIED,  # present
    },
    44: {  # chair monitor
        3: EventType.CHAIR_VACANT,
        9: EventType.CHAIR_VACANT,
        69: EventType.CHAIR_VACANT,
        71: EventType.CHAIR_OCCUPIED,
        121: EventType.CHAIR_OCCUPIED,
    },
    14: {  # door sensor
        76: EventType.DOOR_OPENED,
        77: EventType.DOOR_OPENED,
        21: EventType.DOOR_CLOSED,
        22: EventType.DOOR_CLOSED,
    },
    10: {119: EventType.MOTION_DETECTED, 120: EventType.MOTION_DETECTED},
    18: {119: EventType.MOTION_DETECTED, 120: EventType.MOTION_DETECTED},
    23: {126: EventType.SMOKE_DETECTED},
    # A heat detector's temperature codes are its fire alarm (checked before the
    # room-temperature mapping of stc 100).
    25: {126: EventType.HEAT_DETECTED, 100: EventType.HEAT_DETECTED},
}
BY_DEVICE_AND_STATUS[30] = BY_DEVICE_AND_STATUS[5]  # man-down: same codes as a fall detector
BY_DEVICE_AND_STATUS[13] = BY_DEVICE_AND_STATUS[12]  # mat sensor: same states as a bed monitor

_NUMBER = re.compile(r"-?[0-9]{1,6}(?:[.,][0-9]{1,6})?")
_PERCENT = re.compile(r"([0-9]{1,3})(?:[.,][0-9]+)?\s*%")


@dataclass(frozen=True, slots=True)
class Mapped:
    """The one event an ``<mrq>`` becomes (before registry enrichment).

    ``time`` is ``None`` when the message carries none: the receiver's clock.
    """

    id: str
    type: EventType
    time: datetime | None = None
    value: float | None = None
    room: Room | None = None
    position: tuple[float, float] | None = None


def _number(mrq: Mrq, pattern: re.Pattern[str]) -> float | None:
    for text in (mrq.ite, mrq.stt):
        if text:
            m = pattern.search(text)
            if m:
                return float(m.group(1 if pattern.groups else 0).replace(",", "."))
    return None


def map_mrq(mrq: Mrq) -> Mapped:
    """``Mrq`` -> the event it means, or ``MrqError`` naming the codes.

    A well-formed message trygg has no event for is answered ``snu`` 5, "not
    treated ... try next alarm action" (SS 91100 Table 2), so the unit
    escalates; ``snu`` 3 would tell it that its message was wrong.
    """
    typ: EventType | None = None
    value: float | None = None
    stc, dty = mrq.stc, mrq.dty
    if mrq.mty == PI:
        typ = EventType.HEARTBEAT
    elif mrq.mty == RE:
        # §4.4: the unit aborts its message session (no snu 0 came in time).
        typ = EventType.ALARM_ABORTED
    elif stc in CANCEL_CODES and dty in CANCELLING_DEVICES:
        typ = EventType.ALARM_CANCELLED
    elif dty in BY_DEVICE_AND_STATUS and stc in BY_DEVICE_AND_STATUS[dty]:
        typ = BY_DEVICE_AND_STATUS[dty][stc]
    elif stc in ALIVE_CODES or stc in CANCEL_CODES:
        typ = EventType.HEARTBEAT  # incl. restoral and a sensor's reset: nothing to cancel
    elif stc in BATTERY_LEVELS:
        typ = EventType.BATTERY
        value = _number(mrq, _PERCENT)
        if value is None:
            value = BATTERY_LEVELS[stc]
    elif stc in TEMPERATURES:
        typ = EventType.TEMPERATURE
        value = _number(mrq, _NUMBER)
        if value is None:
            value = TEMPERATURES[stc]
    elif dty == 11 and mrq.mty == ME:
        typ = EventType.DISPENSER_FAULT  # any other message from a dispenser is a fault
    elif stc == 10 and dty in BUTTON_HOSTS:
        typ = EventType.BUTTON_PRESSED  # the pendant, reported as the unit itself
    elif mrq.mty == IN and stc is None:
        # §4.3: an update within the session: a new position, or the unit alive.
        typ = EventType.LOCATION if mrq.position is not None else EventType.HEARTBEAT
    elif dty == 51 and stc is None and mrq.position is not None:
        typ = EventType.LOCATION  # a tracker's position report (its SOS has stc 9/10)
    elif dty in ALARM_BY_DEVICE and stc in ALARM_CODES:
        typ = ALARM_BY_DEVICE[dty]
    elif mrq.position is not None and stc is None:
        typ = EventType.LOCATION
    if typ is None:
        raise MrqError(
            Snu.NOT_TREATED,
            f"not treated: no event for mty {mrq.mty}, dty {code_name(DEVICE_TYPES, dty)}, "
            f"stc {code_name(STATUS_CODES, stc)}",
            mrq.ref,
        )
    event_id = mrq.event_id
    if len(event_id) > 64:
        raise MrqError(
            Snu.WRONG_DATA_CONTENT,
            f"ref of {len(mrq.ref)} characters is too long for an {mrq.mty} message (at most 48)",
            mrq.ref,
        )
    return Mapped(
        id=event_id,
        type=typ,
        time=mrq.time,
        value=value,
        room=ROOMS.get(mrq.lco) if mrq.lco is not None else None,
        position=mrq.position,
    )
