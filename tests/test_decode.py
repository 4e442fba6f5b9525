"""The decoder: untrusted MQTT bytes become events or dead letters with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from trygg.ingest.decode import DecodeLimits, Decoder
from trygg.model import EventType, Room
from trygg.registry import parse_registry

NOW = datetime(2026, 3, 29, 1, 50, tzinfo=UTC)
REG = parse_registry(
    {
        "residents": [{"id": "r-1", "team": "a"}],
        "devices": [
            {"id": "bed-1", "resident": "r-1", "kind": "bed", "room": "bedroom"},
            {"id": "th-1", "resident": "r-1", "kind": "thermometer"},
        ],
    }
)
TOPIC = "trygg/oslo/devices/bed-1/events"


def _dec(**limits: object) -> Decoder:
    return Decoder("oslo", REG.device_by_id(), DecodeLimits(**limits))  # type: ignore[arg-type]


def ev(i: int, typ: str = "bed.vacant", **kw: object) -> dict[str, object]:
    return {"id": f"e-{i}", "type": typ, "time": "2026-03-29T03:49:00+02:00", **kw}


def test_valid_event_is_enriched_from_the_registry() -> None:
    out = _dec().decode(TOPIC, json.dumps(ev(1)).encode(), NOW)
    assert out.dead == []
    [e] = out.events
    assert (e.device, e.id, e.type, e.resident, e.room) == (
        "bed-1",
        "e-1",
        EventType.BED_VACANT,
        "r-1",
        Room.BEDROOM,
    )
    assert e.time == datetime(2026, 3, 29, 1, 49, tzinfo=UTC)


def test_a_batch_keeps_its_valid_events_and_dead_letters_the_rest() -> None:
    batch = [ev(1), {"id": "e-2"}, ev(3, room="kitchen"), "nonsense", ev(5, "temperature")]
    out = _dec().decode(TOPIC, json.dumps(batch).encode(), NOW)
    assert [e.id for e in out.events] == ["e-1", "e-3"]
    assert out.events[1].room is Room.KITCHEN
    reasons = [d.reason for d in out.dead]
    assert reasons[0].startswith("event[1].type: Field required")
    assert reasons[1] == "event[3]: expected a JSON object, got str"
    assert "event[4]" in reasons[2] and "numeric 'value'" in reasons[2]
    assert json.loads(out.dead[0].payload) == {"id": "e-2"}


def test_wrong_topic_and_unknown_device() -> None:
    out = _dec().decode("trygg/bergen/devices/bed-1/events", b"{}", NOW)
    assert "is not trygg/oslo/devices/<device>/events" in out.dead[0].reason
    out = _dec().decode("trygg/oslo/devices/ghost/events", json.dumps(ev(1)).encode(), NOW)
    assert out.dead[0].reason.startswith("unknown device 'ghost'")
    assert out.dead[0].device == "ghost"


def test_limits_on_size_batch_and_clock_skew() -> None:
    big = json.dumps([ev(i) for i in range(20)]).encode()
    assert (
        "exceeds the limit of 100"
        in _dec(max_payload_bytes=100).decode(TOPIC, big, NOW).dead[0].reason
    )
    assert "a batch of 20 events" in _dec(max_batch=10).decode(TOPIC, big, NOW).dead[0].reason
    # A clock an hour ahead is not refused by default: its alarms must page, and the
    # rule engine judges the clock (device-clock). A site may still set a limit.
    future = dict(ev(1), time=(NOW + timedelta(hours=1)).isoformat())
    assert len(_dec().decode(TOPIC, json.dumps(future).encode(), NOW).events) == 1
    limited = _dec(max_future=timedelta(minutes=5))
    assert (
        "ahead of the receiver's clock"
        in limited.decode(TOPIC, json.dumps(future).encode(), NOW).dead[0].reason
    )
    old = dict(ev(1), time=(NOW - timedelta(days=30)).isoformat())
    assert "old (limit" in _dec().decode(TOPIC, json.dumps(old).encode(), NOW).dead[0].reason


def test_values_must_be_plausible() -> None:
    t = "2026-03-29T03:49:00+02:00"
    top = "trygg/oslo/devices/th-1/events"
    for payload, reason in [
        ({"id": "a", "type": "temperature", "time": t, "value": 400}, "outside -60..120"),
        ({"id": "a", "type": "battery", "time": t, "value": -1}, "outside 0..100"),
        ({"id": "a", "type": "location", "time": t}, "needs a 'position'"),
        ({"id": "", "type": "heartbeat", "time": t}, "event.id"),
        ({"id": "a", "type": "heartbeat", "time": "yesterday"}, "event.time"),
    ]:
        out = _dec().decode(top, json.dumps(payload).encode(), NOW)
        assert not out.events and reason in out.dead[0].reason, (payload, out.dead)
    out = _dec().decode(
        top, b'{"id":"a","type":"temperature","time":"%s","value":NaN}' % t.encode(), NOW
    )
    # NaN is not JSON (RFC 8259): refused as such, with where it stands.
    assert out.dead[0].reason.startswith("not JSON") and "column 75" in out.dead[0].reason
