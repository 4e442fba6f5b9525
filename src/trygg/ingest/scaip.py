"""SCAIP ``<mrq>`` XML -> one event in trygg's vocabulary, and the ``<mrs>`` reply. Pure.

SCAIP (SS 91100:2014, CLC/TS 50134-9:2018) is the Nordic social-alarm
protocol: a local unit sends an ``<mrq>`` (message request) with short tags
(``ref``, ``mty``, ``cid``, ``dty``, ``stc``, ``lco``, ``lge`` ...) and the
receiver answers with an ``<mrs>`` carrying the same ``ref`` and a status
number (``snu``). trygg accepts the ``<mrq>`` on a device's ``scaip`` topic
and answers on ``scaip/response`` (docs/ingest.md).

The message is read in ``trygg.ingest.scaip_mrq`` (its code tables in
``trygg.ingest.scaip_codes``) and mapped to an event in
``trygg.ingest.scaip_mapping``; this module turns either outcome into the
reply, and holds the ``<mrs>`` format.

Nothing here raises for bad input: every outcome is an ``MrqOutcome`` whose
``snu`` says what happened and whose ``ste`` is a reason a person can act on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from trygg.ingest.scaip_mapping import Mapped, map_mrq
from trygg.ingest.scaip_mrq import (
    CODE,
    VERSION,
    Mrq,
    MrqError,
    Snu,
    child_texts,
    local_name,
    parse_mrq,
)


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
    if local_name(root.tag) != "mrs":
        raise ValueError(f"not an mrs: root element <{root.tag}>")
    fields = child_texts(root)
    snu = fields.get("snu")
    if snu is None or not CODE.fullmatch(snu):
        raise ValueError("mrs without a numeric snu")
    return fields.get("ref", ""), int(snu), fields.get("ste", "")


def _printable(text: str) -> str:
    # ste is US-ASCII 32-126 (SS 91100 Table 2); XML 1.0 cannot carry most
    # control characters either.
    return "".join(ch if " " <= ch <= "~" else "?" if ch.isprintable() else " " for ch in text)


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
