"""Interoperability: SCAIP messages written by an independent implementation.

The ``<mrq>`` messages here are not built by trygg's code or by hand: they are
instances of ``tests/scaip_model``, dataclasses that xsdata generated from the
SCAIP XML schema of SS 91100:2014 Annex F (README there), serialized with
xsdata's ``XmlSerializer`` as the public gateway caruhome/scaip-gateway sends
them (``SerializerConfig(pretty_print=False)``: an XML declaration, no
whitespace, no namespace, 4-digit codes). Every reply is parsed with the same
model's ``Mrs`` and checked against the schema's restrictions.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from xsdata.formats.dataclass.context import XmlContext
from xsdata.formats.dataclass.parsers import XmlParser
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig

from tests.scaip_model import Mrq, Mrs
from tests.test_scaip_sessions import Pipeline
from trygg.ingest.scaip_mrq import Snu
from trygg.model import EventType

SERIALIZER = XmlSerializer(config=SerializerConfig(pretty_print=False))
PARSER = XmlParser(context=XmlContext())
NAMESPACE = "http://www.hi.se/2012/XScaipXML"  # the schema's targetNamespace
CID = "10149471"


def geo(pos: str, tim: str | None = None) -> Mrq.Lge:
    content: list[object] = [Mrq.Lge.Geo(value=pos)]
    if tim:
        content.append(Mrq.Lge.Tim(value=tim))
    return Mrq.Lge(content=content)


def gga(sentence: str) -> Mrq.Lge:
    return Mrq.Lge(content=[Mrq.Lge.Gga(value=sentence)])


def request(ref: str = "A1", **fields: Any) -> Mrq:
    return Mrq(ref=ref, cid=fields.pop("cid", CID), **fields)


def _check(obj: Any) -> None:
    """``obj``'s text fields against the schema's restrictions (pattern, length)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if not isinstance(v, str):
            continue
        meta = f.metadata
        if "pattern" in meta:
            assert re.fullmatch(meta["pattern"], v), (f.name, v, meta["pattern"])
        if "min_length" in meta:
            assert len(v) >= meta["min_length"], (f.name, v)
        if "max_length" in meta:
            assert len(v) <= meta["max_length"], (f.name, v)


def wire(m: Mrq, namespace: bool = False) -> bytes:
    """The request as the gateway sends it (checked against the schema first)."""
    if m.ref and m.cid:  # the two malformed cases of CASES leave one of them empty
        _check(m)
    xml = SERIALIZER.render(m)
    if namespace:
        xml = xml.replace("<mrq>", f'<mrq xmlns="{NAMESPACE}">', 1)
    return xml.encode()


def reply(p: Pipeline, m: Mrq, device: str = "lu-1", namespace: bool = False) -> Mrs:
    """Send ``m``; the reply parsed by the independent model and checked against it."""
    mrs = PARSER.from_bytes(p.send_raw(wire(m, namespace), device), Mrs)
    if mrs.ref:
        _check(mrs)
    else:
        _check(dataclasses.replace(mrs, ref="x"))  # an empty ref: the one case it cannot be read
    assert mrs.snu is not None and re.fullmatch(r"[0-9]{1,3}", mrs.snu)
    assert mrs.ste is None or all(" " <= c <= "~" for c in mrs.ste), "ste: US-ASCII 32-126"
    return mrs


