"""Retention on TimescaleDB (drop_chunks) and plain PostgreSQL (batched DELETE),
and trimming of the hash-chained trail from an anchor (issue 6)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import new_database, trygg_cli
from tests.test_kpi import aid, load_known
from trygg.audit.verify import verify
from trygg.store.migrate import migrate
from trygg.store.retention import RetentionPolicy, run_retention

NOW = datetime(2036, 6, 1, tzinfo=UTC)  # the trail cutoff (10 years) falls on 2026-05-31
POLICY = RetentionPolicy(batch=7)


@pytest.fixture(params=["timescaledb", "plain"])
def any_db(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "timescaledb":
        yield request.getfixturevalue("db")
    else:
        url = new_database(request.getfixturevalue("plain_pg_server"))
        migrate(url)
        yield url


def _fill(url: str) -> None:
    load_known(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for days in (200, 120, 91, 89, 10, 1):  # 3 days x 10 events beyond 90 days
            for i in range(10):
                t = NOW - timedelta(days=days, minutes=i)
                conn.execute(
                    "INSERT INTO events (time, device, event_id, type, resident, received_at)"
                    " VALUES (%s, 'd-1', %s, 'heartbeat', 'r-1', %s)",
                    [t, f"e{days}-{i}", t],
                )
        for days in (40, 31, 29, 1):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (%s, 't', 'x', 'bad')",
                [NOW - timedelta(days=days)],
            )
        for year in (2024, 2025, 2027, 2030):
            conn.execute(
                "INSERT INTO access_log (at, actor, role, action) VALUES (%s, 'a', 'auditor', 'x')",
                [datetime(year, 1, 1, tzinfo=UTC)],
            )


def _count(url: str, q: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(q).fetchone()
        assert row is not None
        return int(row[0])


def test_retention(any_db: str) -> None:
    _fill(any_db)
    with psycopg.connect(any_db, autocommit=True) as conn:
        res = run_retention(conn, POLICY, NOW)
    assert _count(any_db, "SELECT count(*) FROM events") == 30
    assert (
        _count(any_db, f"SELECT count(*) FROM events WHERE time < '{NOW - timedelta(days=90)}'")
        == 0
    )
    if "plain" in any_db or res.events_chunks_dropped == 0:
        assert res.events_deleted == 30
    else:
        assert res.events_chunks_dropped >= 3
    assert res.dead_letters_deleted == 2
    assert _count(any_db, "SELECT count(*) FROM dead_letters") == 2
    # the trail: A1..A6 (closed, before the cutoff) go; the chain stops at A7 (October)
    gone = [aid(f"A{i}") for i in range(1, 7)]
    assert res.alerts_deleted == 6
    assert _count(any_db, "SELECT count(*) FROM alerts") == 6
    assert (
        _count(
            any_db,
            "SELECT count(*) FROM alert_records WHERE alert_id::text IN ("
            + ",".join(f"'{g}'" for g in gone)
            + ")",
        )
        == 0
    )
    assert res.records_deleted == 33  # A1 7, A2 7, A3 4, A4 7, A5 4, A6 4
    assert res.access_log_deleted == 2
    assert _count(any_db, "SELECT count(*) FROM access_log") == 2
    assert ("alert_records", 33) in res.anchors
    with psycopg.connect(any_db) as conn:
        v = verify(conn)
    assert v.ok, v.first_break
    assert {t.table: t.anchor for t in v.tables}["alert_records"] == 33
    # idempotent, and new rows still chain on from the head
    with psycopg.connect(any_db, autocommit=True) as conn:
        again = run_retention(conn, POLICY, NOW)
        conn.execute("INSERT INTO access_log (actor, role, action) VALUES ('b', 'auditor', 'y')")
        assert verify(conn).ok
    assert again.records_deleted == 0 and again.alerts_deleted == 0


def test_retention_refuses_deletes_outside_the_anchor(db: str) -> None:
    load_known(db)
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("SELECT set_config('trygg.retention', 'on', true)")
        conn.execute("DELETE FROM alert_records WHERE chain_seq = 1")


def test_everything_old_leaves_only_the_anchor(db: str) -> None:
    load_known(db)
    with psycopg.connect(db, autocommit=True) as conn:
        run_retention(conn, RetentionPolicy(), datetime(2040, 1, 1, tzinfo=UTC))
        # A11 is still open: its records and everything after them stay
        assert conn.execute("SELECT count(DISTINCT alert_id) FROM alert_records").fetchone() == (2,)
        assert verify(conn).ok


def test_db_retention_command(db: str) -> None:
    out = trygg_cli("db", "retention", env={"TRYGG_DATABASE_URL": db})
    assert "events deleted: 0" in out.stdout


def test_the_runner_schedules_retention_daily_at_half_past_three_local() -> None:
    from datetime import datetime as dt
    from zoneinfo import ZoneInfo

    from trygg.runner.embedded import next_retention_run

    oslo = ZoneInfo("Europe/Oslo")
    assert next_retention_run(dt(2026, 3, 28, 22, 0, tzinfo=oslo)) == dt(
        2026, 3, 29, 3, 30, tzinfo=oslo
    )
    # The night clocks go forward: 03:30 local still exists, one hour less away.
    first = next_retention_run(dt(2026, 3, 29, 1, 0, tzinfo=oslo))
    assert first.utcoffset().total_seconds() == 7200  # type: ignore[union-attr]
    assert next_retention_run(dt(2026, 3, 29, 3, 30, tzinfo=oslo)).day == 30
