"""Store operations as spool records, and applying them exactly once.

The runner turns what it wants stored (events, dead letters, alerts, their
lifecycle records) into plain JSON-able records for its local spool
(trygg.runner.spool). ``apply`` writes a run of records and advances the
spool's checkpoint in the same transaction: a crash between the two is
impossible, so replaying the spool after a crash never applies a record twice.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg

from trygg.model import DeadLetter
from trygg.store import access_log, alert_writes
from trygg.store import alerts as alert_store
from trygg.store.events import (
    Row,
    StoredEvent,
    write_dead_letters,
    write_event_rows,
)
from trygg.store.spool_poison import POISON, poison_letter, unreadable_letter

Record = dict[str, Any]


def event_record(s: StoredEvent) -> Record:
    """An event for the spool. Times and enums stay objects: orjson writes
    them as ISO 8601 strings and values, which ``_event_row`` passes to the store."""
    e = s.event
    return {
        "op": "ev",
        "d": e.device,
        "i": e.id,
        "y": e.type,
        "t": e.time,
        "r": e.resident,
        "k": e.kind,
        "m": e.room,
        "v": e.value,
        "p": e.position,
        "rx": s.received_at,
        "late": s.late,
    }


def _event_row(r: Record) -> Row:
    """A spooled event as a row for the store, its times still ISO strings."""
    p = r.get("p")
    lat, lon = p if p else (None, None)
    return (r["t"], r["d"], r["i"], r["y"], r["r"], r["v"], r["m"], lat, lon, r["rx"], r["late"])


def dead_letter_record(d: DeadLetter) -> Record:
    """A dead letter for the spool: its payload (at most 64 KiB) and the whole's size and hash."""
    return {
        "op": "dl",
        "topic": d.topic,
        "payload": base64.b64encode(d.payload).decode(),
        "reason": d.reason,
        "rx": d.received_at.isoformat(),
        "device": d.device,
        "size": d.size,
        "sha256": d.sha256.hex(),
    }


