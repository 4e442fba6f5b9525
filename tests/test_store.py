"""Batched event writes: binary COPY, duplicates dropped rather than failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import new_database
from trygg.model import DeadLetter, DeviceKind, Event, EventType, Room
from trygg.store.events import StoredEvent, write_dead_letters, write_events
from trygg.store.migrate import migrate

T0 = datetime(2026, 3, 29, 1, 50, tzinfo=UTC)


def _batch(n: int, start: int = 0) -> list[StoredEvent]:
    now = datetime.now(UTC)
    return [
        StoredEvent(
            Event(
                device=f"bed-{i % 7:04d}",
                id=f"e-{i}",
                type=EventType.TEMPERATURE,
                time=T0 + timedelta(seconds=i),
                resident=f"r-{i % 7:04d}",
                kind=DeviceKind.THERMOMETER,
                room=Room.BEDROOM,
                value=21.5 + i % 3,
            ),
            now,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture(params=["timescaledb", "plain"])
def any_db(request, pg_server, plain_pg_server) -> str:  # type: ignore[no-untyped-def]
    url = new_database(pg_server if request.param == "timescaledb" else plain_pg_server)
    migrate(url)
    return url


def test_duplicates_are_dropped_not_failed(any_db: str) -> None:
    with psycopg.connect(any_db) as conn:
        assert write_events(conn, _batch(5000)) == 5000
        # The same events again, mixed with 100 new ones, in one batch.
        assert write_events(conn, _batch(5000) + _batch(100, start=5000)) == 100
        # Duplicates inside one batch.
        assert write_events(conn, _batch(10, 9000) + _batch(10, 9000)) == 10
        total, values = conn.execute("SELECT count(*), sum(value) FROM events").fetchone()
    assert total == 5110
    assert values == pytest.approx(sum(21.5 + i % 3 for i in [*range(5100), *range(9000, 9010)]))


def test_event_fields_round_trip(db: str) -> None:
    ev = Event(
        device="gps-0001",
        id="x-1",
        type=EventType.LOCATION,
        time=T0,
        resident="r-0001",
        kind=DeviceKind.GPS,
        position=(59.95, 10.86),
    )
    with psycopg.connect(db) as conn:
        write_events(conn, [StoredEvent(ev, T0 + timedelta(seconds=2))])
        row = conn.execute(
            "SELECT time, device, event_id, type, resident, lat, lon, received_at,"
            " late, room, value FROM events"
        ).fetchone()
    assert row == (
        T0,
        "gps-0001",
        "x-1",
        "location",
        "r-0001",
        59.95,
        10.86,
        T0 + timedelta(seconds=2),
        False,
        None,
        None,
    )


def test_dead_letters_keep_raw_bytes_topic_and_reason(db: str) -> None:
    raw = b"\xff\x00not json"
    with psycopg.connect(db) as conn:
        write_dead_letters(conn, [DeadLetter("trygg/x/devices/d/events", raw, "not JSON", T0, "d")])
        row = conn.execute("SELECT topic, payload, reason, device FROM dead_letters").fetchone()
    assert row == ("trygg/x/devices/d/events", raw, "not JSON", "d")
