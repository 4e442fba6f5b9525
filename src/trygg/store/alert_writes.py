"""Writing alerts: their rows, append-only lifecycle records, the notification
outbox and deliveries (what the runner's spool applies, trygg.store.spooled)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def insert_alert(
    conn: psycopg.Connection,
    *,
    id: str,
    resident: str,
    team: str,
    rule: str,
    catalogue_version: str,
    code: str,
    severity: str,
    events: Sequence[str],
    raised_at: datetime,
    state: str,
    device: str | None = None,
    title: str = "",
    suppressed: bool = False,
    suppressed_reason: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO alerts (id, resident, team, rule, catalogue_version, code, severity, events,"
        " device, title, raised_at, state, suppressed, suppressed_reason)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            id,
            resident,
            team,
            rule,
            catalogue_version,
            code,
            severity,
            list(events),
            device,
            title,
            raised_at,
            state,
            suppressed,
            suppressed_reason,
        ],
    )


def append_record(
    conn: psycopg.Connection,
    alert_id: str,
    step: str,
    at: datetime,
    actor: str,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append one lifecycle record (raised, notified, acknowledged, ...)."""
    conn.execute(
        "INSERT INTO alert_records (alert_id, step, at, actor, note, data)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [alert_id, step, at, actor, note, Jsonb(data or {})],
    )


def set_state(conn: psycopg.Connection, alert_id: str, state: str) -> None:
    conn.execute(
        "UPDATE alerts SET state = %s, version = version + 1, updated_at = now() WHERE id = %s",
        [state, alert_id],
    )


# --------------------------------------------------------------------------
# The alert service's persistence (schema 3). Every write is idempotent, so
# the spool may replay it: records are unique by (alert_id, seq), snapshots
# only move forward in version, outbox rows are keyed by idempotency key.

_SNAPSHOT_COLUMNS = (
    "id, resident, team, rule, catalogue_version, code, severity, events, device, title,"
    " raised_at, state, repeat_count, suppressed, suppressed_reason, flapping, assignee,"
    " outcome, shadow, version, snapshot, acknowledged_by, cancel_reason, closed_at,"
    " escalation_level, held_until, silence_id"
)


def as_datetime(v: Any) -> datetime | None:
    """A time from a snapshot or record: a datetime as it is, an ISO string parsed."""
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(str(v))


def upsert_snapshot(conn: psycopg.Connection, snap: dict[str, Any]) -> None:
    """Insert or move forward an alert's snapshot (``Alert.to_dict()``)."""
    conn.execute(
        f"INSERT INTO alerts ({_SNAPSHOT_COLUMNS}) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        "  %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
        " repeat_count = excluded.repeat_count, events = excluded.events,"
        " suppressed = excluded.suppressed, suppressed_reason = excluded.suppressed_reason,"
        " flapping = excluded.flapping, assignee = excluded.assignee,"
        " outcome = excluded.outcome, version = excluded.version, snapshot = excluded.snapshot,"
        " acknowledged_by = excluded.acknowledged_by, cancel_reason = excluded.cancel_reason,"
        " closed_at = excluded.closed_at, escalation_level = excluded.escalation_level,"
        " held_until = excluded.held_until, silence_id = excluded.silence_id,"
        " updated_at = now()"
        " WHERE alerts.version < excluded.version",
        [
            snap["id"],
            snap["resident"],
            snap["team"],
            snap["rule"],
            snap["catalogue_version"],
            snap["code"],
            snap["severity"],
            list(snap.get("events") or []),
            snap.get("device"),
            snap.get("title") or "",
            as_datetime(snap["raised_at"]),
            snap["state"],
            int(snap.get("repeat_count") or 0),
            bool(snap.get("suppressed")),
            snap.get("suppressed_reason"),
            bool(snap.get("flapping")),
            snap.get("assignee"),
            snap.get("outcome"),
            bool(snap.get("shadow")),
            int(snap["version"]),
            Jsonb(snap),
            snap.get("acknowledged_by"),
            snap.get("cancel_reason"),
            as_datetime(snap.get("closed_at")),
            int(snap.get("escalation_level") or 0),
            as_datetime(snap.get("held_until")),
            snap.get("silence_id"),
        ],
    )


def append_records(conn: psycopg.Connection, records: Sequence[dict[str, Any]]) -> None:
    """Append lifecycle records (``Record.to_dict()``); a replayed one is skipped."""
    if not records:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_records (alert_id, seq, step, at, actor, note, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (alert_id, seq) DO NOTHING",
            [
                (
                    r["alert_id"],
                    int(r["seq"]),
                    r["step"],
                    as_datetime(r["at"]),
                    r["actor"],
                    r.get("note") or None,
                    Jsonb(dict(r.get("data") or {})),
                )
                for r in records
            ],
        )


def insert_notifications(conn: psycopg.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """The outbox: notifications an escalation step called for (by idempotency key)."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_notifications (key, alert_id, action, level, n, target, recipient,"
            " channel, address, due_at, digest) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s) ON CONFLICT (key) DO NOTHING",
            [
                (
                    r["key"],
                    r["alert_id"],
                    r["action"],
                    int(r["level"]),
                    int(r["n"]),
                    r["target"],
                    r["recipient"],
                    r["channel"],
                    r["address"],
                    as_datetime(r["due_at"]),
                    bool(r.get("digest")),
                )
                for r in rows
            ],
        )


def insert_delivery(conn: psycopg.Connection, d: dict[str, Any]) -> None:
    """One delivery of a notification: channel, attempts and outcome."""
    conn.execute(
        "INSERT INTO alert_deliveries (key, alert_id, channel, address, at, attempts, ok,"
        " status, error, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            d["key"],
            d["alert_id"],
            d["channel"],
            d["address"],
            as_datetime(d["at"]),
            int(d["attempts"]),
            bool(d["ok"]),
            d.get("status"),
            d.get("error"),
            d.get("latency_ms"),
        ],
    )
