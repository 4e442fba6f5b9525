"""The sink: Kafka records -> TimescaleDB, exactly once per record.

The records are the embedded runner's spool records (``trygg.store.spooled``),
written by the same ``spooled.apply``. Its checkpoint, kept in the same
transaction as the records, is here the Kafka offset: one checkpoint per
topic partition, named ``kafka:<topic>:<partition>`` with position
``(0, next offset)``. A batch re-delivered after a crash or a rebalance is
cut at the checkpoint, so even dead letters (plain inserts) are stored once;
a transaction-scoped advisory lock per partition serialises two workers that
briefly both hold a partition during a rebalance.
"""

from __future__ import annotations

from typing import Any

import psycopg

from trygg.store import spooled

_STORED = ("ev", "dl", "achg", "outbox", "dlv", "sil", "acc", "rec", "alert")


def checkpoint_name(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def _health(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Newest (last seen, battery) per device of a batch's events."""
    devices: dict[str, tuple[str | None, float | None, bool | None]] = {}
    for r in records:
        if r.get("op") != "ev":
            continue
        prev = devices.get(r["d"])
        battery = r.get("v") if r.get("y") == "battery" else None
        if prev is None or (r["rx"] or "") >= (prev[0] or ""):
            devices[r["d"]] = (
                r["rx"],
                battery if battery is not None else (prev[1] if prev else None),
                None,
            )
    return spooled.health_record(devices) if devices else None


def apply_batch(
    conn: psycopg.Connection, by_tp: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]]
) -> int:
    """Store each partition's records past its checkpoint; returns events stored."""
    stored = 0
    for (topic, partition), items in by_tp.items():
        name = checkpoint_name(topic, partition)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
            cp = spooled.checkpoint(conn, name)
            done = cp[1] if cp else 0
            todo = [r for off, r in items if off >= done and r.get("op") in _STORED]
            last = max(off for off, _ in items) + 1
            if last <= done:
                continue
            h = _health(todo)
            if h is not None:
                todo.append(h)
            n, _dead = spooled.apply(conn, name, todo, (0, last))
            stored += n
    return stored
