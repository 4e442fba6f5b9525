"""SCAIP ``<mrq>`` XML -> one event in trygg's vocabulary, and the ``<mrs>`` reply. Pure.

SCAIP (SS 91100:2014, CLC/TS 50134-9:2018) is the Nordic social-alarm
protocol: a local unit sends an ``<mrq>`` (message request) with short tags
(``ref``, ``mty``, ``cid``, ``dty``, ``stc``, ``lco``, ``lge`` ...) and the
receiver answers with an ``<mrs>`` carrying the same ``ref`` and a status
number (``snu``). trygg accepts the ``<mrq>`` on a device's ``scaip`` topic
and answers on ``scaip/response`` (docs/ingest.md).

Codes arrive unpadded (``2``, ``02``, ``0002``), so they are parsed as
numbers. The mapping from device type (``dty``) and status code (``stc``) to
an event type is the table in docs/ingest.md; this module is its one
implementation. An ``<mrq>`` becomes at most one event. Messages with the
same ``ref`` are one message session (SS 91100 §4.3/§4.4): the first keeps
``ref`` as its event id, an update (IN) or abort (RE) gets an id of its own
that names the session (``Mrq.event_id``, ``trygg.model.session_of``).

Nothing here raises for bad input: every outcome is an ``MrqOutcome`` whose
``snu`` says what happened and whose ``ste`` is a reason a person can act on.
The XML is parsed with defusedxml, which refuses DTDs, entity expansion and
external references (no "billion laughs", no XXE).
"""

from __future__ import annotations

import hashlib
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from trygg.model import SESSION_SEP, EventType, Room, session_of


class Snu(IntEnum):
    """``<mrs><snu>``: the receiver's status number (SS 91100)."""

    OK = 0
    MESSAGE_TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA_CONTENT = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_TAG_MISSING = 7
    REFERENCE_MISSING = 10
    UNDEFINED_ERROR = 99


# Message types (mty).
ME, RE, IN, PI = "ME", "RE", "IN", "PI"
MESSAGE_TYPES = {ME: "message/alarm", RE: "reset", IN: "information", PI: "heartbeat"}

# Device types (dty), SS 91100:2014 Annex A, table A.1 (0052-0899 are
# allocated for future use, 0900-0999 vendor-specific).
DEVICE_TYPES: dict[int, str] = {
    0: "unknown",
    1: "undefined",
    2: "local unit and controller",
    3: "personal trigger",
    4: "fixed trigger",
    5: "fall detector",
    6: "personal attack trigger",
    7: "panic button",
    8: "duty switch (remote)",
    9: "duty switch (local)",
    10: "activity detector",
    11: "pill dispenser",
    12: "bed monitor",
    13: "mat sensor",
    14: "door sensor",
    15: "wandering sensor",
    16: "enuresis detector",
    17: "epilepsy detector",
    18: "occupancy detector",
    19: "heart-rate monitor",
    20: "environmental monitor",
    21: "gas detector",
    22: "lighting circuit monitor",
    23: "smoke detector",
    24: "heating system monitor",
    25: "heat detector",
    26: "carbon-monoxide detector",
    27: "bogus caller switch",
    28: "intruder detector",
    29: "boundary detector",
    30: "automatic man-down detector",
    31: "system monitor",
    32: "communication-link monitor",
    33: "flood detector",
    34: "bath sensor",
    35: "latch key",
    36: "perimeter",
    37: "sprinkler",
    38: "tamper",
    39: "printer",
    40: "router",
    41: "power supply (DC)",
    42: "electric lock",
    43: "access controller",
    44: "chair monitor",
    45: "controller",
    46: "elevator alarm unit",
    47: "fire alarm system",
    48: "local unit",
    49: "monitoring device",
    50: "radio unit",
    51: "tracking device",
}

