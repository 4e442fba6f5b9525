"""The audit trail's SQL: hash chains, exception reports (the access log's rows:
trygg.store.access_log).

The chains themselves are built by the database (migration 0004's
``trygg_chain_link`` trigger); this module reads them back for verification,
with the hash recomputed by the same SQL function that wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

CHAINED_TABLES = ("alert_records", "access_log", "alert_exceptions")
EXCEPTION_KINDS = ("answer", "arrival", "completion", "other")


@dataclass(frozen=True, slots=True)
class ChainRow:
    id: int
    chain_seq: int | None
    prev_hash: bytes | None
    hash: bytes | None
    recomputed: bytes | None


@dataclass(frozen=True, slots=True)
class Anchor:
    chain_seq: int
    hash: bytes
    reason: str
    rows_removed: int


def anchors(conn: psycopg.Connection[Any], table: str) -> list[Anchor]:
    """The table's chain anchors, oldest first."""
    return [
        Anchor(int(r[0]), bytes(r[1]), r[2], int(r[3]))
        for r in conn.execute(
            "SELECT chain_seq, hash, reason, rows_removed FROM chain_anchors WHERE tbl = %s"
            " ORDER BY chain_seq",
            [table],
        )
    ]


def chain_rows(conn: psycopg.Connection[Any], table: str, batch: int = 20000) -> Iterator[ChainRow]:
    """Every row of a chained table in chain order (unchained rows first), streamed,
    with its hash recomputed from its current content."""
    if table not in CHAINED_TABLES:
        raise ValueError(f"{table} is not a chained table")
    q = (
        f"SELECT id, chain_seq, prev_hash, hash,"
        f" sha256(prev_hash || convert_to(trygg_chain_text(t), 'UTF8'))"
        f" FROM {table} t ORDER BY chain_seq NULLS FIRST, id"
    )
    with conn.transaction(), conn.cursor(name=f"verify_{table}") as cur:
        cur.itersize = batch
        cur.execute(q)
        for r in cur:
            yield ChainRow(
                int(r[0]),
                None if r[1] is None else int(r[1]),
                None if r[2] is None else bytes(r[2]),
                None if r[3] is None else bytes(r[3]),
                None if r[4] is None else bytes(r[4]),
            )


def chain_row_at(
    conn: psycopg.Connection[Any], table: str, seq: int
) -> tuple[int, bytes | None] | None:
    """The id and stored hash of the row at chain position ``seq`` of ``table``,
    or None if no row holds that position (an anchor file's head, checked)."""
    if table not in CHAINED_TABLES:
        raise ValueError(f"{table} is not a chained table")
    row = conn.execute(f"SELECT id, hash FROM {table} WHERE chain_seq = %s", [seq]).fetchone()
    if row is None:
        return None
    return int(row[0]), None if row[1] is None else bytes(row[1])


def database_name(conn: psycopg.Connection[Any]) -> str | None:
    """The name of the database ``conn`` is connected to; anchor files record it,
    so that a file checked against another database is noticed."""
    row = conn.execute("SELECT current_database()").fetchone()
    return row[0] if row else None


def chain_head(conn: psycopg.Connection[Any], table: str) -> tuple[int, bytes]:
    row = conn.execute("SELECT seq, hash FROM trygg_chain_head(%s)", [table]).fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


def add_exception(
    conn: psycopg.Connection[Any],
    *,
    alert_id: str,
    kind: str,
    cause: str,
    action: str,
    recorded_by: str,
    outcome: str | None = None,
    at: datetime | None = None,
) -> int:
    """Record an exception report (cause, action, outcome) for an alert; return its id."""
    if kind not in EXCEPTION_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EXCEPTION_KINDS)}")
    row = conn.execute(
        "INSERT INTO alert_exceptions (alert_id, kind, cause, action, outcome, recorded_by,"
        " recorded_at) VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s, now())) RETURNING id",
        [alert_id, kind, cause, action, outcome, recorded_by, at],
    ).fetchone()
    assert row is not None
    return int(row[0])


