"""Fuzzing trygg end to end: nothing a device publishes may stop an alarm.

Hypothesis generates a thousand messages (derandomized: the same ones every
day for the same code, see ``generate``; times are relative to the run's
clock), and a fixed corpus adds the cases found so far; a real private
mosquitto delivers them to a real ``trygg run`` with a real TimescaleDB: arbitrary
unicode with NUL and lone surrogates (as JSON escapes and as raw invalid
UTF-8), wrong types, deeply nested JSON, payloads up to about 1 MB (over the
256 KiB limit), batches up to and over 1,000 events, and SCAIP XML, valid and
broken, on the ``events`` and ``scaip`` channels of known and unknown devices.

Afterwards every message is accounted for exactly: each one is exactly as
many rows in ``events`` plus ``dead_letters`` as it should be (one, or one per
item of a JSON array of 1-1,000 items on a known device's events channel:
every event id is unique, so no row is a dropped duplicate), nothing was a
record the database refused (the drainer's last resort), no helper process
died, ``/readyz`` is ready, and a fall published after the fuzz reaches the
webhook within a second.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from trygg.devenv import PrivateMosquitto
from trygg.model import EventType

SITE = "oslo"
LIMIT = 256 * 1024  # the decoder's default payload limit
MAX_BATCH = 1000
EXAMPLES = 1000
KNOWN = ["btn-1", "bed-1", "thermo-1", "lu-1"]  # the fuzz's devices (resident r-1)
UNKNOWN = ["ghost", "ünknøwn-☃", "x" * 120]
REGISTRY = """
residents:
  - {id: r-1, team: t1}
  - {id: r-9, team: t1}
devices:
  - {id: btn-1, resident: r-1, kind: button, room: bedroom}
  - {id: bed-1, resident: r-1, kind: bed, room: bedroom}
  - {id: thermo-1, resident: r-1, kind: thermometer, room: livingroom}
  - {id: lu-1, resident: r-1, kind: button}
  - {id: fall-9, resident: r-9, kind: fall, room: bathroom}