# Status codes (stc), SS 91100:2014 Annex C, table C.1 (0128-0899 allocated for
# future use, 0900-0999 vendor-specific).
STATUS_CODES: dict[int, str] = {
    0: "unknown",
    1: "undefined",
    2: "abort",
    3: "absent/away",
    4: "accepted",
    5: "acknowledge",
    6: "activated",
    7: "active",
    8: "added",
    9: "automatic alarm",
    10: "manual alarm",
    11: "alert",
    12: "armed",
    13: "assigned",
    14: "battery failure",
    15: "battery OK",
    16: "battery low",
    17: "busy",
    18: "bypass",
    19: "cancel",
    20: "changed",
    21: "closed",
    22: "closed too long",
    23: "IP connection failure",
    24: "mobile network failure",
    25: "POTS connection failure",
    26: "primary link failure",
    27: "redundant link failure",
    28: "deleted",
    29: "denied",
    30: "disarmed",
    31: "disconnected",
    32: "error code 1",
    33: "error code 2",
    34: "error code 3",
    35: "error code 4",
    36: "error code 5",
    37: "error code 6",
    38: "error code 7",
    39: "error code 8",
    40: "error code 9",
    41: "executed",
    42: "failure",
    43: "frequency drifted",
    44: "frequency drifted to lower level",
    45: "frequency drifted to upper level",
    46: "high level",
    47: "in progress",
    48: "in service (fault rectified)",
    49: "inactive",
    50: "initiated",
    51: "interrupted",
    52: "jammed",
    53: "level 1",
    54: "level 2",
    55: "level 3",
    56: "level 4",
    57: "level 5",
    58: "level 6",
    59: "level 7",
    60: "level 8",
    61: "level 9",
    62: "log",
    63: "loss",
    64: "low level",
    65: "maintenance needed",
    66: "maintenance urgently needed",
    67: "malfunction",
    68: "memory full",
    69: "non-active",
    70: "normal state",
    71: "occupied",
    72: "off",
    73: "offline",
    74: "on",
    75: "online",
    76: "open",
    77: "open too long",
    78: "out of service",
    79: "overflow",
    80: "pending",
    81: "pill not taken",
    82: "pill reminder",
    83: "pill taken",
    84: "planned",
    85: "power failure",
    86: "power restored",
    87: "presence, planned",
    88: "presence upon alarm",
    89: "privacy switch operated",
    90: "pulse",
    91: "re-established",
    92: "automatic reset",
    93: "manual reset",
    94: "restoral",
    95: "RF interference",
    96: "started",
    97: "stopped",
    98: "substituted",
    99: "succeeded",
    100: "temperature high",
    101: "temperature low",
    102: "test transmission (primary)",
    103: "test transmission (redundant)",
    104: "time-out",
    105: "trouble",
    106: "trespass",
    107: "unauthorized access",
    108: "unbypass",
    109: "verified",
    110: "assistance",
    111: "check-out (intervention complete)",
    112: "IP connection re-established",
    113: "mobile network re-established",
    114: "POTS connection re-established",
    115: "primary link re-established",
    116: "redundant link re-established",
    117: "lying in bed",
    118: "locked",
    119: "movement",
    120: "occupancy",
    121: "present",
    122: "radio interference",
    123: "radio test transmission missing",
    124: "radio test transmission re-established",
    125: "tamper alarm",
    126: "temperature rate of rise",
    127: "unlocked",
}

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

# --- the mapping ---------------------------------------------------------------
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

# The protocol version trygg implements (SS 91100:2014 / CLC/TS 50134-9:2018).
VERSION = "01.00"

_REF = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# ASCII digits only: int() would accept other scripts' digits too.
_CODE = re.compile(r"\s*[0-9]{1,4}\s*")
_NUMBER = re.compile(r"-?[0-9]{1,6}(?:[.,][0-9]{1,6})?")
_PERCENT = re.compile(r"([0-9]{1,3})(?:[.,][0-9]+)?\s*%")


