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
``trygg audit verify`` then starts from that anchor. The chain's head never
goes.

Every removal is done by the database owner's SECURITY DEFINER functions
``trygg_retention_*()`` (migration 0007), so the application role needs no
DELETE privilege and cannot write anchors: the functions remove only rows
older than the retention in ``retention_policy`` (which only the owner
writes). The cutoffs computed here from the settings are a request: for any
role but the owner the database applies the earlier of the two, so the
application's settings may keep more, never less. See docs/auditing.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg


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
    # data for which the database kept more than asked (its retention_policy)
    kept_longer: list[str] = field(default_factory=list)

    def note_cutoff(self, data: str, asked: datetime, applied: datetime | None) -> None:
        # a minute's slack: the database's clock and ours need not agree to the second
        if (
            applied is not None
            and asked - applied > timedelta(minutes=1)
            and data not in self.kept_longer
        ):
            self.kept_longer.append(data)

    def summary(self) -> str:
        parts = [
            f"{k.replace('_', ' ')}: {v}"
            for k, v in vars(self).items()
            if k not in ("anchors", "kept_longer")
        ]
        text = "; ".join(parts)
        if self.kept_longer:
            text += (
                "; the database's retention policy kept more than the settings asked of: "
                + ", ".join(self.kept_longer)
            )
        return text


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


def _batches(
    conn: psycopg.Connection[Any], sql: str, params: list[Any], batch: int
) -> tuple[int, datetime | None]:
    """Call a one-batch retention function until a batch comes back short:
    (rows removed, the cutoff the database applied)."""
    total = 0
    applied = None
    while True:
        with conn.transaction():
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        n, applied = int(row[0]), row[1]
        total += n
        if n < batch:
            return total, applied


def drop_events(
    conn: psycopg.Connection[Any],
    cutoff: datetime,
    batch: int,
    result: RetentionResult | None = None,
) -> tuple[int, int]:
    """(chunks dropped, rows deleted) for events older than ``cutoff``."""
    chunks = rows = 0
    while True:
        with conn.transaction():
            row = conn.execute(
                "SELECT chunks, removed, applied FROM trygg_retention_events(%s, %s)",
                [cutoff, batch],
            ).fetchone()
        assert row is not None
        chunks += int(row[0])
        rows += int(row[1])
        if result is not None:
            result.note_cutoff("events", cutoff, row[2])
        if int(row[1]) < batch:
            return chunks, rows


def _trim_chain(
    conn: psycopg.Connection[Any],
    table: str,
    cutoff: datetime,
    batch: int,
    result: RetentionResult,
) -> int:
    """Remove the prefix of ``table``'s chain that the database's rules allow,
    one anchored batch per transaction."""
    total = 0
    while True:
        with conn.transaction():
            row = conn.execute(
                "SELECT upto, removed, more, applied FROM trygg_retention_chain(%s, %s, %s)",
                [table, cutoff, batch],
            ).fetchone()
        assert row is not None
        upto, removed, more, applied = row
        result.note_cutoff(table, cutoff, applied)
        if upto is None:
            return total
        result.anchors.append((table, int(upto)))
        total += int(removed)
        if not more:
            return total


def trim_alert_trail(
    conn: psycopg.Connection[Any], cutoff: datetime, batch: int, result: RetentionResult
) -> None:
    """Alerts whose last record is older than ``cutoff`` and that are closed go,
    with their records, exception reports, notifications and deliveries."""
    result.records_deleted += _trim_chain(conn, "alert_records", cutoff, batch, result)
    result.exceptions_deleted += _trim_chain(conn, "alert_exceptions", cutoff, batch, result)
    with conn.transaction():
        row = conn.execute(
            "SELECT removed, applied FROM trygg_retention_alerts(%s)", [cutoff]
        ).fetchone()
    assert row is not None
    result.alerts_deleted += int(row[0])


def set_policy(conn: psycopg.Connection[Any], policy: RetentionPolicy) -> None:
    """Write ``policy`` as the database's retention (the owner only: the
    application role may read it, not change it)."""
    with conn.transaction():
        for data, keep in (
            ("events", policy.events),
            ("dead_letters", policy.dead_letters),
            ("records", policy.records),
            ("access_log", policy.access_log),
        ):
            conn.execute(
                "UPDATE retention_policy SET keep = %s, set_by = session_user, set_at = now()"
                " WHERE data = %s",
                [keep, data],
            )


def stored_policy(conn: psycopg.Connection[Any]) -> dict[str, timedelta]:
    """The retention the database enforces, by kind of data."""
    return {str(r[0]): r[1] for r in conn.execute("SELECT data, keep FROM retention_policy")}


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
    r.events_chunks_dropped, r.events_deleted = drop_events(
        conn, now - policy.events, policy.batch, r
    )
    r.dead_letters_deleted, applied = _batches(
        conn,
        "SELECT removed, applied FROM trygg_retention_dead_letters(%s, %s)",
        [now - policy.dead_letters, policy.batch],
        policy.batch,
    )
    r.note_cutoff("dead_letters", now - policy.dead_letters, applied)
    trim_alert_trail(conn, now - policy.records, policy.batch, r)
    r.access_log_deleted = _trim_chain(conn, "access_log", now - policy.access_log, policy.batch, r)
    return r