def _dead_letter(r: Record) -> DeadLetter:
    # A record spooled before "size" and "sha256" holds the whole payload:
    # DeadLetter then takes both from it (and keeps only its first 64 KiB).
    return DeadLetter(
        r["topic"],
        base64.b64decode(r["payload"]),
        r["reason"],
        datetime.fromisoformat(r["rx"]),
        r["device"],
        r.get("size", -1),
        bytes.fromhex(r.get("sha256", "")),
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


def health_record(devices: dict[str, tuple[str | None, float | None, bool | None]]) -> Record:
    """Newest (last seen ISO time, battery %, online) per device from one batch."""
    return {"op": "health", "devices": devices}


def _merge_health(into: dict[str, list[Any]], r: Record) -> None:
    """Fold one batch's health facts into the newest per device."""
    for d, (t, b, o) in r["devices"].items():
        cur = into.setdefault(d, [None, None, None])
        if t is not None and (cur[0] is None or t > cur[0]):
            cur[0] = t
        if b is not None:
            cur[1] = b
        if o is not None:
            cur[2] = o


def _apply_health(conn: psycopg.Connection, merged: dict[str, list[Any]]) -> None:
    """One UPDATE for every device of a drained run (not one per device and batch)."""
    if not merged:
        return
    ids = list(merged)
    conn.execute(
        "UPDATE devices d SET last_seen = greatest(d.last_seen, u.seen),"
        " battery = coalesce(u.battery, d.battery), online = coalesce(u.online, d.online)"
        " FROM unnest(%b::text[], %b::timestamptz[], %b::real[], %b::boolean[])"
        " AS u(id, seen, battery, online) WHERE d.id = u.id",
        [
            ids,
            [datetime.fromisoformat(merged[d][0]) if merged[d][0] else None for d in ids],
            [merged[d][1] for d in ids],
            [merged[d][2] for d in ids],
        ],
    )


# --- the alert service (schema 3): idempotent, so replay is harmless -------


def alert_change_record(snapshot: dict[str, Any], records: list[dict[str, Any]]) -> Record:
    """An alert's new lifecycle records (``Record.to_dict()``) and its snapshot
    (``Alert.to_dict()``): records unique by (alert_id, seq), snapshot by id and
    only moved forward in version."""
    return {"op": "achg", "snap": snapshot, "recs": records}


def notifications_record(rows: list[dict[str, Any]]) -> Record:
    """Outbox rows for an escalation step's notifications (keyed by idempotency key)."""
    return {"op": "outbox", "rows": rows}


def delivery_record(**fields: Any) -> Record:
    """One delivery of a notification: key, alert_id, channel, address, at, attempts, ok…"""
    return {
        "op": "dlv",
        **{k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()},
    }


def silence_record(silence: dict[str, Any]) -> Record:
    """A silence as created or ended (``Silence.model_dump(mode="json")``)."""
    return {"op": "sil", "s": silence}


def access_record(
    at: datetime,
    actor: str,
    role: str,
    action: str,
    resident: str | None,
    detail: dict[str, Any] | None = None,
) -> Record:
    """A read of a resident's data for the access log."""
    return {
        "op": "acc",
        "at": at.isoformat(),
        "actor": actor,
        "role": role,
        "action": action,
        "resident": resident,
        "detail": detail or {},
    }


def _apply_one(conn: psycopg.Connection, r: Record) -> None:
    op = r["op"]
    if op == "achg":
        alert_writes.upsert_snapshot(conn, r["snap"])
        alert_writes.append_records(conn, r["recs"])
    elif op == "outbox":
        alert_writes.insert_notifications(conn, r["rows"])
    elif op == "dlv":
        alert_writes.insert_delivery(conn, r)
    elif op == "sil":
        alert_store.save_silence(conn, r["s"])
    elif op == "acc":
        access_log.log_access(
            conn,
            at=datetime.fromisoformat(r["at"]),
            actor=r["actor"],
            role=r["role"],
            action=r["action"],
            resident=r["resident"],
            detail=r["detail"],
        )
    elif op == "alert":
        f = {k: v for k, v in r.items() if k != "op"}
        f["raised_at"] = datetime.fromisoformat(f["raised_at"])
        alert_writes.insert_alert(conn, **f)
    elif op == "rec":
        alert_writes.append_record(
            conn,
            r["alert_id"],
            r["step"],
            datetime.fromisoformat(r["at"]),
            r["actor"],
            r["note"],
            r["data"],
        )
        if r.get("state"):
            alert_writes.set_state(conn, r["alert_id"], r["state"])
    else:
        raise ValueError(f"unknown spool record op {r['op']!r}")


class CheckpointMoved(Exception):
    """Another drainer stored from this spool since we read the checkpoint."""

    def __init__(self, at: tuple[int, int]) -> None:
        super().__init__(f"the spool checkpoint is at {at}")
        self.at = at


def _write(conn: psycopg.Connection, records: Sequence[Record]) -> tuple[int, int]:
    """Write a run of records (no checkpoint): (events stored, dead letters stored).

    Events, dead letters and device health depend on nothing else in the run,
    so each kind goes in as one statement (one COPY for all the events); alert
    rows and lifecycle records keep their order among themselves.
    """
    events: list[Row] = []
    letters: list[DeadLetter] = []
    health: dict[str, list[Any]] = {}
    ordered: list[Record] = []
    for r in records:
        op = r["op"]
        if op == "ev":
            events.append(_event_row(r))
        elif op == "dl":
            letters.append(_dead_letter(r))
        elif op == "health":
            _merge_health(health, r)
        elif op == "unreadable":
            letters.append(unreadable_letter(r))
        else:
            ordered.append(r)
    stored = write_event_rows(conn, events)
    dead = write_dead_letters(conn, letters)
    _apply_health(conn, health)
    for r in ordered:
        _apply_one(conn, r)
    return stored, dead


def _isolate(
    conn: psycopg.Connection, records: Sequence[Record], poison: list[DeadLetter]
) -> tuple[int, int]:
    """Write ``records``, each half in a savepoint, splitting until every record
    the database refuses stands alone; those go to ``poison`` as dead letters.
    Order is kept: the halves are written first to last."""
    try:
        with conn.transaction():
            return _write(conn, records)
    except POISON as exc:
        if conn.broken:
            raise
        if len(records) == 1:
            poison.append(poison_letter(records[0], exc))
            return 0, 0
    mid = len(records) // 2
    s1, d1 = _isolate(conn, records[:mid], poison)
    s2, d2 = _isolate(conn, records[mid:], poison)
    return s1 + s2, d1 + d2


def apply(
    conn: psycopg.Connection,
    spool: str,
    records: Sequence[Record],
    position: tuple[int, int],
    start: tuple[int, int] | None = None,
    on_poison: Callable[[DeadLetter], None] | None = None,
) -> tuple[int, int]:
    """Write ``records`` and move the checkpoint to ``position``, atomically.

    ``start``, if given, is where the records begin: they are applied only if
    the stored checkpoint is still there (else ``CheckpointMoved``), under a
    lock on the spool's name, so two drainers of one spool never store a
    record twice. Returns (events stored, dead letters stored).

    A record the database refuses (``POISON``) never blocks the spool: the run
    is written again with the records split in savepoint-guarded halves until
    each refused record stands alone, and each is stored as a dead letter with
    the database's reason (``on_poison`` is told of each). The rest of the run
    is stored as usual, in the same transaction as the checkpoint.
    """
    return _apply(
        conn, records, {spool: position}, lambda: _check_start(conn, spool, start), on_poison
    )


def apply_many(
    conn: psycopg.Connection,
    records: Sequence[Record],
    positions: Mapping[str, tuple[int, int]],
) -> tuple[int, int]:
    """``apply`` for several checkpoints at once: the records of several spools (the
    distributed sink's topic partitions) written together, and each checkpoint moved
    to its position, atomically. The caller holds the checkpoints
    (``lock_checkpoints``) in the same transaction. One write and one savepoint for a
    whole batch, where a transaction per partition cost nine round trips each."""
    return _apply(conn, records, positions, lambda: None, None)


def _apply(
    conn: psycopg.Connection,
    records: Sequence[Record],
    positions: Mapping[str, tuple[int, int]],
    check: Callable[[], None],
    on_poison: Callable[[DeadLetter], None] | None,
) -> tuple[int, int]:
    try:
        with conn.transaction():
            check()
            stored, dead = _write(conn, records)
            _move_checkpoints(conn, positions)
        return stored, dead
    except POISON:
        if conn.broken:
            raise
    poison: list[DeadLetter] = []
    with conn.transaction():
        check()
        stored, dead = _isolate(conn, records, poison)
        for letter in poison:
            try:
                with conn.transaction():
                    dead += write_dead_letters(conn, [letter])
            except POISON:
                if conn.broken:
                    raise
                # Not even as a dead letter (cannot happen with cleaned text, but the
                # spool must never stop on it): said in the log, by position only.
                letter = dataclasses.replace(letter, payload=b"", reason="unstorable record")
            if on_poison is not None:
                on_poison(letter)
        _move_checkpoints(conn, positions)
    return stored, dead


def lock_checkpoints(conn: psycopg.Connection, names: Iterable[str]) -> None:
    """Hold checkpoints ``names`` for the rest of this transaction: the distributed
    sink's writers of one partition take turns, so a checkpoint read and moved in the
    same transaction is never moved by another writer in between. One round trip,
    always in the order of the names, so two writers that briefly share partitions
    (a rebalance) never wait for each other in a circle."""
    conn.execute(
        "SELECT count(pg_advisory_xact_lock(hashtext(n)))"
        " FROM (SELECT n FROM unnest(%s::text[]) AS n ORDER BY n) AS ordered",
        [sorted(set(names))],
    )


def _check_start(conn: psycopg.Connection, spool: str, start: tuple[int, int] | None) -> None:
    if start is None:
        return
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('trygg spool ' || %s))", [spool])
    at = checkpoint(conn, spool)
    if at is not None and at != start:
        raise CheckpointMoved(at)


def _move_checkpoints(conn: psycopg.Connection, positions: Mapping[str, tuple[int, int]]) -> None:
    names = list(positions)
    conn.execute(
        'INSERT INTO spool_checkpoint (spool, segment, "offset")'
        " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])"
        " ON CONFLICT (spool) DO UPDATE SET segment = excluded.segment,"
        ' "offset" = excluded."offset", updated_at = now()',
        [names, [positions[n][0] for n in names], [positions[n][1] for n in names]],
    )


def checkpoint(conn: psycopg.Connection, spool: str) -> tuple[int, int] | None:
    return checkpoints(conn, [spool]).get(spool)


def checkpoints(conn: psycopg.Connection, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``checkpoint`` of several in one query (a name with none is left out)."""
    rows = conn.execute(
        'SELECT spool, segment, "offset" FROM spool_checkpoint WHERE spool = ANY(%s)',
        [list(names)],
    ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
