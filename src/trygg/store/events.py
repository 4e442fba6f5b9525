"""Batched writes of events and dead letters.

Events go in with COPY into a per-connection staging table and are then
merged with ``INSERT ... ON CONFLICT DO NOTHING``: a re-delivered event (same
device, id and time) is dropped, not failed, and one duplicate cannot reject
the other rows of its batch. COPY is ~5x faster than executemany here.

The COPY is in text format so that a row may carry its times either as
``datetime`` objects or as the ISO 8601 strings they were spooled as: the
drainer passes spooled strings straight through and PostgreSQL parses them,
on its own core, instead of Python parsing them under the GIL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from trygg.model import DeadLetter, Event

_COLUMNS = "time, device, event_id, type, resident, value, room, lat, lon, received_at, late"
Row = tuple[object, ...]  # in _COLUMNS order
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS events_stage (
    time timestamptz, device text, event_id text, type text, resident text,
    value double precision, room text, lat double precision, lon double precision,
    received_at timestamptz, late boolean
) ON COMMIT DELETE ROWS
"""


@dataclass(slots=True)
class StoredEvent:
    """An event as handed to the store: the event, when it arrived, whether it was late.

    Not frozen, for the same reason as ``Event``: one is built per event."""

    event: Event
    received_at: datetime
    late: bool = False


def event_row(s: StoredEvent) -> Row:
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
    return write_event_rows(conn, [event_row(s) for s in batch])


def write_event_rows(conn: psycopg.Connection, rows: Sequence[Row]) -> int:
    """Store rows (see ``event_row``) in one transaction; return how many were new."""
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE)
        cur.execute("TRUNCATE events_stage")  # inside an outer transaction rows would linger
        with cur.copy(f"COPY events_stage ({_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM events_stage"
            " ON CONFLICT DO NOTHING"
        )
        return cur.rowcount


def recent_event_keys(conn: psycopg.Connection, limit: int) -> list[tuple[str, str]]:
    """The (device, event id) keys of the ``limit`` newest stored events, newest
    first, by observed time over the last week (the decoder refuses older events).
    An index scan backwards on the time index: ~0.3 s for 250,000 keys."""
    cur = conn.execute(
        "SELECT device, event_id FROM events WHERE time > now() - interval '8 days'"
        " ORDER BY time DESC LIMIT %s",
        [limit],
    )
    return [(d, i) for d, i in cur]


def write_dead_letters(conn: psycopg.Connection, letters: Iterable[DeadLetter]) -> int:
    """Store dead letters: the payload's first 64 KiB, its whole size and SHA-256 (schema 6)."""
    rows = [
        (d.received_at, d.topic, d.payload, d.reason, d.device, d.size, d.sha256) for d in letters
    ]
    if not rows:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters"
            " (received_at, topic, payload, reason, device, payload_size, payload_sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return len(rows)
