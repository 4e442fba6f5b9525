"""SCAIP's ``<mrq>`` (message request) parsed: bytes -> ``Mrq``, or why not. Pure.

An ``<mrq>`` carries short tags (``ref``, ``mty``, ``cid``, ``dty``, ``stc``,
``lco``, ``lge`` ...). Codes arrive unpadded (``2``, ``02``, ``0002``), so they
are parsed as numbers. A message that cannot be read raises ``MrqError`` with
the status number (``Snu``) and a reason a person can act on, for the reply
(``trygg.ingest.scaip``).

Messages with the same ``ref`` are one message session (SS 91100 §4.3/§4.4):
the first keeps ``ref`` as its event id, an update (IN) or abort (RE) gets an
id of its own that names the session (``Mrq.event_id``,
``trygg.model.session_of``).

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

from trygg.model import SESSION_SEP, session_of


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

# The protocol version trygg implements (SS 91100:2014 / CLC/TS 50134-9:2018).
VERSION = "01.00"

_REF = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# ASCII digits only: int() would accept other scripts' digits too.
CODE = re.compile(r"\s*[0-9]{1,4}\s*")


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


class MrqError(ValueError):
    def __init__(self, snu: Snu, ste: str, ref: str = "", cve: str | None = None) -> None:
        super().__init__(ste)
        self.snu, self.ste, self.ref, self.cve = snu, ste, ref, cve


def local_name(tag: object) -> str:
    """The tag without a namespace (``{urn:x}mrq`` -> ``mrq``); comments etc. -> ''."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def child_texts(el: ET.Element) -> dict[str, str]:
    """First occurrence of each child tag -> its stripped text ('' when empty)."""
    out: dict[str, str] = {}
    for child in el:
        name = local_name(child.tag)
        if name and name not in out:
            out[name] = (child.text or "").strip()
    return out


def _code(fields: dict[str, str], tag: str, ref: str) -> int | None:
    raw = fields.get(tag)
    if raw is None or raw == "":
        return None
    if not CODE.fullmatch(raw):
        raise MrqError(
            Snu.WRONG_DATA_CONTENT, f"{tag} {_show(raw)} is not a code of up to 4 digits", ref
        )
    return int(raw)


def _show(raw: str) -> str:
    return repr(raw[:24] + ("..." if len(raw) > 24 else ""))


def _parse_geo(lge: ET.Element, ref: str) -> tuple[tuple[float, float] | None, datetime | None]:
    fields = child_texts(lge)
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
    fields = child_texts(root)
    ref = fields.get("ref", "")
    ref_echo = ref if _REF.fullmatch(ref) else ""  # only a well-formed ref is echoed
    if local_name(root.tag) != "mrq":
        raise MrqError(
            Snu.INVALID_FORMAT,
            f"expected an <mrq> element, got <{local_name(root.tag)[:32]}>",
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
        if local_name(child.tag) == "lge":
            position, when = _parse_geo(child, ref)
            break
    # The digest covers every field's text (not the bytes: a re-send may differ
    # in whitespace or in the order of the tags, which xs:all allows).
    canon = "\x1f".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "lge")
    for child in root:
        if local_name(child.tag) == "lge":
            sub = child_texts(child)
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
