"""The decoder refuses what PostgreSQL cannot hold, and keeps memory bounded.

Whatever it lets through (events) or keeps (dead letters) must be storable:
no NUL or lone surrogate in text, numbers the columns hold, times and UTC
offsets timestamptz holds. A payload's size is checked before anything else,
and a dead letter keeps at most its first 64 KiB with the size and SHA-256 of
the whole. The last tests store the decoder's output in a real database.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import marshal
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from trygg.ingest.decode import Decoded, DecodeLimits, Decoder
from trygg.ingest.mqtt import Message
from trygg.ingest.payload import PayloadHead, head_of
from trygg.ingest.receiver import MESSAGES, ReceiverProcess, _frame, _Receiver
from trygg.ingest.scaip import parse_mrs
from trygg.ingest.scaip_mrq import Snu
from trygg.model import DeadLetter, EventPayload
from trygg.registry import parse_registry
from trygg.store import spooled
from trygg.store.events import StoredEvent

NOW = datetime(2026, 3, 29, 1, 50, tzinfo=UTC)
SITE = "oslo"
REG = parse_registry(
    {
        "residents": [{"id": "r-1", "team": "a"}],
        "devices": [
            {"id": "btn-1", "resident": "r-1", "kind": "button", "room": "bedroom"},
            {"id": "lu-1", "resident": "r-1", "kind": "button"},
        ],
    }
)
DECODER = Decoder(SITE, REG.device_by_id())
EVENTS = f"trygg/{SITE}/devices/btn-1/events"
SCAIP = f"trygg/{SITE}/devices/lu-1/scaip"
KIB64 = 64 * 1024


def _json(**fields: object) -> bytes:
    doc = {"id": "e-1", "type": "heartbeat", "time": NOW.isoformat(), **fields}
    return json.dumps(doc).encode()


def _storable(text: str | None) -> bool:
    if text is None:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _one_dead(out: Decoded) -> DeadLetter:
    assert out.events == []
    [d] = out.dead
    assert _storable(d.topic) and _storable(d.reason) and _storable(d.device)
    return d


# --- text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"a\\u0000b","type":"heartbeat","time":"2026-03-29T01:50:00Z"}',
        b'[{"id":"a\\u0000b","type":"heartbeat","time":"2026-03-29T01:50:00Z"}]',
    ],
)
def test_nul_in_an_event_id_is_refused_with_a_reason(payload: bytes) -> None:
    d = _one_dead(DECODER.decode(EVENTS, payload, NOW))
    assert "NUL" in d.reason


def test_nul_in_one_item_of_a_batch_leaves_its_neighbours() -> None:
    items = [
        {"id": "ok-1", "type": "heartbeat", "time": NOW.isoformat()},
        {"id": "bad\x00", "type": "heartbeat", "time": NOW.isoformat()},
        {"id": "ok-2", "type": "heartbeat", "time": NOW.isoformat()},
    ]
    out = DECODER.decode(EVENTS, json.dumps(items).encode(), NOW)
    assert [e.id for e in out.events] == ["ok-1", "ok-2"]
    [d] = out.dead
    assert d.reason.startswith("event[1]") and "NUL" in d.reason
    assert b"\\u0000" in d.payload  # the item, as JSON


@pytest.mark.parametrize(
    "payload",
    [
        b'{"id":"a\\ud800","type":"heartbeat","time":"2026-03-29T01:50:00Z"}',  # JSON escape
        b'{"id":"a\\udfff\\ud800","type":"heartbeat","time":"2026-03-29T01:50:00Z"}',
        b'{"id":"a\xed\xa0\x80","type":"heartbeat","time":"2026-03-29T01:50:00Z"}',  # raw
        b'{"id":"a\xff","type":"heartbeat","time":"2026-03-29T01:50:00Z"}',  # not UTF-8
        b'[{"id":"ok","type":"heartbeat","time":"2026-03-29T01:50:00Z"},"\\ud800"]',
    ],
)
def test_lone_surrogates_and_invalid_utf8_never_become_text(payload: bytes) -> None:
    d = _one_dead(DECODER.decode(EVENTS, payload, NOW))
    assert d.reason.startswith("not JSON")


def test_a_surrogate_pair_is_a_character_like_any_other() -> None:
    out = DECODER.decode(EVENTS, _json(id="\ud83d\ude00"), NOW)
    assert [e.id for e in out.events] == ["\U0001f600"]


def test_a_caller_in_python_cannot_pass_a_lone_surrogate_either() -> None:
    with pytest.raises(ValueError, match="unicode"):
        EventPayload.model_validate({"id": "a\ud800", "type": "heartbeat", "time": NOW})


def test_dead_letter_text_is_escaped_not_lost() -> None:
    d = DeadLetter("trygg/\x00/x\ud800", b"", "why \x00 \udcff", NOW, "dev\x00")
    assert d.topic == "trygg/\\x00/x\\ud800"
    assert d.reason == "why \\x00 \\udcff"
    assert d.device == "dev\\x00"


def test_a_position_key_with_nul_gives_a_storable_short_reason() -> None:
    payload = _json(type="location", position={"lat": 1, "lon": 2, "x\x00" + "y" * 5000: 1})
    d = _one_dead(DECODER.decode(EVENTS, payload, NOW))
    assert "position" in d.reason and len(d.reason) < 400


def test_a_reason_is_bounded() -> None:
    assert len(DeadLetter("t", b"", "x" * 100_000, NOW).reason) == 1000


# --- numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"1e39", "out of range"),
        (b"-3.5e38", "out of range"),
        (b"1e-40", "out of range"),
        (b"5e-324", "out of range"),
        (b"1e400", "not JSON"),  # orjson: "number is infinity"
        (b"9" * 400, "not JSON"),
        (b"NaN", "not JSON"),
    ],
)
def test_numbers_the_database_cannot_hold_are_refused(value: bytes, reason: str) -> None:
    payload = _json()[:-1] + b', "value": ' + value + b"}"
    d = _one_dead(DECODER.decode(EVENTS, payload, NOW))
    assert reason in d.reason


def test_a_battery_level_that_would_underflow_real_is_refused() -> None:
    d = _one_dead(DECODER.decode(EVENTS, _json(type="battery", value=1e-50), NOW))
    assert "out of range" in d.reason


@pytest.mark.parametrize("value", [0, 0.0, -0.0, 3.4e38, -3.4e38, 1.2e-38, 12.5])
def test_numbers_within_range_pass(value: float) -> None:
    [e] = DECODER.decode(EVENTS, _json(value=value), NOW).events
    assert e.value == value


# --- times ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time", "reason"),
    [
        ("2026-03-29T17:50:00+16:00", "UTC offset of +16:00"),
        ("2026-03-28T01:51:00-23:59", "UTC offset of -23:59"),
        ("0001-01-01T00:00:00+14:00", "old"),
        ("0001-01-01T00:00:00+23:59", "UTC offset"),
        ("9999-12-31T23:59:59-14:00", "ahead"),
        ("9999-12-31T23:59:59.999999-23:59", "UTC offset"),
        ("10000-01-01T00:00:00Z", "time"),
        ("0000-01-01T00:00:00Z", "time"),
    ],
)
def test_times_the_database_cannot_hold_are_refused(time: str, reason: str) -> None:
    d = _one_dead(DECODER.decode(EVENTS, _json(time=time), NOW))
    assert reason in d.reason


def test_an_offset_within_what_the_database_holds_passes() -> None:
    [e] = DECODER.decode(EVENTS, _json(time="2026-03-29T17:49:00+15:59"), NOW).events
    assert e.time == NOW


def test_skew_limits_at_their_extremes_never_raise() -> None:
    dec = Decoder(
        SITE, REG.device_by_id(), DecodeLimits(max_age=timedelta.max, max_future=timedelta.max)
    )
    for when in ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]:
        out = dec.decode(EVENTS, _json(time=when), NOW)
        assert len(out.events) + len(out.dead) == 1


def test_scaip_time_with_an_offset_the_database_refuses_is_wrong_data() -> None:
    mrq = (
        b"<mrq><ref>A1</ref><cid>1</cid><dty>51</dty>"
        b"<lge><geo>59,10</geo><tim>2026-03-29T21:50:00+20:00</tim></lge></mrq>"
    )
    out = DECODER.decode(SCAIP, mrq, NOW)
    d = _one_dead(out)
    assert "UTC offset" in d.reason
    assert out.reply is not None and parse_mrs(out.reply[1])[1] == Snu.WRONG_DATA_CONTENT


# --- size: checked first; a dead letter keeps 64 KiB, the size and the hash -------------


def test_a_dead_letter_keeps_the_head_size_and_hash() -> None:
    raw = bytes(range(256)) * 1024  # 256 KiB
    d = DeadLetter("t", raw, "r", NOW)
    assert d.payload == raw[:KIB64] and type(d.payload) is bytes
    assert d.size == len(raw) and d.sha256 == hashlib.sha256(raw).digest()
    small = DeadLetter("t", b"{", "r", NOW)
    assert (small.payload, small.size, small.sha256) == (b"{", 1, hashlib.sha256(b"{").digest())


@pytest.mark.parametrize(
    "topic",
    [EVENTS, SCAIP, f"trygg/{SITE}/devices/nobody/events", "not/a/device/topic"],
)
def test_the_size_is_checked_before_anything_else(topic: str) -> None:
    big = b"[" * 300_000  # would be deeply nested JSON, if anything read it
    out = DECODER.decode(topic, big, NOW)
    d = _one_dead(out)
    assert "300000 bytes exceeds the limit of 262144" in d.reason
    assert d.payload == big[:KIB64] and d.size == len(big)
    assert d.sha256 == hashlib.sha256(big).digest()
    if topic == SCAIP:
        assert out.reply is not None and parse_mrs(out.reply[1])[1] == Snu.MESSAGE_TOO_LONG
        assert d.reason.startswith("scaip: message of")
    else:
        assert out.reply is None


def test_a_payload_head_is_refused_by_the_size_of_the_whole() -> None:
    whole = _json(pad="x" * 5_000_000)
    head = PayloadHead(*head_of(whole))
    out = DECODER.decode(EVENTS, head, NOW)
    d = _one_dead(out)
    assert f"payload of {len(whole)} bytes exceeds the limit" in d.reason
    assert d.payload == whole[:KIB64] and type(d.payload) is bytes
    assert (d.size, d.sha256) == (len(whole), hashlib.sha256(whole).digest())


def test_a_head_within_the_limit_is_still_not_read_as_a_whole() -> None:
    whole = _json(pad="x" * 100_000)
    cut = PayloadHead(whole[:1000], len(whole), hashlib.sha256(whole).digest())
    d = _one_dead(DECODER.decode(EVENTS, cut, NOW))
    assert "came cut to its first 1000 bytes" in d.reason and d.size == len(whole)


def test_the_receiver_forwards_only_the_head_of_a_payload_above_the_limit() -> None:
    """Both ends of the pipe: the receiver's frame and the runner's Messages."""
    r = _Receiver("mqtt://127.0.0.1:1", "test", ["x"], 60, max_payload_bytes=1000)
    big, small = b"b" * 5_000_000, b"s" * 1000
    r._message(Message(EVENTS, big, 1, 1))
    r._message(Message(EVENTS, small, 2, 1))
    frame = _frame(MESSAGES, r._batch)
    assert len(frame) < KIB64 + 2000  # not 5 MB
    got: list[Message] = []
    proc = ReceiverProcess("mqtt://127.0.0.1:1", "test", ["x"], got.extend, 60, "json", "INFO")

    async def follow() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(frame)
        reader.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await proc._follow(reader)

    asyncio.run(follow())
    [head, whole] = got
    assert isinstance(head.payload, PayloadHead) and head.payload == big[:KIB64]
    assert head.payload.size == len(big)
    assert head.payload.sha256 == hashlib.sha256(big).digest()
    assert type(whole.payload) is bytes and whole.payload == small
    assert marshal.loads(frame[5:])[1][1] == small


# --- the spool keeps size and hash; older records without them still read ----------------


def test_spool_records_carry_size_and_hash() -> None:
    raw = b"z" * 100_000
    d = DeadLetter("t", raw, "r", NOW, "dev")
    back = spooled._dead_letter(json.loads(json.dumps(spooled.dead_letter_record(d))))
    assert back == d and back.size == 100_000 and len(back.payload) == KIB64


def test_a_spool_record_from_before_size_and_hash_reads_as_it_was() -> None:
    raw = b"z" * 100_000
    old = {
        "op": "dl",
        "topic": "t",
        "payload": base64.b64encode(raw).decode(),
        "reason": "r",
        "rx": NOW.isoformat(),
        "device": None,
    }
    d = spooled._dead_letter(old)
    assert d.payload == raw[:KIB64]
    assert (d.size, d.sha256) == (len(raw), hashlib.sha256(raw).digest())


# --- into a real database ---------------------------------------------------------------

NASTY = [
    (EVENTS, b'{"id":"a\\u0000b","type":"heartbeat","time":"2026-03-29T01:50:00Z"}'),
    (EVENTS, b'{"id":"a\\ud800","type":"heartbeat","time":"2026-03-29T01:50:00Z"}'),
    (EVENTS, b'{"id":"a\xed\xa0\x80","type":"heartbeat","time":"2026-03-29T01:50:00Z"}'),
    (EVENTS, _json(id="big", value=1e39)),
    (EVENTS, _json(id="tiny", type="battery", value=1e-50)),
    (EVENTS, _json(id="tz", time="2026-03-29T21:50:00+20:00")),
    (EVENTS, _json(id="ok-tz", time="2026-03-29T17:49:00+15:59")),
    (EVENTS, _json(id="ok-battery", type="battery", value=1.2e-38)),
    (EVENTS, _json(id="ok-value", value=-3.4e38)),
    (EVENTS, _json(type="location", position={"lat": 1, "lon": 2, "k\x00": 1})),
    (EVENTS, b"x" * 300_000),
    (EVENTS, PayloadHead(*head_of(b"y" * 5_000_000))),
    (f"trygg/{SITE}/devices/n\x00body\ud800/events", b"{}"),
    (SCAIP, b"<mrq><ref>A\x00</ref></mrq>"),
    (SCAIP, b"<mrq><ref>A1</ref><cid>1</cid><dty>3</dty></mrq>"),
]


def test_whatever_the_decoder_passes_or_keeps_is_stored(db: str) -> None:
    records: list[spooled.Record] = []
    health: dict[str, tuple[str | None, float | None, bool | None]] = {}
    for topic, payload in NASTY:
        out = DECODER.decode(topic, payload, NOW)
        records += [spooled.dead_letter_record(d) for d in out.dead]
        for e in out.events:
            records.append(spooled.event_record(StoredEvent(e, NOW)))
            battery = e.value if e.type == "battery" else health.get(e.device, (0, None))[1]
            health[e.device] = (e.time.isoformat(), battery, True)
    records.append(spooled.health_record(health))
    # Through the spool's own encoding, as the drainer reads it.
    records = [orjson.loads(orjson.dumps(r)) for r in records]
    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO residents (id, team) VALUES ('r-1', 'a');"
            "INSERT INTO devices (id, resident, kind) VALUES ('btn-1', 'r-1', 'button'),"
            " ('lu-1', 'r-1', 'button')"
        )
        conn.commit()
        refused: list[DeadLetter] = []
        stored, dead = spooled.apply(conn, "test", records, (0, 1), on_poison=refused.append)
        rows = conn.execute(
            "SELECT payload_size, length(payload), payload_sha256 FROM dead_letters"
        ).fetchall()
        battery = conn.execute("SELECT battery FROM devices WHERE id = 'btn-1'").fetchone()
    assert refused == []  # nothing the database refused (and turned into a dead letter)
    assert (stored, dead) == (4, len(NASTY) - 4)
    assert all(length <= KIB64 and size >= length for size, length, _ in rows)
    assert {size for size, _, _ in rows} >= {300_000, 5_000_000}
    assert all(len(h) == 32 for _, _, h in rows)
    assert battery is not None and battery[0] == pytest.approx(1.2e-38)


def test_migration_6_gives_old_dead_letters_their_size_and_hash(empty_db: str) -> None:
    from trygg.store.migrate import migrations

    with psycopg.connect(empty_db, autocommit=True) as conn:
        for m in migrations()[:5]:
            conn.execute("SELECT set_config('trygg.timescaledb', 'off', false)")
            conn.execute(m.sql.encode())
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " VALUES (now(), 't', %s, 'r')",
            [b"q" * 70_000],
        )
        conn.execute(migrations()[5].sql.encode())
        row = conn.execute(
            "SELECT payload_size, payload_sha256, length(payload) FROM dead_letters"
        ).fetchone()
    assert row == (70_000, hashlib.sha256(b"q" * 70_000).digest(), 70_000)