def alert_exists(conn: psycopg.Connection[Any], alert_id: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM alerts WHERE id::text = %s)", [alert_id]
    ).fetchone()
    return bool(row and row[0])


def exception_reports(
    conn: psycopg.Connection[Any],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    alert_id: str | None = None,
) -> list[dict[str, Any]]:
    """Recorded exception reports with their alert's team, rule and raise time."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if start is not None:
        where.append("a.raised_at >= %s")
        params.append(start)
    if end is not None:
        where.append("a.raised_at < %s")
        params.append(end)
    if alert_id is not None:
        where.append("e.alert_id::text = %s")
        params.append(alert_id)
    with conn.cursor(row_factory=dict_row) as cur:
        return list(
            cur.execute(
                "SELECT e.id, e.alert_id::text AS alert_id, a.team, a.rule, a.severity,"
                " a.raised_at, e.kind, e.cause, e.action, e.outcome, e.recorded_by,"
                " e.recorded_at FROM alert_exceptions e JOIN alerts a ON a.id = e.alert_id"
                f" WHERE {' AND '.join(where)} ORDER BY e.id",
                params,
            ).fetchall()
        )


def alerts_for_export(
    conn: psycopg.Connection[Any], start: datetime, end: datetime, team: str | None = None
) -> list[dict[str, Any]]:
    """Non-shadow alerts raised in ``[start, end)`` with their records, for the FHIR export."""
    params: list[Any] = [start, end]
    team_sql = ""
    if team:
        team_sql = " AND team = %s"
        params.append(team)
    with conn.cursor(row_factory=dict_row) as cur:
        alerts = list(
            cur.execute(
                "SELECT id::text AS id, resident, team, rule, catalogue_version, code, severity,"
                " events, device, title, raised_at, state, suppressed, outcome,"
                # the device's kind picks a kind's own VKP code (a dispenser's T.1 is 3.10)
                " (SELECT kind FROM devices d WHERE d.id = alerts.device) AS device_kind"
                f" FROM alerts WHERE raised_at >= %s AND raised_at < %s AND NOT shadow{team_sql}"
                " ORDER BY raised_at, id",
                params,
            ).fetchall()
        )
        by_id = {a["id"]: a for a in alerts}
        for a in alerts:
            a["records"] = []
        if alerts:
            for r in cur.execute(
                "SELECT alert_id::text AS alert_id, step, at, actor, note, data FROM alert_records"
                " WHERE alert_id = ANY(%s::uuid[]) ORDER BY alert_id, at, id",
                [list(by_id)],
            ):
                by_id[r.pop("alert_id")]["records"].append(r)
    return alerts


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table]
        )
    }


ALERT_COPY_COLUMNS = (
    "id, resident, team, rule, catalogue_version, code, severity, events, device, title,"
    " raised_at, state, suppressed, suppressed_reason, outcome, shadow, version"
)


def copy_alert_history(
    conn: psycopg.Connection[Any],
    alerts: Any,
    records: Any,
) -> tuple[int, int]:
    """Bulk-write alerts and their records with COPY (tests, benchmarks, imports).

    ``alerts``: iterable of tuples in ``ALERT_COPY_COLUMNS`` order; ``records``:
    iterable of ``(alert_id, seq, step, at, actor, note, data_json_text)``. The
    chain trigger runs for every record, as for any other writer. Returns the
    numbers of rows written.
    """
    with_seq = "seq" in _columns(conn, "alert_records")
    na = nr = 0
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY alerts ({ALERT_COPY_COLUMNS}) FROM STDIN") as cp:
            for a in alerts:
                cp.write_row(a)
                na += 1
        cols = (
            "alert_id, seq, step, at, actor, note, data"
            if with_seq
            else ("alert_id, step, at, actor, note, data")
        )
        with cur.copy(f"COPY alert_records ({cols}) FROM STDIN") as cp:
            for r in records:
                cp.write_row(r if with_seq else (r[0], *r[2:]))
                nr += 1
    return na, nr
