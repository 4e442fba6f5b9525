"""Store operations as spool records, and applying them exactly once.

The runner turns what it wants stored (events, dead letters, alerts, their
lifecycle records) into plain JSON-able records for its local spool
(trygg.runner.spool). ``apply`` writes a run of records and advances the
spool's checkpoint in the same transaction: a crash between the two is
impossible, so replaying the spool after a crash never applies a record twice.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from trygg.model import DeadLetter, DeviceKind, Event, EventType, Room
from trygg.store import alerts as alert_store
from trygg.store.events import StoredEvent, write_dead_letters, write_events

Record = dict[str, Any]


def event_record(s: StoredEvent) -> Record:
    e = s.event
    return {
        "op": "ev",
        "d": e.device,
        "i": e.id,
        "y": e.type.value,
        "t": e.time.isoformat(),
        "r": e.resident,
        "k": e.kind.value,
        "m": e.room.value if e.room else None,
        "v": e.value,
        "p": e.position,
        "rx": s.received_at.isoformat(),
        "late": s.late,
    }


def _event(r: Record) -> StoredEvent:
    p = r.get("p")
    return StoredEvent(
        Event(
            device=r["d"],
            id=r["i"],
            type=EventType(r["y"]),
            time=datetime.fromisoformat(r["t"]),
            resident=r["r"],
            kind=DeviceKind(r["k"]),
            room=Room(r["m"]) if r["m"] else None,
            value=r["v"],
            position=(p[0], p[1]) if p else None,
        ),
        datetime.fromisoformat(r["rx"]),
        bool(r.get("late")),
    )


def dead_letter_record(d: DeadLetter) -> Record:
    return {
        "op": "dl",
        "topic": d.topic,
        "payload": base64.b64encode(d.payload).decode(),
        "reason": d.reason,
        "rx": d.received_at.isoformat(),
        "device": d.device,
    }


def _dead_letter(r: Record) -> DeadLetter:
    return DeadLetter(
        r["topic"],
        base64.b64decode(r["payload"]),
        r["reason"],
        datetime.fromisoformat(r["rx"]),
        r["device"],
    )


def alert_insert_record(**fields: Any) -> Record:
    """An ``alerts`` row; datetimes as ISO strings (see store.alerts.insert_alert)."""
    return {
        "op": "alert",
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()},
    }


def lifecycle_record(
    alert_id: str,
    step: str,
    at: datetime,
    actor: str,
    note: str | None = None,
    data: dict[str, Any] | None = None,
    state: str | None = None,
) -> Record:
    """One lifecycle step; ``state`` also moves the alert's current state."""
    return {
        "op": "rec",
        "alert_id": alert_id,
        "step": step,
        "at": at.isoformat(),
        "actor": actor,
        "note": note,
        "data": data or {},
        "state": state,
    }


def _apply_one(conn: psycopg.Connection, r: Record) -> None:
    if r["op"] == "alert":
        f = {k: v for k, v in r.items() if k != "op"}
        f["raised_at"] = datetime.fromisoformat(f["raised_at"])
        alert_store.insert_alert(conn, **f)
    elif r["op"] == "rec":
        alert_store.append_record(
            conn,
            r["alert_id"],
            r["step"],
            datetime.fromisoformat(r["at"]),
            r["actor"],
            r["note"],
            r["data"],
        )
        if r.get("state"):
            alert_store.set_state(conn, r["alert_id"], r["state"])
    else:
        raise ValueError(f"unknown spool record op {r['op']!r}")


def apply(
    conn: psycopg.Connection, spool: str, records: Sequence[Record], position: tuple[int, int]
) -> tuple[int, int]:
    """Write ``records`` and move the checkpoint to ``position``, atomically.

    Returns (events stored, dead letters stored). Consecutive events go in
    one binary COPY; other records keep their order.
    """
    stored = dead = 0
    with conn.transaction():
        i = 0
        while i < len(records):
            op = records[i]["op"]
            j = i
            while j < len(records) and records[j]["op"] == op and op in ("ev", "dl"):
                j += 1
            if op == "ev":
                stored += write_events(conn, [_event(r) for r in records[i:j]])
            elif op == "dl":
                dead += write_dead_letters(conn, [_dead_letter(r) for r in records[i:j]])
            else:
                _apply_one(conn, records[i])
                j = i + 1
            i = j
        conn.execute(
            'INSERT INTO spool_checkpoint (spool, segment, "offset") VALUES (%s, %s, %s)'
            " ON CONFLICT (spool) DO UPDATE SET segment = excluded.segment,"
            ' "offset" = excluded."offset", updated_at = now()',
            [spool, position[0], position[1]],
        )
    return stored, dead


def checkpoint(conn: psycopg.Connection, spool: str) -> tuple[int, int] | None:
    row = conn.execute(
        'SELECT segment, "offset" FROM spool_checkpoint WHERE spool = %s', [spool]
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else None
