"""The distributed sink stores each partition's records once, and never past a hole.

Faust can drop a record on its way to the sink (a delivery cut short by a
rebalance) and still commit past it; the integration test lost events that way.
The sink stores only the unbroken run of offsets from its checkpoint and asks
for the rest to be read again. Against a real TimescaleDB (the ``db`` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from tests.distributed_stack import count
from trygg.distributed.worker.holes import Holes
from trygg.distributed.worker.sink import apply_batch, checkpoint_name, contiguous
from trygg.model import DeadLetter
from trygg.store import spooled

TOPIC = "trygg-dead-letters"


def dl(n: int) -> dict[str, Any]:
    return spooled.dead_letter_record(
        DeadLetter(f"trygg/t/devices/d{n}/events", b"{", f"bad {n}", datetime.now(UTC), None)
    )


def batch(*offsets: int) -> dict[tuple[str, int], list[tuple[int, dict[str, Any]]]]:
    return {(TOPIC, 0): [(o, dl(o)) for o in offsets]}


def test_contiguous_run_stops_at_the_first_hole() -> None:
    items = [(o, {"o": o}) for o in (5, 3, 4, 4, 7, 8)]
    run, hole = contiguous(items, 3)
    assert [o for o, _ in run] == [3, 4, 5]
    assert hole == 6
    assert contiguous(items, None)[1] == 6  # nothing stored yet: starts at the first
    run, hole = contiguous([(1, {}), (2, {})], 3)  # all repeats
    assert run == [] and hole is None


def test_a_hole_is_read_again_and_nothing_is_stored_twice(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        assert apply_batch(conn, batch(0, 1, 2)) == (0, {})
        # 3 and 4 never arrived: 5 and 6 wait, the checkpoint stays at 3
        holes = apply_batch(conn, batch(5, 6))[1]
        assert holes == {(TOPIC, 0): 3}
        assert count(db, "SELECT count(*) FROM dead_letters") == 3
        assert spooled.checkpoint(conn, checkpoint_name(TOPIC, 0)) == (0, 3)
        # the re-read brings 2..6 again: 3..6 are stored, 2 is a repeat
        assert apply_batch(conn, batch(2, 3, 4, 5, 6))[1] == {}
    assert count(db, "SELECT count(*) FROM dead_letters") == 7
    assert count(db, "SELECT count(DISTINCT reason) FROM dead_letters") == 7


def test_a_hole_that_stays_after_reading_again_is_accepted(db: str) -> None:
    """Records deleted by the topic's retention while no worker ran never come back."""
    with psycopg.connect(db, autocommit=True) as conn:
        apply_batch(conn, batch(0))
        assert apply_batch(conn, batch(9, 10))[1] == {(TOPIC, 0): 1}
        holes = apply_batch(conn, batch(9, 10), frozenset({(TOPIC, 0)}))[1]
        assert holes == {}
        assert spooled.checkpoint(conn, checkpoint_name(TOPIC, 0)) == (0, 11)
    assert count(db, "SELECT count(*) FROM dead_letters") == 3


def test_holes_are_asked_for_again_after_a_while_and_checked_after_three() -> None:
    h = Holes(retry_s=1.0, check_after=3)
    assert h.ask("k", 5, 0.0)
    assert not h.ask("k", 5, 0.5)  # the re-read is on its way
    assert h.ask("k", 5, 1.5)
    assert h.pending("k") == 5 and not h.stubborn("k")
    assert h.ask("k", 5, 3.0)
    assert h.stubborn("k")  # time to ask the broker whether 5 is still in the topic
    assert h.ask("k", 7, 3.1) and not h.stubborn("k")  # a new hole starts over
    h.closed("k")
    assert h.pending("k") is None


def ev_rec(eid: str) -> dict[str, Any]:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).isoformat()
    return {
        "op": "ev",
        "d": "bed-0001",
        "i": eid,
        "y": "heartbeat",
        "t": now,
        "r": "r-0001",
        "k": "bed",
        "m": None,
        "v": None,
        "p": None,
        "rx": now,
        "late": False,
    }


def test_a_batch_across_partitions_is_one_write_with_every_checkpoint(db: str) -> None:
    """A batch holds records of several topic partitions; it is stored in one
    transaction. A record PostgreSQL refuses (NUL in an event id) becomes a dead
    letter and stops nothing, a partition with a hole waits at its checkpoint, and
    every other partition's checkpoint moves with its rows."""
    events = "trygg-events"
    with psycopg.connect(db, autocommit=True) as conn:
        before = count(db, "SELECT count(*) FROM dead_letters")
        by_tp = {
            (events, 2): [(0, ev_rec("p2-0")), (1, ev_rec("p2-\x00")), (2, ev_rec("p2-2"))],
            (events, 1): [(0, ev_rec("p1-0"))],
            (TOPIC, 3): [(0, dl(0)), (2, dl(2))],  # 1 never arrived
        }
        stored, holes = apply_batch(conn, by_tp)
        assert holes == {(TOPIC, 3): 1}
        assert stored == 3
        ids = {r[0] for r in conn.execute("SELECT event_id FROM events").fetchall()}
        assert {"p2-0", "p2-2", "p1-0"} <= ids
        # the refused record, and the dead letter before the hole
        assert count(db, "SELECT count(*) FROM dead_letters") == before + 2
        assert spooled.checkpoint(conn, checkpoint_name(events, 2)) == (0, 3)
        assert spooled.checkpoint(conn, checkpoint_name(events, 1)) == (0, 1)
        assert spooled.checkpoint(conn, checkpoint_name(TOPIC, 3)) == (0, 1)
        # the same batch again (a re-delivery) stores nothing twice
        assert apply_batch(conn, by_tp)[0] == 0
        assert count(db, "SELECT count(*) FROM dead_letters") == before + 2
