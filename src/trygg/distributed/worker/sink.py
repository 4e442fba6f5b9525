"""The sink: Kafka records -> TimescaleDB, exactly once per record.

The records are the embedded runner's spool records (``trygg.store.spooled``),
written by the same ``spooled.apply``. Its checkpoint, kept in the same
transaction as the records, is here the Kafka offset: one checkpoint per
topic partition, named ``kafka:<topic>:<partition>`` with position
``(0, next offset)``. A batch re-delivered after a crash or a rebalance is
cut at the checkpoint, so even dead letters (plain inserts) are stored once;
a transaction-scoped advisory lock per partition serialises two workers that
briefly both hold a partition during a rebalance. A batch is one transaction
whatever the partitions it holds: one write, every checkpoint moved with it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from trygg import logs
from trygg.store import spooled

log = logs.get("trygg.worker.sink")

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


def checkpoints(
    conn: psycopg.Connection, tps: list[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """The next offset each partition's sink expects (None: nothing stored yet)."""
    cps = spooled.checkpoints(conn, [checkpoint_name(*tp) for tp in tps])
    out: dict[tuple[str, int], int | None] = {}
    for tp in tps:
        cp = cps.get(checkpoint_name(*tp))
        out[tp] = cp[1] if cp else None
    return out


def contiguous(
    items: list[tuple[int, dict[str, Any]]], done: int | None
) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
    """The records to store now, and the first missing offset if there is a hole.

    ``done`` is the checkpoint (next offset expected; None: nothing stored yet).
    Every record of the sink's topics reaches the sink, in offset order, so the
    offsets from the checkpoint on must follow each other. Only that unbroken run
    is stored: a record after a hole waits until the hole is read again, so the
    checkpoint never moves past a record that was not stored (dead letters are
    plain inserts: storing them early and again after the re-read would double them).
    Records below the checkpoint are repeats and are dropped; so are repeated offsets.
    """
    run: list[tuple[int, dict[str, Any]]] = []
    nxt = done
    for off, rec in sorted({off: rec for off, rec in items}.items()):
        if nxt is not None and off < nxt:
            continue  # stored already
        if nxt is not None and off > nxt:
            return run, nxt  # a hole: nxt never arrived
        run.append((off, rec))
        nxt = off + 1
    return run, None


def apply_batch(
    conn: psycopg.Connection,
    by_tp: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]],
    accept_holes: frozenset[tuple[str, int]] = frozenset(),
) -> tuple[int, dict[tuple[str, int], int]]:
    """Store each partition's unbroken run past its checkpoint.

    Returns the events stored and, per partition with a hole, the offset to read
    again from. A partition in ``accept_holes`` (the hole was read again and is
    still there: deleted by retention) is stored past its hole, with an error logged.
    """
    holes: dict[tuple[str, int], int] = {}
    names = {tp: checkpoint_name(*tp) for tp in by_tp}
    with conn.transaction():
        spooled.lock_checkpoints(conn, names.values())
        cps = spooled.checkpoints(conn, list(names.values()))
        todo: list[dict[str, Any]] = []
        positions: dict[str, tuple[int, int]] = {}
        for tp, items in sorted(by_tp.items()):
            cp = cps.get(names[tp])
            done = cp[1] if cp else None
            run, hole = contiguous(items, done)
            if hole is not None and tp in accept_holes and not run:
                first = min(off for off, _ in items if off > hole)
                log.error(
                    "records missing from the topic", checkpoint=names[tp], missing=first - hole
                )
                run, hole = contiguous(items, first)
            if hole is not None:
                holes[tp] = hole
            if not run:
                continue
            todo += [r for _, r in run if r.get("op") in _STORED]
            positions[names[tp]] = (0, run[-1][0] + 1)
        if not positions:
            return 0, holes
        h = _health(todo)
        if h is not None:
            todo.append(h)
        stored, _dead = spooled.apply_many(conn, todo, positions)
    return stored, holes
