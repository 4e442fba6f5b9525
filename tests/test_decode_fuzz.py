"""Property: no input crashes the decoder, and every input is accounted for.

Arbitrary bytes, JSON of every shape, XML-ish text and well-formed ``<mrq>``
with random fields, on both channels and on random topics. Whatever comes
in, ``Decoder.decode`` returns valid events and/or dead letters with a
reason; a SCAIP message always gets an ``<mrs>`` with a valid status number.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trygg.ingest.decode import Decoded, DecodeLimits, Decoder
from trygg.ingest.scaip import parse_mrs
from trygg.ingest.scaip_mrq import Snu, session_ref
from trygg.model import VALUE_RANGES, EventType, storable
from trygg.registry import parse_registry

NOW = datetime(2026, 3, 29, 1, 50, tzinfo=UTC)
SITE = "oslo"
REG = parse_registry(
    {
        "residents": [{"id": "r-1", "team": "a"}],
        "devices": [
            {"id": "dev-1", "resident": "r-1", "kind": "button", "room": "bedroom"},
            {"id": "dev-2", "resident": "r-1", "kind": "thermometer"},
        ],
    }
)
DECODER = Decoder(SITE, REG.device_by_id(), DecodeLimits(max_payload_bytes=16 * 1024))
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

devices = st.sampled_from(["dev-1", "dev-2", "nobody", ""]) | st.text(min_size=1, max_size=8)
channels = st.sampled_from(["events", "scaip"])
topics = st.one_of(
    st.builds(lambda d, c: f"trygg/{SITE}/devices/{d}/{c}", devices, channels),
    st.builds(lambda d: f"trygg/{SITE}/devices/{d}/scaip", st.sampled_from(["dev-1", "dev-2"])),
    st.text(max_size=60),
    st.sampled_from(["trygg/bergen/devices/dev-1/events", f"trygg/{SITE}/devices/dev-1"]),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat()) | st.sampled_from(
    [NOW.isoformat(), "2026-03-29T01:50:00", "yesterday", "2026-03-29T03:49:00+02:00"]
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=70) | json_values,
        "type": st.sampled_from([t.value for t in EventType]) | json_values,
        "time": times | json_values,
        "value": st.floats() | st.integers() | json_values,
        "room": st.sampled_from(["bedroom", "attic"]) | json_values,
        "position": st.fixed_dictionaries({"lat": st.floats(), "lon": st.floats()}) | json_values,
        "extra": json_values,
    },
)
json_docs = st.one_of(json_values, event_like, st.lists(event_like | json_values, max_size=8))
json_bytes = json_docs.map(lambda d: json.dumps(d).encode())

codes = st.one_of(
    st.integers(0, 130).map(str),
    st.integers(0, 130).map(lambda n: f"{n:04d}"),
    st.text(max_size=6),
)
tag_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="<&"), max_size=30
)


def _lge(geo: str | None, tim: str | None, gga: str | None) -> str:
    parts = [f"<{k}>{v}</{k}>" for k, v in (("geo", geo), ("tim", tim), ("gga", gga)) if v]
    return "".join(parts)


mrq_fields = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.from_regex(r"[A-Za-z0-9]{1,16}", fullmatch=True) | tag_text,
        "ver": st.just("01.00"),
        "mty": st.sampled_from(["ME", "RE", "IN", "PI", "pi", "XX", ""]),
        "cid": st.from_regex(r"[0-9]{1,16}", fullmatch=True) | tag_text,
        "dty": codes,
        "did": tag_text,
        "stc": codes,
        "stt": tag_text,
        "pri": codes,
        "lco": codes,
        "lte": tag_text,
        "ite": tag_text,
        "lge": st.builds(
            _lge,
            st.none()
            | st.builds(lambda a, b: f"{a},{b}", st.floats(-100, 100), st.floats(-200, 200))
            | tag_text,
            st.none() | times | tag_text,
            st.none() | tag_text,
        ),
    },
)
mrq_bytes = mrq_fields.map(
    lambda f: ("<mrq>" + "".join(f"<{k}>{v}</{k}>" for k, v in f.items()) + "</mrq>").encode()
)
# Mostly well-formed <mrq>s with the mandatory tags, to exercise the mapping itself.
small_code = st.integers(0, 130).map(lambda n: str(n) if n % 2 else f"{n:04d}")
sane_mrq = st.fixed_dictionaries(
    {
        "ref": st.from_regex(r"[A-Za-z0-9]{1,16}", fullmatch=True),
        "cid": st.from_regex(r"[0-9]{1,16}", fullmatch=True),
        "dty": small_code,
    },
    optional={
        "mty": st.sampled_from(["ME", "RE", "IN", "PI"]),
        "stc": small_code,
        "lco": small_code,
        "ite": st.sampled_from(["21,5 C", "battery 7 %", "150 %", "-80", "x"]),
        "lge": st.builds(
            _lge,
            st.builds(lambda a, b: f"{a},{b}", st.floats(-90, 90), st.floats(-180, 180)),
            st.none() | st.sampled_from(["2026-03-29T02:45:00+01", "2026-03-29T02:45:00"]),
            st.none(),
        ),
    },
).map(lambda f: ("<mrq>" + "".join(f"<{k}>{v}</{k}>" for k, v in f.items()) + "</mrq>").encode())

xmlish = st.lists(
    st.sampled_from(
        [
            "<mrq>",
            "</mrq>",
            "<ref>",
            "</ref>",
            "<cid>1</cid>",
            "<dty>3</dty>",
            "<!DOCTYPE x>",
            '<?xml version="1.0"?>',
            '<?xml version="1.0" encoding="latin-1"?>',
            "&amp;",
            "&x;",
            "<![CDATA[",
            "]]>",
            "<!--",
            "-->",
            "<mrs>",
            "<lge><geo>",
            "</geo></lge>",
            "\x00",
            "é",
        ]
    )
    | tag_text,
    max_size=12,
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))

payloads = st.one_of(st.binary(max_size=300), json_bytes, mrq_bytes, sane_mrq, xmlish)


def _check(topic: str, payload: bytes, out: Decoded) -> None:
    assert out.events or out.dead, "input vanished"
    for d in out.dead:
        assert d.reason.strip(), "a dead letter without a reason"
        assert d.topic == storable(topic) and d.received_at == NOW
        # What PostgreSQL can store: no NUL, nothing that is not UTF-8; 64 KiB at most.
        for text in (d.topic, d.reason, d.device or ""):
            assert "\x00" not in text
            text.encode("utf-8")
        assert len(d.payload) <= 64 * 1024 and d.size >= len(d.payload)
    for e in out.events:
        assert e.device in REG.device_by_id()
        assert e.id and len(e.id) <= 64
        assert "\x00" not in e.id
        e.id.encode("utf-8")
        assert e.time.tzinfo is not None
        assert timedelta(days=-7) <= e.time - NOW <= timedelta(minutes=5)
        if e.value is not None:
            assert math.isfinite(e.value)
        bounds = VALUE_RANGES.get(e.type)
        if bounds is not None:
            assert e.value is not None and bounds[0] <= e.value <= bounds[1]
        if e.position is not None:
            assert -90 <= e.position[0] <= 90 and -180 <= e.position[1] <= 180
    parts = topic.split("/")
    is_scaip = len(parts) == 5 and parts[:3] == ["trygg", SITE, "devices"] and parts[4] == "scaip"
    if is_scaip:
        assert out.reply is not None, "a SCAIP message without a reply"
        reply_topic, body = out.reply
        assert reply_topic == topic + "/response"
        ref, snu, ste = parse_mrs(body)
        assert snu in {s.value for s in Snu}
        assert len(out.events) <= 1
        assert (snu == Snu.OK) == bool(out.events)
        if out.events:
            # The session's ref; an IN/RE event's id extends it (scaip.Mrq.event_id).
            assert ref == session_ref(out.events[0].id)
        else:
            assert ste
    else:
        assert out.reply is None


@FUZZ
@given(topic=topics, payload=payloads)
def test_no_input_escapes_the_decoder(topic: str, payload: bytes) -> None:
    _check(topic, payload, DECODER.decode(topic, payload, NOW))


@FUZZ
@given(device=st.sampled_from(["dev-1", "dev-2"]), payload=sane_mrq | mrq_bytes | xmlish)
def test_scaip_always_answers(device: str, payload: bytes) -> None:
    topic = f"trygg/{SITE}/devices/{device}/scaip"
    _check(topic, payload, DECODER.decode(topic, payload, NOW))


@FUZZ
@given(device=st.sampled_from(["dev-1", "dev-2"]), payload=json_bytes)
def test_json_on_the_events_channel(device: str, payload: bytes) -> None:
    topic = f"trygg/{SITE}/devices/{device}/events"
    _check(topic, payload, DECODER.decode(topic, payload, NOW))
