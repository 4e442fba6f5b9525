"""Retention: delete what trygg no longer needs, keep what the audit needs.

- Raw events older than ``retention_events_days``: ``drop_chunks`` on
  TimescaleDB (whole one-day chunks, so up to a day more is kept), DELETE in
  batches on plain PostgreSQL.
- Dead letters older than ``retention_dead_letters_days``: DELETE in batches.
- The alert trail (alerts, lifecycle records, exception reports) after
  ``retention_records_days`` counted from an alert's *last* record, and the
  access log after ``retention_access_log_days``.

The trail tables are hash chains (migration 0004). Their oldest rows go only
as a *prefix* of the chain, and only after an anchor (the last removed row's
position and hash) is written to ``chain_anchors`` in the same transaction;
``trygg audit verify`` then starts from that anchor. The append-only trigger
refuses any other delete. See docs/auditing.md for the reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from trygg.store.kpi import has_timescaledb


@dataclass
class RetentionResult:
    events_chunks_dropped: int = 0
    events_deleted: int = 0
    dead_letters_deleted: int = 0
    records_deleted: int = 0
    exceptions_deleted: int = 0
    alerts_deleted: int = 0
    access_log_deleted: int = 0
    anchors: list[tuple[str, int]] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{k.replace('_', ' ')}: {v}" for k, v in vars(self).items() if k != "anchors"]
        return "; ".join(parts)


@dataclass(frozen=True)
class RetentionPolicy:
    events: timedelta = timedelta(days=90)
    dead_letters: timedelta = timedelta(days=30)
    records: timedelta = timedelta(days=3653)
    access_log: timedelta = timedelta(days=3653)
    batch: int = 10000

    @classmethod
    def from_settings(cls, s: Any) -> RetentionPolicy:
        return cls(
            events=timedelta(days=s.retention_events_days),
            dead_letters=timedelta(days=s.retention_dead_letters_days),
            records=timedelta(days=s.retention_records_days),
            access_log=timedelta(days=s.retention_access_log_days),
            batch=s.retention_batch,
        )


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    return bool(row and row[0])


def _delete_batches(
    conn: psycopg.Connection[Any], table: str, column: str, cutoff: datetime, batch: int
) -> int:
    total = 0
    while True:
        with conn.transaction():
            cur = conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s))",
                [cutoff, batch],
            )
            n = cur.rowcount
        total += n
        if n < batch:
            return total


def drop_events(conn: psycopg.Connection[Any], cutoff: datetime, batch: int) -> tuple[int, int]:
    """(chunks dropped, rows deleted) for events older than ``cutoff``."""
    if has_timescaledb(conn):
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
            " WHERE hypertable_name = 'events')"
        ).fetchone()
        if row and row[0]:
            with conn.transaction():
                dropped = conn.execute(
                    "SELECT drop_chunks('events', older_than => %s::timestamptz)", [cutoff]
                ).fetchall()
            return len(dropped), 0
    return 0, _delete_batches(conn, "events", "time", cutoff, batch)


def _trim_chain(
    conn: psycopg.Connection[Any],
    table: str,
    keep_from_sql: str,
    params: list[Any],
    cutoff: datetime,
    batch: int,
    result: RetentionResult,
) -> int:
    """Remove the prefix of ``table``'s chain before the first row to keep.

    ``keep_from_sql`` selects the smallest chain_seq that must stay (NULL: none
    must stay). Works in batches, each one anchor + delete in one transaction.
    """
    total = 0
    while True:
        with conn.transaction():
            keep = conn.execute(keep_from_sql, params).fetchone()
            last = conn.execute(f"SELECT max(chain_seq) FROM {table}").fetchone()
            first = conn.execute(f"SELECT min(chain_seq) FROM {table}").fetchone()
            if not last or last[0] is None or not first or first[0] is None:
                return total
            limit = (int(keep[0]) - 1) if keep and keep[0] is not None else int(last[0])
            upto = min(limit, int(first[0]) + batch - 1)
            if upto < int(first[0]):
                return total
            row = conn.execute(
                f"SELECT hash FROM {table} WHERE chain_seq = %s",
                [upto],
            ).fetchone()
            if row is None or row[0] is None:
                raise RuntimeError(f"{table}: no hashed row at chain position {upto}")
            n_row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE chain_seq <= %s",
                [upto],
            ).fetchone()
            n = int(n_row[0]) if n_row else 0
            conn.execute(
                "INSERT INTO chain_anchors (tbl, chain_seq, hash, rows_removed, cutoff, reason)"
                " VALUES (%s, %s, %s, %s, %s, 'retention')",
                [table, upto, row[0], n, cutoff],
            )
            conn.execute("SELECT set_config('trygg.retention', 'on', true)")
            conn.execute(
                f"DELETE FROM {table} WHERE chain_seq <= %s",
                [upto],
            )
            result.anchors.append((table, upto))
        total += n
        if upto >= limit:
            return total


def trim_alert_trail(
    conn: psycopg.Connection[Any], cutoff: datetime, batch: int, result: RetentionResult
) -> None:
    """Alerts whose last record is older than ``cutoff`` and that are closed go,
    with their records, exception reports, notifications and deliveries."""
    # The first record that must stay: a record of an alert that is still open
    # or has any record at/after the cutoff.
    keep_records = (
        "SELECT min(r.chain_seq) FROM alert_records r"
        " WHERE r.alert_id IN (SELECT alert_id FROM alert_records WHERE at >= %s)"
        " OR r.alert_id IN (SELECT id FROM alerts WHERE state NOT IN ('resolved', 'cancelled'))"
    )
    result.records_deleted += _trim_chain(
        conn, "alert_records", keep_records, [cutoff], cutoff, batch, result
    )
    keep_exc = (
        "SELECT min(e.chain_seq) FROM alert_exceptions e"
        " WHERE e.recorded_at >= %s OR EXISTS"
        " (SELECT 1 FROM alert_records r WHERE r.alert_id = e.alert_id)"
    )
    result.exceptions_deleted += _trim_chain(
        conn, "alert_exceptions", keep_exc, [cutoff], cutoff, batch, result
    )
    # Alert rows with nothing left that refers to them.
    with conn.transaction():
        conn.execute("SELECT set_config('trygg.retention', 'on', true)")
        conn.execute("SELECT set_config('trygg.retention_cutoff', %s, true)", [cutoff.isoformat()])
        gone = (
            "SELECT a.id FROM alerts a WHERE a.raised_at < %s"
            " AND a.state IN ('resolved', 'cancelled')"
            " AND NOT EXISTS (SELECT 1 FROM alert_records r WHERE r.alert_id = a.id)"
            " AND NOT EXISTS (SELECT 1 FROM alert_exceptions e WHERE e.alert_id = a.id)"
        )
        if _exists(conn, "alert_deliveries"):
            conn.execute(f"DELETE FROM alert_deliveries WHERE alert_id IN ({gone})", [cutoff])
        if _exists(conn, "alert_notifications"):
            conn.execute(f"DELETE FROM alert_notifications WHERE alert_id IN ({gone})", [cutoff])
        cur = conn.execute(f"DELETE FROM alerts WHERE id IN ({gone})", [cutoff])
        result.alerts_deleted += cur.rowcount


def run_retention(conn: psycopg.Connection[Any], settings: Any, now: datetime) -> RetentionResult:
    """Apply the retention policy of ``settings`` as of ``now``; idempotent.

    ``conn`` must be in autocommit mode or idle: every batch is its own
    transaction, so a long run never holds locks for long.
    """
    policy = (
        settings
        if isinstance(settings, RetentionPolicy)
        else RetentionPolicy.from_settings(settings)
    )
    r = RetentionResult()
    r.events_chunks_dropped, r.events_deleted = drop_events(conn, now - policy.events, policy.batch)
    r.dead_letters_deleted = _delete_batches(
        conn, "dead_letters", "received_at", now - policy.dead_letters, policy.batch
    )
    trim_alert_trail(conn, now - policy.records, policy.batch, r)
    r.access_log_deleted = _trim_chain(
        conn,
        "access_log",
        "SELECT min(chain_seq) FROM access_log WHERE at >= %s",
        [now - policy.access_log],
        now - policy.access_log,
        policy.batch,
        r,
    )
    return r