@dataclass(frozen=True, slots=True)
class Mrq:
    """The fields of an ``<mrq>`` that trygg reads, codes parsed as numbers."""

    ref: str
    mty: str
    cid: str
    dty: int
    stc: int | None = None
    lco: int | None = None
    ite: str | None = None
    stt: str | None = None
    position: tuple[float, float] | None = None
    time: datetime | None = None
    ver: str | None = None
    ame: int = 0  # additional messages after this one ("more follows")
    ico: int | None = None
    digest: str = ""  # of the fields read: tells a true repeat from an update

    @property
    def event_id(self) -> str:
        """The event id: unique per message, linked to its session by the ``ref``.

        SS 91100 §4.3/§4.4: an information update (IN) and an abort (RE)
        carry the ``ref`` of the session's first message, so ``ref`` alone cannot
        be an event id. A heartbeat keeps ``ref`` as its id; every other message
        is ``ref~<mty><ame>~<digest>``, the digest of the fields read, so that a
        true repeat (a re-send after a lost reply) has the same id and is
        dropped, and an update with new content is a new event. The alarm (ME)
        too: a unit that reuses a ``ref`` for another alarm (a counter reset
        by a restart) must not have its fire alarm dropped as a repeat of last
        week's button press. ``~`` is not a character of a ``ref``, so
        ``session_ref`` recovers the session.
        """
        if self.mty == PI and self.ame == 0:
            return self.ref
        return f"{self.ref}{SESSION_SEP}{self.mty}{self.ame or ''}{SESSION_SEP}{self.digest}"


session_ref = session_of  # the SCAIP session (``ref``) of an event id


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


@dataclass(frozen=True, slots=True)
class MrqOutcome:
    """What became of an ``<mrq>``: an event (``snu`` 0) or why not, and the reply."""

    ref: str
    snu: Snu
    ste: str
    event: Mapped | None = None
    cve: str | None = None

    def reply(self) -> bytes:
        return build_mrs(self.ref, self.snu, self.ste, self.cve)


class MrqError(ValueError):
    def __init__(self, snu: Snu, ste: str, ref: str = "", cve: str | None = None) -> None:
        super().__init__(ste)
        self.snu, self.ste, self.ref, self.cve = snu, ste, ref, cve


def build_mrs(ref: str, snu: int, ste: str = "", cve: str | None = None) -> bytes:
    """``<mrs><ref/><snu/><ste/><cve/></mrs>`` as UTF-8 bytes, text escaped, ste at most
    128 printable ASCII characters (SS 91100 Table 2: US-ASCII 32-126)."""
    root = ET.Element("mrs")
    ET.SubElement(root, "ref").text = ref
    ET.SubElement(root, "snu").text = str(int(snu))
    if ste:
        ET.SubElement(root, "ste").text = _printable(ste)[:128]
    if cve:
        ET.SubElement(root, "cve").text = cve
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def peek_ref(payload: bytes) -> str:
    """The well-formed ``ref`` of an ``<mrq>``, or ''; never raises. For replies
    to messages trygg does not parse further (an unknown device)."""
    try:
        return parse_mrq(payload).ref
    except MrqError as exc:
        return exc.ref


def parse_mrs(payload: bytes) -> tuple[str, int, str]:
    """An ``<mrs>`` -> (ref, snu, ste); for tests and tools. Raises ValueError."""
    try:
        root = safe_fromstring(payload)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not an mrs: {exc}") from None
    if _local(root.tag) != "mrs":
        raise ValueError(f"not an mrs: root element <{root.tag}>")
    fields = _children(root)
    snu = fields.get("snu")
    if snu is None or not _CODE.fullmatch(snu):
        raise ValueError("mrs without a numeric snu")
    return fields.get("ref", ""), int(snu), fields.get("ste", "")


def _printable(text: str) -> str:
    # ste is US-ASCII 32-126 (SS 91100 Table 2); XML 1.0 cannot carry most
    # control characters either.
    return "".join(ch if " " <= ch <= "~" else "?" if ch.isprintable() else " " for ch in text)