"""


@dataclass
class Msg:
    topic: str
    payload: bytes


# --- what to publish -------------------------------------------------------------------

# Text with what PostgreSQL cannot hold mixed in: NUL, lone surrogates (both
# halves), and characters that are fine (noncharacters, a pair, astral planes).
SPECIALS = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\U0001f600"]
# (A list joined, not st.text(alphabet=...): text() drew no specials from that alphabet.)
nasty_text = st.lists(st.characters() | st.sampled_from(SPECIALS), max_size=24).map("".join)
# JSON values without NaN or Infinity: those are not JSON, and pydantic's
# parser takes them in a field it ignores where orjson refuses the message,
# so an array holding one would not be one row per item (see expected_rows).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
# Times relative to the run's clock: mostly within the skew limits (7 days
# old to 5 minutes ahead), some beyond; offsets from ordinary to ones that
# timestamptz refuses (16 hours or more); extreme years; not times at all.
offsets = st.sampled_from([0, 60, 120, -300, 14 * 60, 15 * 60 + 59, 16 * 60, -(23 * 60 + 59)])
ages = st.one_of(
    st.integers(min_value=-6 * 86400, max_value=200),  # seconds from now: valid
    st.sampled_from([-8 * 86400, 3600, -400 * 86400]),  # beyond the limits
)
rel_times = st.tuples(ages, offsets).map(lambda t: ("rel", t[0], t[1]))
times = st.one_of(
    rel_times,
    rel_times,
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-14:00",
            "9999-12-31T23:59:59.999999-23:59",
            "10000-01-01T00:00:00Z",
            "2026-03-29T02:30:00",  # no offset
            "yesterday",
            "",
        ]
    ),
    st.integers(min_value=-(2**40), max_value=2**53),
    json_values,
)
values = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 3.4e38, 3.5e38, -1e39, 1e-40, 1.2e-38, 5e-324, 1e308, 15.0, 101.0]),
    json_values,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": nasty_text | json_values,
        "type": st.sampled_from([t.value for t in EventType]) | json_values,
        "time": times,
        "value": values,
        "room": st.sampled_from(["bedroom", "bathroom", "attic"]) | json_values,
        "position": st.fixed_dictionaries(
            {"lat": st.floats(-100, 100), "lon": st.floats(-200, 200)},
            optional={"alt": json_values, "\x00": st.just(1)},
        )
        | json_values,
        "extra": json_values,
    },
)
# A sound event but for one thing PostgreSQL cannot hold, or nothing at all
# (most fuzz dies at the first field; these reach the rules, or nearly).
sound_event = st.fixed_dictionaries(
    {
        "id": st.text(max_size=8) | st.builds("{}\x00{}".format, st.text(max_size=4), st.text()),
        "type": st.sampled_from([t.value for t in EventType]),
        "time": rel_times,
    },
    optional={
        "value": st.floats(0, 100) | st.sampled_from([3.5e38, -1e39, 1e-40, 5e-324, 1e-50]),
        "room": st.sampled_from(["bedroom", "bathroom"]),
    },
)
events = event_like | sound_event
# How a document becomes bytes: escaped (NUL and lone surrogates as \\u escapes),
# or raw (a lone surrogate as the invalid UTF-8 it would be), or raw with
# arbitrary bytes spliced in.
encodings = st.sampled_from(["escaped", "raw"]) | st.tuples(
    st.just("splice"), st.integers(0, 400), st.binary(min_size=1, max_size=4)
)

json_docs = st.one_of(
    st.tuples(st.just("object"), events, encodings),
    st.tuples(st.just("array"), st.lists(events | json_values, min_size=1, max_size=8), encodings),
    st.tuples(st.just("scalar"), json_values, encodings),
    st.tuples(st.just("empty"), st.just([]), encodings),
)
# Deeply nested JSON: below, at and far beyond the parsers' recursion limits.
nested = st.tuples(
    st.just("nested"), st.sampled_from([50, 255, 1100, 20000]), st.sampled_from(["[", '{"a":'])
)
# Large: at, just over and far over the limit (up to ~1 MB); full batches.
large = st.one_of(
    st.tuples(st.just("padded"), st.sampled_from([LIMIT - 200, LIMIT, LIMIT + 1, 1_000_000])),
    st.tuples(st.just("batch"), st.sampled_from([MAX_BATCH, MAX_BATCH + 1])),
)
raw_bytes = st.tuples(st.just("bytes"), st.binary(max_size=300))

small_code = st.integers(0, 130).map(lambda n: str(n) if n % 2 else f"{n:04d}")
tag_text = st.lists(
    st.characters(exclude_characters="<&") | st.sampled_from(["\x00", "\ud800", "&"]),
    max_size=20,
).map("".join)
mrq = st.fixed_dictionaries(
    {"ref": st.just(""), "cid": st.from_regex(r"[0-9]{1,16}", fullmatch=True), "dty": small_code},
    optional={
        "mty": st.sampled_from(["ME", "RE", "IN", "PI", "XX"]),
        "stc": small_code | tag_text,
        "lco": small_code,
        "ite": st.sampled_from(["21,5 C", "battery 7 %", "150 %", "-80"]) | tag_text,
        "lge": st.builds(
            lambda geo, tim: f"<geo>{geo}</geo>" + (f"<tim>{tim}</tim>" if tim else ""),
            st.sampled_from(["59.9,10.7", "91,10", "x"]),
            st.none()
            | st.sampled_from(
                ["2026-03-29T02:45:00+01", "0001-01-01T00:00:00+14:00", "2026-03-29T02:45:00"]
            ),
        ),
        "junk": tag_text,
    },
)
ref_tails = st.from_regex(r"[A-Za-z0-9]{0,8}", fullmatch=True) | tag_text
scaip_docs = st.one_of(
    st.tuples(st.just("mrq"), mrq, ref_tails),
    st.tuples(
        st.just("xmlish"),
        st.lists(
            st.sampled_from(
                ["<mrq>", "</mrq>", "<ref>", "</ref>", "<!DOCTYPE x>", "&x;", "<![CDATA[", "\x00"]
            )
            | tag_text,
            max_size=10,
        ),
    ),
    st.tuples(st.just("padded-xml"), st.sampled_from([LIMIT + 1, 600_000])),
    raw_bytes,
)

sound_docs = st.one_of(
    st.tuples(st.just("object"), sound_event, encodings),
    st.tuples(st.just("array"), st.lists(sound_event, min_size=1, max_size=8), encodings),
)

messages = st.one_of(
    st.tuples(st.sampled_from(KNOWN), st.just("events"), json_docs),
    st.tuples(st.sampled_from(KNOWN), st.just("events"), sound_docs),
    st.tuples(st.sampled_from(KNOWN), st.just("events"), nested | large | raw_bytes),
    st.tuples(st.sampled_from(KNOWN), st.just("scaip"), scaip_docs),
    st.tuples(st.sampled_from(UNKNOWN), st.sampled_from(["events", "scaip"]), json_docs),
    st.tuples(st.sampled_from(UNKNOWN), st.sampled_from(["events", "scaip"]), large),
)


def _when(spec: Any, now: datetime) -> Any:
    """A ("rel", seconds, offset minutes) time as ISO 8601; anything else as it is."""
    if isinstance(spec, tuple) and spec and spec[0] == "rel":
        _, seconds, minutes = spec
        tz = timezone(timedelta(minutes=minutes))
        return (now + timedelta(seconds=seconds)).astimezone(tz).isoformat()
    return spec


def _unique(doc: Any, tag: str, now: datetime) -> Any:
    """Each event's id made unique to its message and place (so no row is a
    dropped duplicate); relative times made absolute."""
    if isinstance(doc, dict):
        doc = dict(doc)
        if isinstance(doc.get("id"), str):
            doc["id"] = f"{tag}:{doc['id']}"
        if "time" in doc:
            doc["time"] = _when(doc["time"], now)
    return doc


def _encode(doc: Any, how: Any) -> bytes:
    if how == "escaped":
        return json.dumps(doc).encode()
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if how == "raw":
        return raw
    _, at, junk = how
    at = min(at, len(raw))
    return raw[:at] + junk + raw[at:]


def _render(n: int, device: str, channel: str, spec: tuple[Any, ...], now: datetime) -> Msg:
    tag = f"m{n}"
    topic = f"trygg/{SITE}/devices/{device}/{channel}"
    kind = spec[0]
    if kind == "object":
        return Msg(topic, _encode(_unique(spec[1], tag, now), spec[2]))
    if kind == "array":
        items = [_unique(it, f"{tag}.{i}", now) for i, it in enumerate(spec[1])]
        return Msg(topic, _encode(items, spec[2]))
    if kind in ("scalar", "empty"):
        return Msg(topic, _encode(spec[1], spec[2]))
    if kind == "nested":
        depth, opener = spec[1], spec[2]
        closer = "]" if opener == "[" else "}"
        return Msg(topic, (opener * depth + "1" + closer * depth).encode())
    if kind == "padded":
        head = json.dumps({"id": f"{tag}:pad", "type": "heartbeat", "time": now.isoformat()})
        body = head[:-1] + ', "pad": "'
        return Msg(topic, (body + "x" * (spec[1] - len(body) - 2) + '"}').encode())
    if kind == "batch":
        when = (now - timedelta(minutes=1)).isoformat()
        items = [
            {"id": f"{tag}.{i}", "type": "motion.detected", "time": when} for i in range(spec[1])
        ]
        return Msg(topic, json.dumps(items).encode())
    if kind == "bytes":
        return Msg(topic, spec[1])
    if kind == "mrq":
        fields = dict(spec[1], ref=f"{tag}x{spec[2]}")
        xml = "<mrq>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</mrq>"
        return Msg(topic, xml.encode("utf-8", "surrogatepass"))
    if kind == "xmlish":
        return Msg(topic, "".join(spec[1]).encode("utf-8", "surrogatepass"))
    if kind == "padded-xml":
        head = f"<mrq><ref>{tag}</ref><cid>1</cid><dty>3</dty><ite>"
        return Msg(topic, (head + "x" * (spec[1] - len(head) - 12) + "</ite></mrq>").encode())
    raise AssertionError(kind)


def corpus(now: datetime) -> list[Msg]:
    """Messages the fuzz always includes, whatever Hypothesis draws: the found
    cases (a NUL in an id, a 5 MB-style oversized message) and one of each kind."""
    events = f"trygg/{SITE}/devices/btn-1/events"
    scaip = f"trygg/{SITE}/devices/lu-1/scaip"
    t = now.isoformat().encode()
    ev = b'{"id":"%s","type":"heartbeat","time":"' + t + b'"%s}'
    pad = b"x" * 1_000_000
    return [
        Msg(events, ev % (b"c0:a\\u0000b", b"")),  # the report: passed validation, broke COPY
        Msg(events, ev % (b"c1:a\\ud800", b"")),
        Msg(events, ev % (b"c2:a\xed\xa0\x80", b"")),  # a raw surrogate: not UTF-8
        Msg(events, ev % (b"c3:a\xff", b"")),
        Msg(events, ev % (b"c4:huge", b', "value": 3.5e38')),
        Msg(events, ev % (b"c5:tiny", b', "value": 1e-50')),
        Msg(events, ev % (b"c6:pad", b', "pad": "' + pad + b'"')),  # ~1 MB
        Msg(f"trygg/{SITE}/devices/ghost/events", pad),
        Msg(
            events,
            b'{"id":"c7:tz","type":"heartbeat","time":"'
            + (now + timedelta(hours=16)).strftime("%Y-%m-%dT%H:%M:%S+16:00").encode()
            + b'"}',
        ),
        Msg(events, b"[" * 100_000 + b"]" * 100_000),
        Msg(
            events,
            b"["
            + b",".join([ev % (b"c8:ok", b""), ev % (b"c8:nul\\u0000", b""), b'"x"', b"{}"])
            + b"]",
        ),
        Msg(
            events,
            json.dumps(
                [
                    {"id": f"c9.{i}", "type": "motion.detected", "time": now.isoformat()}
                    for i in range(1000)
                ]
            ).encode(),
        ),
        Msg(scaip, b"<mrq><ref>c10</ref><cid>1</cid><dty>3</dty></mrq>"),
        Msg(scaip, b"<mrq><ref>c11</ref><cid>1</cid><dty>3</dty>"),
        Msg(scaip, b"<mrq><ref>c12</ref><ite>" + pad + b"</ite></mrq>"),
    ]


def generate(now: datetime) -> list[Msg]:
    """The fuzz's messages: Hypothesis's, derandomized (a fixed seed, no example
    database), then the corpus. Hypothesis also draws constants from the source
    of the trygg modules loaded, so its examples change with the code (and with
    what else pytest has imported); the counting holds for any of them."""
    specs: list[tuple[str, str, tuple[Any, ...]]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # the body never fails: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(messages)
    def collect(spec: tuple[str, str, tuple[Any, ...]]) -> None:
        specs.append(spec)

    collect()
    return [_render(n, d, c, s, now) for n, (d, c, s) in enumerate(specs)] + corpus(now)


def expected_rows(m: Msg) -> int:
    """The rows a message must become: one per item of a JSON array of 1-1,000
    items on a known device's events channel within the size limit, else one
    (an event or a dead letter). orjson parses as the decoder's slow path does;
    the fast path (pydantic's parser) agrees on every generated message (no
    NaN or Infinity where a field is ignored, see json_values)."""
    device, channel = m.topic.split("/")[3:5]
    if channel != "events" or device not in KNOWN or len(m.payload) > LIMIT:
        return 1
    try:
        doc = orjson.loads(m.payload)
    except orjson.JSONDecodeError:
        return 1
    if isinstance(doc, list) and 1 <= len(doc) <= MAX_BATCH:
        return len(doc)
    return 1


# --- the run -----------------------------------------------------------------------------


def _one(url: str, sql: str) -> Any:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _rows(url: str) -> int:
    return int(
        _one(url, "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dead_letters)")
    )


def test_fuzzed_messages_are_all_accounted_for_and_alarms_still_come(
    tmp_path, broker: PrivateMosquitto, db: str
) -> None:  # type: ignore[no-untyped-def]
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    now = datetime.now(UTC)
    msgs = generate(now)
    expected = sum(expected_rows(m) for m in msgs)
    too_large = sum(len(m.payload) > LIMIT for m in msgs)
    # The fuzz reaches what it is meant to reach.
    assert len(msgs) == EXAMPLES + len(corpus(now))
    assert too_large >= 5 and any(len(m.payload) >= 900_000 for m in msgs)
    assert any(b"\\u0000" in m.payload for m in msgs)
    assert any(b"\\ud8" in m.payload or b"\\udc" in m.payload for m in msgs)
    assert any(re.search(rb"\xed[\xa0-\xbf]", m.payload) for m in msgs)  # raw, invalid UTF-8
    assert any(m.topic.endswith("/scaip") and m.payload.startswith(b"<mrq>") for m in msgs)
    assert any(expected_rows(m) == MAX_BATCH for m in msgs)

    with (
        WebhookReceiver() as hook,
        TryggProcess(
            {
                "TRYGG_MQTT_URL": broker.url,
                "TRYGG_DATABASE_URL": db,
                "TRYGG_SITE": SITE,
                "TRYGG_MQTT_CLIENT_ID": f"trygg-fuzz-{time.monotonic_ns()}",
                "TRYGG_WEBHOOK_URL": hook.url,
            }
        ) as trygg,
    ):
        trygg.wait_connected()
        publish(broker.port, [(m.topic, m.payload) for m in msgs])
        try:
            wait_until(lambda: _rows(db) >= expected, timeout=90, interval=0.2)
        except AssertionError:
            raise AssertionError(
                f"{_rows(db)} rows of {expected} expected; trygg said:\n{trygg.output()[-4000:]}"
            ) from None
        time.sleep(1.0)  # nothing more comes
        assert _rows(db) == expected
        assert _one(db, "SELECT count(*) FROM events") >= MAX_BATCH
        # Bounded dead letters: 64 KiB kept, the size and hash of the whole.
        assert (
            _one(db, "SELECT count(*) FROM dead_letters WHERE payload_size > 262144") == too_large
        )
        assert _one(db, "SELECT max(length(payload)) FROM dead_letters") <= 64 * 1024
        assert _one(db, "SELECT count(*) FROM dead_letters WHERE length(payload_sha256) <> 32") == 0
        # The report's case, refused by the decoder with its reason.
        assert _one(db, "SELECT reason FROM dead_letters WHERE payload LIKE '%c0:a%'") == (
            "event: Value error, id contains NUL (U+0000), which the database cannot store"
        )
        # The decoder refused it all: nothing reached the database to be refused there.
        assert _one(db, "SELECT count(*) FROM dead_letters WHERE topic LIKE 'spool/%'") == 0
        log = trygg.output()
        assert "process exited" not in log, log[-4000:]
        assert trygg.proc is not None and trygg.proc.poll() is None

        port = trygg.env["TRYGG_HTTP_PORT"]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["ready"], ready.text

        sent = publish(
            broker.port,
            [
                (
                    f"trygg/{SITE}/devices/fall-9/events",
                    event_json("after-the-fuzz", "fall.detected", datetime.now(UTC).isoformat()),
                )
            ],
        )

        def fall() -> list[tuple[float, dict[str, str], dict[str, Any]]]:
            return [
                r for r in hook.received if r[2]["resident"] == "r-9" and r[2]["rule"] == "fall"
            ]

        wait_until(fall, timeout=10)
        arrived = fall()[0][0]
        assert arrived - sent < 1.0, f"the fall took {arrived - sent:.3f} s to reach the webhook"
