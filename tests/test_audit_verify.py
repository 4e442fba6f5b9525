"""The tamper-evident trail: hash chains written by the database, checked by
``trygg audit verify`` (issue 6)."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.test_kpi import aid, load_known
from trygg.audit.verify import verify
from trygg.store.access_log import log_access
from trygg.store.audit import add_exception, chain_rows


def _untouched(url: str) -> None:
    load_known(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(5):
            log_access(
                conn,
                actor=f"auditor-{i}",
                role="auditor",
                action="report",
                resident="r-0001",
                detail={"n": i},
            )
        add_exception(
            conn,
            alert_id=aid("A4"),
            kind="answer",
            cause="busy",
            action="staffing",
            recorded_by="leader-1",
        )


def _row_ids(url: str, table: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r.id for r in chain_rows(conn, table)]


def _tamper(url: str, *sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # as a superuser: no triggers
        for q in sql:
            conn.execute(q)


def test_verify_passes_on_untouched_data(db: str) -> None:
    _untouched(db)
    with psycopg.connect(db) as conn:
        res = verify(conn)
    assert res.ok, res.first_break
    rows = {t.table: t.rows for t in res.tables}
    assert rows == {"alert_records": 52, "access_log": 5, "alert_exceptions": 1}
    out = trygg_cli("audit", "verify", env={"TRYGG_DATABASE_URL": db})
    assert "alert_records: ok, 52 rows" in out.stdout


def test_the_chain_links_every_row(db: str) -> None:
    _untouched(db)
    with psycopg.connect(db) as conn:
        rows = list(chain_rows(conn, "alert_records"))
    assert [r.chain_seq for r in rows] == list(range(1, len(rows) + 1))
    assert all(r.hash == r.recomputed for r in rows)
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(rows))


def test_update_is_refused_by_the_trigger(db: str) -> None:
    _untouched(db)
    with psycopg.connect(db) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("UPDATE alert_records SET actor = 'x' WHERE chain_seq = 3")


def test_verify_names_an_updated_row(db: str) -> None:
    _untouched(db)
    target = _row_ids(db, "alert_records")[9]
    _tamper(db, f"UPDATE alert_records SET at = at - interval '2 minutes' WHERE id = {target}")
    out = trygg_cli("audit", "verify", env={"TRYGG_DATABASE_URL": db}, check=False)
    assert out.returncode == 1
    assert (
        f"alert_records: BROKEN: alert_records: row id {target} (chain position 10)" in out.stdout
    )
    assert "changed" in out.stdout
    assert "access_log: ok" in out.stdout


def test_verify_names_the_row_after_a_delete(db: str) -> None:
    _untouched(db)
    ids = _row_ids(db, "alert_records")
    _tamper(db, f"DELETE FROM alert_records WHERE id = {ids[20]}")
    with psycopg.connect(db) as conn:
        res = verify(conn)
    b = res.first_break
    assert b is not None and b.table == "alert_records"
    assert b.row_id == ids[21] and "positions 21..21 are missing" in b.problem
    assert f"after row id {ids[19]}" in b.problem


def test_verify_names_a_reordered_row(db: str) -> None:
    _untouched(db)
    ids = _row_ids(db, "alert_records")
    a, b = ids[30], ids[31]
    # swap the two rows' places in the chain (their positions and links)
    _tamper(
        db,
        f"UPDATE alert_records SET chain_seq = -1 WHERE id = {a}",
        f"UPDATE alert_records SET chain_seq = 31 WHERE id = {b}",
        f"UPDATE alert_records SET chain_seq = 32 WHERE id = {a}",
    )
    out = trygg_cli(
        "audit", "verify", "--table", "alert_records", env={"TRYGG_DATABASE_URL": db}, check=False
    )
    assert out.returncode == 1
    assert f"row id {b} (chain position 31)" in out.stdout
    assert "removed, inserted or reordered" in out.stdout


def test_verify_access_log_and_exceptions(db: str) -> None:
    _untouched(db)
    ids = _row_ids(db, "access_log")
    _tamper(db, f"UPDATE access_log SET resident = 'r-9999' WHERE id = {ids[2]}")
    with psycopg.connect(db) as conn:
        res = verify(conn)
    assert not res.ok
    assert str(res.first_break).startswith(f"access_log: row id {ids[2]} (chain position 3)")
    _tamper(db, "UPDATE alert_exceptions SET cause = 'nobody knows'")
    with psycopg.connect(db) as conn:
        assert verify(conn, ("alert_exceptions",)).first_break is not None


def test_concurrent_writers_keep_one_chain(db: str) -> None:
    import threading

    load_known(db)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                for i in range(25):
                    with conn.transaction():
                        log_access(
                            conn, actor=f"w{n}", role="care_staff", action="view", resident=f"r-{i}"
                        )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with psycopg.connect(db) as conn:
        res = verify(conn, ("access_log",))
    assert res.ok and res.tables[0].rows == 100
