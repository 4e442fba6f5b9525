"""Batched writes of events and dead letters.

Events go in with binary COPY into a per-connection staging table and are
then merged with ``INSERT ... ON CONFLICT DO NOTHING``: a re-delivered event
(same device, id and time) is dropped, not failed, and one duplicate cannot
reject the other rows of its batch. Binary COPY is ~5x faster than
executemany here (about 200k rows/s into a hypertable on these machines).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from trygg.model import DeadLetter, Event

_COLUMNS = "time, device, event_id, type, resident, value, room, lat, lon, received_at, late"
_TYPES = [
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "float8",
    "float8",
    "timestamptz",
    "bool",
]
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS events_stage (
    time timestamptz, device text, event_id text, type text, resident text,
    value double precision, room text, lat double precision, lon double precision,
    received_at timestamptz, late boolean
) ON COMMIT DELETE ROWS
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as handed to the store: the event, when it arrived, whether it was late."""

    event: Event
    received_at: datetime
    late: bool = False


def _row(s: StoredEvent) -> tuple[object, ...]:
    e = s.event
    lat, lon = e.position if e.position else (None, None)
    return (
        e.time,
        e.device,
        e.id,
        e.type.value,
        e.resident,
        e.value,
        e.room.value if e.room else None,
        lat,
        lon,
        s.received_at,
        s.late,
    )


def write_events(conn: psycopg.Connection, batch: Sequence[StoredEvent]) -> int:
    """Store a batch in one transaction; return how many rows were new."""
    if not batch:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE)
        cur.execute("TRUNCATE events_stage")  # inside an outer transaction rows would linger
        with cur.copy(f"COPY events_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for s in batch:
                copy.write_row(_row(s))
        cur.execute(
            f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_stage"
            " ON CONFLICT DO NOTHING"
        )
        return cur.rowcount


def write_dead_letters(conn: psycopg.Connection, letters: Iterable[DeadLetter]) -> int:
    rows = [(d.received_at, d.topic, d.payload, d.reason, d.device) for d in letters]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (received_at, topic, payload, reason, device)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    return len(rows)