def _local(tag: object) -> str:
    """The tag without a namespace (``{urn:x}mrq`` -> ``mrq``); comments etc. -> ''."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element) -> dict[str, str]:
    """First occurrence of each child tag -> its stripped text ('' when empty)."""
    out: dict[str, str] = {}
    for child in el:
        name = _local(child.tag)
        if name and name not in out:
            out[name] = (child.text or "").strip()
    return out


def _code(fields: dict[str, str], tag: str, ref: str) -> int | None:
    raw = fields.get(tag)
    if raw is None or raw == "":
        return None
    if not _CODE.fullmatch(raw):
        raise MrqError(
            Snu.WRONG_DATA_CONTENT, f"{tag} {_show(raw)} is not a code of up to 4 digits", ref
        )
    return int(raw)


def _show(raw: str) -> str:
    return repr(raw[:24] + ("..." if len(raw) > 24 else ""))


def _parse_geo(lge: ET.Element, ref: str) -> tuple[tuple[float, float] | None, datetime | None]:
    fields = _children(lge)
    pos: tuple[float, float] | None = None
    geo = fields.get("geo")
    if geo:
        parts = geo.replace(";", ",").split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            lat, lon = float(parts[0]), float(parts[1])
        except ValueError:
            raise MrqError(
                Snu.WRONG_DATA_CONTENT, f"lge/geo {_show(geo)} is not 'lat,lon'", ref
            ) from None
        pos = (lat, lon)
    elif fields.get("gga"):
        pos = _parse_gga(fields["gga"], ref)
    if pos is not None:
        lat, lon = pos
        if not (
            math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180
        ):
            raise MrqError(
                Snu.WRONG_DATA_CONTENT, f"lge position {lat:g},{lon:g} is not on Earth", ref
            )
    when: datetime | None = None
    tim = fields.get("tim")
    if tim:
        try:
            when = datetime.fromisoformat(tim)
        except ValueError:
            raise MrqError(
                Snu.WRONG_DATA_CONTENT, f"lge/tim {_show(tim)} is not an ISO 8601 time", ref
            ) from None
        if when.tzinfo is None or when.utcoffset() is None:
            raise MrqError(Snu.WRONG_DATA_CONTENT, f"lge/tim {_show(tim)} has no UTC offset", ref)
    return pos, when


def _parse_gga(gga: str, ref: str) -> tuple[float, float]:
    """NMEA ``$GPGGA,hhmmss,ddmm.mmmm,N,dddmm.mmmm,E,fix,...`` -> (lat, lon)."""
    parts = gga.split(",")
    try:
        if len(parts) < 7 or not parts[0].endswith("GGA") or parts[6] in ("", "0"):
            raise ValueError
        lat = int(parts[2][:2]) + float(parts[2][2:]) / 60
        lon = int(parts[4][:3]) + float(parts[4][3:]) / 60
        if parts[3] not in ("N", "S") or parts[5] not in ("E", "W"):
            raise ValueError
    except (ValueError, IndexError):
        raise MrqError(
            Snu.WRONG_DATA_CONTENT, "lge/gga is not an NMEA GGA sentence with a fix", ref
        ) from None
    return (-lat if parts[3] == "S" else lat, -lon if parts[5] == "W" else lon)


def parse_mrq(payload: bytes, max_bytes: int = 64 * 1024) -> Mrq:
    """Bytes -> ``Mrq``, or ``MrqError`` with the status number and reason."""
    if len(payload) > max_bytes:
        raise MrqError(
            Snu.MESSAGE_TOO_LONG,
            f"message of {len(payload)} bytes exceeds the limit of {max_bytes}",
        )
    try:
        root = safe_fromstring(payload, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MrqError(
            Snu.INVALID_FORMAT, f"XML refused: {type(exc).__name__} (no DTDs or entities)"
        ) from None
    except (ET.ParseError, ValueError, LookupError, RecursionError) as exc:
        # ParseError: not well-formed; LookupError: an unknown declared encoding.
        raise MrqError(Snu.INVALID_FORMAT, f"not XML: {str(exc)[:100]}") from None
    fields = _children(root)
    ref = fields.get("ref", "")
    ref_echo = ref if _REF.fullmatch(ref) else ""  # only a well-formed ref is echoed
    if _local(root.tag) != "mrq":
        raise MrqError(
            Snu.INVALID_FORMAT,
            f"expected an <mrq> element, got <{_local(root.tag)[:32]}>",
            ref_echo,
        )
    if not ref:
        # SS 91100 Table 2: "10" = reference missing.
        raise MrqError(Snu.REFERENCE_MISSING, "reference missing: <mrq> has no ref")
    missing = [t for t in ("cid", "dty") if not fields.get(t)]
    if missing:
        raise MrqError(
            Snu.MANDATORY_TAG_MISSING, f"mandatory tag missing: {', '.join(missing)}", ref_echo
        )
    if not ref_echo:
        raise MrqError(
            Snu.WRONG_DATA_CONTENT, f"ref {_show(ref)} is not 1-64 letters, digits or ._:-"
        )
    mty = fields.get("mty", "").upper() or ME  # alarms are often sent without mty
    if mty not in MESSAGE_TYPES:
        raise MrqError(Snu.WRONG_DATA_CONTENT, f"mty {_show(mty)} is not ME, RE, IN or PI", ref)
    cve: str | None = None
    ver = fields.get("ver") or None
    if ver is not None:
        if not re.fullmatch(r"[0-9]{2}\.[0-9]{2}", ver):
            raise MrqError(Snu.WRONG_DATA_CONTENT, f"ver {_show(ver)} is not NN.NN", ref)
        if ver != VERSION:
            # Table 2, cve: the version to use, equal to or lower than the request's.
            cve = VERSION if ver > VERSION else None
            if ver < VERSION:
                raise MrqError(
                    Snu.WRONG_DATA_CONTENT, f"ver {ver} is not supported (trygg: {VERSION})", ref
                )
    cid = fields["cid"]
    if not re.fullmatch(r"[0-9]{1,32}", cid):
        raise MrqError(Snu.WRONG_DATA_CONTENT, f"cid {_show(cid)} is not 1-32 digits", ref, cve)
    dty = _code(fields, "dty", ref)
    assert dty is not None  # checked as mandatory above
    stc = _code(fields, "stc", ref)
    lco = _code(fields, "lco", ref)
    ico = _code(fields, "ico", ref)
    ame_raw = fields.get("ame") or "0"
    if not re.fullmatch(r"[0-9]{1,4}", ame_raw):
        raise MrqError(Snu.WRONG_DATA_CONTENT, f"ame {_show(ame_raw)} is not 0-9999", ref, cve)
    position: tuple[float, float] | None = None
    when: datetime | None = None
    for child in root:
        if _local(child.tag) == "lge":
            position, when = _parse_geo(child, ref)
            break
    # The digest covers every field's text (not the bytes: a re-send may differ
    # in whitespace or in the order of the tags, which xs:all allows).
    canon = "\x1f".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "lge")
    for child in root:
        if _local(child.tag) == "lge":
            sub = _children(child)
            canon += "\x1e" + "\x1f".join(f"{k}={sub[k]}" for k in sorted(sub))
            break
    digest = hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return Mrq(
        ref=ref,
        mty=mty,
        cid=cid,
        dty=dty,
        stc=stc,
        lco=lco,
        ite=fields.get("ite") or None,
        stt=fields.get("stt") or None,
        position=position,
        time=when,
        ver=ver,
        ame=int(ame_raw),
        ico=ico,
        digest=digest,
    )


def _name(table: dict[int, str], code: int | None) -> str:
    if code is None:
        return "none"
    name = table.get(code)
    if name is None:
        # Annex A-D: 0900-0999 vendor-specific, the rest of the range not yet used.
        name = "vendor-specific" if 900 <= code <= 999 else "unspecified in SS 91100:2014"
    return f"{code} ({name})"


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
            f"not treated: no event for mty {mrq.mty}, dty {_name(DEVICE_TYPES, dty)}, "
            f"stc {_name(STATUS_CODES, stc)}",
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


def _cve(mrq: Mrq) -> str | None:
    """``cve`` for a request of a newer version than trygg's (Table 2: "equal or lower")."""
    return VERSION if mrq.ver is not None and mrq.ver > VERSION else None


def handle_mrq(payload: bytes, max_bytes: int = 64 * 1024) -> MrqOutcome:
    """Bytes -> outcome with the event (snu 0) or the reason; never raises for bad input."""
    try:
        mrq = parse_mrq(payload, max_bytes)
    except MrqError as exc:
        return MrqOutcome(exc.ref, exc.snu, exc.ste, cve=exc.cve)
    try:
        mapped = map_mrq(mrq)
    except MrqError as exc:
        return MrqOutcome(exc.ref, exc.snu, exc.ste, cve=_cve(mrq))
    return MrqOutcome(mrq.ref, Snu.OK, "OK", mapped, cve=_cve(mrq))
