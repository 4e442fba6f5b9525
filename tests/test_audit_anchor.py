"""``trygg audit anchor`` and ``trygg audit verify --anchor FILE`` (issue 16):
the chain heads kept outside the database catch what the chain alone cannot,
a wiped table and a chain cut back at its end."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tests.conftest import trygg_cli
from tests.test_kpi import load_known
from trygg.audit.verify import ANCHOR_FORMAT
from trygg.store.access_log import log_access
from trygg.store.retention import RetentionPolicy, run_retention


def _fill(url: str, n: int = 5) -> None:
    load_known(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(n):
            log_access(conn, actor=f"nurse-{i}", role="care_staff", action="view", resident="r-1")


def _tamper(url: str, *sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a superuser: no triggers
        for q in sql:
            conn.execute(q)


def _cli(url: str, *args: str) -> tuple[int, str, str]:
    out = trygg_cli(*args, env={"TRYGG_DATABASE_URL": url}, check=False)
    return out.returncode, out.stdout, out.stderr


def test_anchor_writes_the_heads_and_verify_reaches_them(db: str, tmp_path: Path) -> None:
    _fill(db)
    f = tmp_path / "heads.json"
    code, out, err = _cli(db, "audit", "anchor", "--out", str(f))
    assert code == 0, err
    assert f"wrote the heads to {f}: alert_records 52 " in out
    doc = json.loads(f.read_text())
    assert doc["format"] == ANCHOR_FORMAT
    assert doc["heads"]["access_log"]["seq"] == 5 and len(doc["heads"]["access_log"]["hash"]) == 64
    assert doc["heads"]["alert_exceptions"] == {
        "seq": 0,
        "hash": doc["heads"]["alert_exceptions"]["hash"],
        "rows": 0,
        "anchor": 0,
    }
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 0, out
    assert "access_log: ok, 5 rows from anchor 0; head 5" in out
    assert "reaches the head in heads.json (5," in out
    # the chain grows on: still fine
    with psycopg.connect(db, autocommit=True) as conn:
        log_access(conn, actor="x", role="auditor", action="report")
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 0 and "access_log: ok, 6 rows" in out


def test_verify_warns_of_a_file_written_for_another_database(db: str, tmp_path: Path) -> None:
    _fill(db)
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    doc = json.loads(f.read_text())
    this = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    assert doc["database"] == this
    code, _, err = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 0 and "warning" not in err
    f.write_text(json.dumps(doc | {"database": "elsewhere"}))
    code, _, err = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 0
    assert f"warning: heads.json was written for database 'elsewhere', this is {this!r}" in err


def test_verify_with_anchor_names_a_wiped_table(db: str, tmp_path: Path) -> None:
    _fill(db)
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    _tamper(db, "TRUNCATE access_log")
    # the chain alone: an empty chain is a sound chain
    code, out, _ = _cli(db, "audit", "verify")
    assert code == 0 and "access_log: ok, 0 rows" in out
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 1
    assert (
        "access_log: BROKEN: access_log: heads.json (written " in out
        and "has its head at chain position 5, the table ends at 0:"
        " 5 rows at the end are missing, the table was wiped"
        in out
    ), out
    assert "alert_records: ok, 52 rows" in out


def test_verify_with_anchor_names_a_chain_cut_back(db: str, tmp_path: Path) -> None:
    _fill(db)
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    _tamper(db, "DELETE FROM alert_records WHERE chain_seq > 49")
    code, out, _ = _cli(db, "audit", "verify", "--table", "alert_records")
    assert code == 0  # no gap: the chain alone cannot tell
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f), "--table", "alert_records")
    assert code == 1
    assert "alert_records: BROKEN: alert_records: heads.json" in out
    assert "3 rows at the end are missing, the chain was cut back to position 49" in out


def test_verify_with_anchor_names_a_rewritten_end(db: str, tmp_path: Path) -> None:
    """Cut back, then written on through the chain trigger: a sound chain again,
    as long as the anchored head, but not the same rows."""
    _fill(db)
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    _tamper(db, "DELETE FROM access_log WHERE chain_seq > 3")
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(2):
            log_access(conn, actor="forger", role="care_staff", action="view", resident=f"r-{i}")
        row = conn.execute("SELECT id FROM access_log WHERE chain_seq = 5").fetchone()
    assert row is not None
    code, out, _ = _cli(db, "audit", "verify")
    assert code == 0
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 1
    assert f"access_log: BROKEN: access_log: row id {row[0]} (chain position 5): not the row" in out
    assert "rewritten" in out


def test_a_head_removed_by_retention_is_no_break(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for day in (1, 2, 3):
            conn.execute(
                "INSERT INTO access_log (at, actor, role, action) VALUES (%s, 'a', 'auditor', 'x')",
                [datetime(2001, 1, day, tzinfo=UTC)],
            )
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    with psycopg.connect(db, autocommit=True) as conn:
        log_access(conn, actor="b", role="auditor", action="report")
        res = run_retention(conn, RetentionPolicy(), datetime.now(UTC))
    assert res.access_log_deleted == 3
    code, out, _ = _cli(db, "audit", "verify", "--anchor", str(f), "--table", "access_log")
    assert code == 0, out
    assert "access_log: ok, 1 rows from anchor 3; head 4" in out
    assert "the head in heads.json (3) was since removed by retention" in out


def test_anchor_keeps_the_evidence(db: str, tmp_path: Path) -> None:
    """An anchor run after a wipe refuses to overwrite the heads that show it."""
    _fill(db)
    f = tmp_path / "heads.json"
    assert _cli(db, "audit", "anchor", "--out", str(f))[0] == 0
    before = f.read_text()
    _tamper(db, "TRUNCATE access_log")
    code, out, err = _cli(db, "audit", "anchor", "--out", str(f))
    assert code == 1
    assert "access_log: BROKEN" in out and "the table was wiped" in out
    assert f"not anchoring a broken chain; {f} left as it was" in err
    assert f.read_text() == before


def test_anchor_refuses_a_broken_chain_and_writes_to_stdout(db: str, tmp_path: Path) -> None:
    _fill(db)
    code, out, _ = _cli(db, "audit", "anchor", "--out", "-")
    assert code == 0 and json.loads(out)["heads"]["access_log"]["seq"] == 5
    _tamper(db, "UPDATE access_log SET actor = 'x' WHERE chain_seq = 2")
    f = tmp_path / "heads.json"
    code, out, err = _cli(db, "audit", "anchor", "--out", str(f))
    assert code == 1 and "access_log: BROKEN" in out and "not anchoring a broken chain" in err
    assert not f.exists()


def test_verify_refuses_a_file_that_is_no_anchor(db: str, tmp_path: Path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"heads": {}}')
    code, _, err = _cli(db, "audit", "verify", "--anchor", str(f))
    assert code == 1 and "not an anchor file" in err
    code, _, err = _cli(db, "audit", "verify", "--anchor", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read it" in err