# One message each: (what, request, snu, event type, rule of the alert raised).
CASES: list[tuple[str, Mrq, int, EventType | None, str | None]] = [
    (
        "pendant, manual alarm",
        request(dty="0003", stc="0010"),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    ("pendant, no stc (alarm state)", request(dty="0003"), 0, EventType.BUTTON_PRESSED, "button"),
    (
        "personal attack pendant",
        request(dty="0006", stc="0010"),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    ("panic button", request(dty="0007", stc="0010"), 0, EventType.BUTTON_PRESSED, "button"),
    (
        "fixed trigger",
        request(dty="0004", stc="0010", lco="011"),
        0,
        EventType.PULLCORD_PULLED,
        "pullcord",
    ),
    ("fall detector", request(dty="0005", stc="0009"), 0, EventType.FALL_DETECTED, "fall"),
    ("man-down detector", request(dty="0030", stc="0009"), 0, EventType.FALL_DETECTED, "fall"),
    (
        "fall detector's own button",
        request(dty="0005", stc="0010"),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    (
        "smoke detector",
        request(dty="0023", stc="0009", lco="021"),
        0,
        EventType.SMOKE_DETECTED,
        "fire",
    ),
    ("fire alarm system", request(dty="0047", stc="0009"), 0, EventType.SMOKE_DETECTED, "fire"),
    ("heat detector alarm", request(dty="0025", stc="0009"), 0, EventType.HEAT_DETECTED, "heat"),
    (
        "heat detector, temperature high",
        request(dty="0025", stc="0100"),
        0,
        EventType.HEAT_DETECTED,
        "heat",
    ),
    (
        "heat detector, rate of rise",
        request(dty="0025", stc="0126"),
        0,
        EventType.HEAT_DETECTED,
        "heat",
    ),
    (
        "carbon monoxide",
        request(dty="0026", stc="0009"),
        0,
        EventType.CO_DETECTED,
        "carbon-monoxide",
    ),
    ("carbon monoxide, no stc", request(dty="0026"), 0, EventType.CO_DETECTED, "carbon-monoxide"),
    ("gas detector", request(dty="0021", stc="0009"), 0, EventType.GAS_DETECTED, "gas"),
    ("gas detector, no stc", request(dty="0021"), 0, EventType.GAS_DETECTED, "gas"),
    ("flood detector", request(dty="0033", stc="0009"), 0, EventType.WATER_DETECTED, "water"),
    ("bath sensor overflow", request(dty="0034", stc="0079"), 0, EventType.WATER_DETECTED, "water"),
    (
        "epilepsy detector",
        request(dty="0017", stc="0009"),
        0,
        EventType.SEIZURE_DETECTED,
        "seizure",
    ),
    (
        "wandering sensor",
        request(dty="0015", stc="0009"),
        0,
        EventType.WANDERING_DETECTED,
        "wandering",
    ),
    (
        "wandering sensor with a geo-fence position",
        request(dty="0015", stc="0009", lco="019", lge=geo("59.9139,10.7522")),
        0,
        EventType.WANDERING_DETECTED,
        "wandering",
    ),
    (
        "local unit, automatic alarm",
        request(dty="0048", stc="0009"),
        0,
        EventType.UNIT_ALARM,
        "local-unit-alarm",
    ),
    ("local unit, no stc", request(dty="0048"), 0, EventType.UNIT_ALARM, "local-unit-alarm"),
    (
        "local unit & controller",
        request(dty="0002", stc="0009"),
        0,
        EventType.UNIT_ALARM,
        "local-unit-alarm",
    ),
    ("controller, no stc", request(dty="0045"), 0, EventType.UNIT_ALARM, "local-unit-alarm"),
    (
        "unknown device type",
        request(dty="0000", stc="0009"),
        0,
        EventType.UNIT_ALARM,
        "local-unit-alarm",
    ),
    (
        "local unit, manual alarm",
        request(dty="0048", stc="0010"),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    (
        "tracker SOS with GGA",
        request(
            dty="0051",
            stc="0010",
            lco="035",
            lge=gga("$GPGGA,092750.000,5954.8340,N,01045.1320,E,1,8,1.03,61.7,M,55.2,M,,*76"),
        ),
        0,
        EventType.SOS_PRESSED,
        "tracker-sos",
    ),
    (
        "tracker automatic alarm with geo",
        request(dty="0051", stc="0009", lco="034", lge=geo("59.9139,10.7522")),
        0,
        EventType.SOS_PRESSED,
        "tracker-sos",
    ),
    (
        "activity detector alarm (inactivity)",
        request(dty="0010", stc="0009"),
        0,
        EventType.INACTIVITY_DETECTED,
        "inactivity-alarm",
    ),
    (
        "activity detector, movement",
        request(dty="0010", stc="0119"),
        0,
        EventType.MOTION_DETECTED,
        None,
    ),
    ("occupancy detector", request(dty="0018", stc="0120"), 0, EventType.MOTION_DETECTED, None),
    ("bed monitor, absent", request(dty="0012", stc="0003"), 0, EventType.BED_VACANT, None),
    ("bed monitor, lying in bed", request(dty="0012", stc="0117"), 0, EventType.BED_OCCUPIED, None),
    ("chair monitor, occupied", request(dty="0044", stc="0071"), 0, EventType.CHAIR_OCCUPIED, None),
    ("door open", request(dty="0014", stc="0076", lco="039"), 0, EventType.DOOR_OPENED, None),
    ("door closed", request(dty="0014", stc="0021"), 0, EventType.DOOR_CLOSED, None),
    ("pill not taken", request(dty="0011", stc="0081"), 0, EventType.DOSE_MISSED, "dose-missed"),
    ("pill taken", request(dty="0011", stc="0083"), 0, EventType.DOSE_TAKEN, None),
    (
        "dispenser malfunction",
        request(dty="0011", stc="0067"),
        0,
        EventType.DISPENSER_FAULT,
        "dispenser-fault",
    ),
    ("battery low", request(dty="0003", stc="0016"), 0, EventType.BATTERY, "battery-low"),
    ("battery OK", request(dty="0003", stc="0015"), 0, EventType.BATTERY, None),
    ("heartbeat", request(mty="PI", dty="0002"), 0, EventType.HEARTBEAT, None),
    ("heartbeat, adjustable", request(mty="PI", hbo="1", dty="0048"), 0, EventType.HEARTBEAT, None),
    ("test transmission", request(dty="0002", stc="0102"), 0, EventType.HEARTBEAT, None),
    ("restoral", request(dty="0002", stc="0094"), 0, EventType.HEARTBEAT, None),
    ("power restored", request(dty="0002", stc="0086"), 0, EventType.HEARTBEAT, None),
    (
        "room temperature low",
        request(dty="0020", stc="0101", stt="12,5 C"),
        0,
        EventType.TEMPERATURE,
        None,
    ),
    ("pendant cancel", request(dty="0003", stc="0019"), 0, EventType.ALARM_CANCELLED, None),
    ("reset of a session", request(mty="RE", dty="0003"), 0, EventType.ALARM_ABORTED, None),
    (
        "every optional tag",
        request(
            ver="01.00",
            sco="1",
            cha="0",
            mty="ME",
            hbo="0",
            dty="0003",
            did="P-17",
            dco="002",
            dte="Pendant",
            crd="gsm:+4799999999",
            stc="0010",
            stt="Alarm",
            pri="9",
            lco="012",
            lva="1",
            lte="Bedroom",
            ico="090",
            ite="pressed twice",
            ame="0",
        ),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    (
        "newer protocol version",
        request(ver="02.00", dty="0003", stc="0010"),
        0,
        EventType.BUTTON_PRESSED,
        "button",
    ),
    ("smoke detector maintenance", request(dty="0023", stc="0065"), Snu.NOT_TREATED, None, None),
    ("tamper alarm", request(dty="0002", stc="0125"), Snu.NOT_TREATED, None, None),
    ("power failure", request(dty="0002", stc="0085"), Snu.NOT_TREATED, None, None),
    ("vendor-specific status code", request(dty="0003", stc="0950"), Snu.NOT_TREATED, None, None),
    ("vendor-specific device type", request(dty="0901", stc="0009"), Snu.NOT_TREATED, None, None),
    ("empty ref", request(ref="", dty="0003"), Snu.REFERENCE_MISSING, None, None),
    ("empty cid", request(cid="", dty="0003"), Snu.MANDATORY_TAG_MISSING, None, None),
]


def test_at_least_54_messages() -> None:
    assert len(CASES) >= 54


@pytest.mark.parametrize("namespace", [False, True], ids=["as-the-gateway-sends", "xsd-namespace"])
@pytest.mark.parametrize(("what", "m", "snu", "event", "rule"), CASES, ids=[c[0] for c in CASES])
def test_message(
    what: str, m: Mrq, snu: int, event: EventType | None, rule: str | None, namespace: bool
) -> None:
    p = Pipeline()
    mrs = reply(p, m, namespace=namespace)
    assert int(mrs.snu or "-1") == snu, mrs.ste
    assert mrs.ref == m.ref, "the ref is echoed whenever it can be read"
    assert [e.type for e in p.stored] == ([event] if event else [])
    assert p.open_rules() == ([rule] if rule else [])
    if m.ver == "02.00":
        assert mrs.cve == "01.00"
    else:
        assert mrs.cve is None


def test_unknown_device_gets_snu_5_with_the_ref() -> None:
    mrs = reply(Pipeline(), request("U1", dty="0003", stc="0010"), device="nobody")
    assert (mrs.ref, mrs.snu) == ("U1", "5")


def test_session_me_in_re() -> None:
    p = Pipeline()
    assert reply(p, request("S1", dty="0051", stc="0010", lge=geo("59.91,10.75"))).snu == "0"
    update = request("S1", mty="IN", dty="0051", lge=geo("59.92,10.76", "2026-05-04T12:00:05+02"))
    assert reply(p, update).snu == "0"
    [alert] = p.gates.open_alerts()
    assert alert.rule == "tracker-sos" and alert.position == pytest.approx((59.92, 10.76))
    assert reply(p, request("S1", mty="RE", dty="0051")).snu == "0"
    assert len(p.stored) == 3 and p.gates.open_alerts() == []
    [closed] = p.alerts()
    assert closed.cancel_reason is not None and closed.cancel_reason.value == "aborted_by_unit"


def test_resend_after_a_lost_reply() -> None:
    p = Pipeline()
    m = request("R1", dty="0023", stc="0009")
    first, again = reply(p, m), reply(p, m)
    assert first == again and first.snu == "0"
    assert len(p.stored) == 1 and len(p.alerts()) == 1
