"""Alerts read back: snapshots, lifecycle records, the outbox's pending rows,
deliveries and a resident's events; and silences, saved and loaded.

Alerts and their records are written by trygg.store.alert_writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from trygg.store.alert_writes import as_datetime


def save_silence(conn: psycopg.Connection, s: dict[str, Any]) -> None:
    """Insert or update a silence (``Silence.model_dump(mode="json")``)."""
    conn.execute(
        "INSERT INTO silences (id, scope, target, starts_at, ends_at, created_by, reason, rules,"
        " ended_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET ends_at = excluded.ends_at,"
        " ended_by = excluded.ended_by, updated_at = now()",
        [
            s["id"],
            s["scope"],
            s["target"],
            as_datetime(s["start"]),
            as_datetime(s["end"]),
            s["created_by"],
            s["reason"],
            list(s.get("rules") or []),
            s.get("ended_by"),
        ],
    )


def _silence_row(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "scope": row[1],
        "target": row[2],
        "start": row[3],
        "end": row[4],
        "created_by": row[5],
        "reason": row[6],
        "rules": list(row[7] or []),
        "ended_by": row[8],
    }


def load_silences(
    conn: psycopg.Connection, *, since: datetime | None = None
) -> list[dict[str, Any]]:
    """Silences that end after ``since`` (all if None), or that name an open alert."""
    q = (
        "SELECT id, scope, target, starts_at, ends_at, created_by, reason, rules, ended_by"
        " FROM silences"
    )
    args: list[Any] = []
    if since is not None:
        q += (
            " WHERE ends_at > %s OR id IN (SELECT silence_id FROM alerts WHERE silence_id IS"
            " NOT NULL AND state NOT IN ('resolved', 'cancelled'))"
        )
        args.append(since)
    q += " ORDER BY starts_at, id"
    return [_silence_row(r) for r in conn.execute(q, args)]


def _record(
    alert_id: str, seq: int | None, step: str, at: datetime, actor: str, note: Any, data: Any
) -> dict[str, Any]:
    """A lifecycle record as read back (``Record.to_dict()``'s shape)."""
    return {
        "alert_id": alert_id,
        "seq": seq,
        "step": step,
        "at": at,
        "actor": actor,
        "note": note or "",
        "data": data or {},
    }


def load_records_for_rebuild(
    conn: psycopg.Connection,
    closed_since: datetime,
    *,
    shadow: bool = False,
    resident: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Records of the open alerts and those closed since ``closed_since``, per alert:
    the routed alerts, or (``shadow=True``) those of a catalogue in shadow mode; all
    residents', or one ``resident``'s (the bridge's relay, docs/distributed.md)."""
    rows = conn.execute(
        "SELECT r.alert_id::text, r.seq, r.step, r.at, r.actor, r.note, r.data"
        " FROM alert_records r JOIN alerts a ON a.id = r.alert_id"
        " WHERE r.seq IS NOT NULL AND (a.state NOT IN ('resolved', 'cancelled')"
        "   OR a.closed_at >= %s) AND a.shadow = %s"
        + (" AND a.resident = %s" if resident is not None else "")
        + " ORDER BY r.alert_id, r.seq",
        [closed_since, shadow] + ([resident] if resident is not None else []),
    ).fetchall()
    out: dict[str, list[dict[str, Any]]] = {}
    for aid, seq, step, at, actor, note, data in rows:
        out.setdefault(aid, []).append(_record(aid, seq, step, at, actor, note, data))
    return list(out.values())


def alert_records(
    conn: psycopg.Connection, alert_id: str, *, include_shadow: bool = True
) -> list[dict[str, Any]]:
    """An alert's records in order (none for a shadow alert unless ``include_shadow``)."""
    q = "SELECT seq, step, at, actor, note, data FROM alert_records WHERE alert_id = %s"
    if not include_shadow:
        q += " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = %s AND a.shadow)"
    rows = conn.execute(
        q + " ORDER BY seq NULLS FIRST, id",
        [alert_id] if include_shadow else [alert_id, alert_id],
    ).fetchall()
    return [_record(alert_id, *r) for r in rows]


def get_snapshot(conn: psycopg.Connection, alert_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT snapshot, id::text, resident, team, rule, code, severity, state, raised_at,"
        " version FROM alerts WHERE id::text = %s",
        [alert_id],
    ).fetchone()
    if row is None:
        return None
    return _snap(row)


def _snap(row: Sequence[Any]) -> dict[str, Any]:
    snap = dict(row[0] or {})
    if not snap:  # written before schema 3
        snap = {
            "id": row[1],
            "resident": row[2],
            "team": row[3],
            "rule": row[4],
            "code": row[5],
            "severity": row[6],
            "state": row[7],
            "raised_at": row[8].isoformat(),
            "version": row[9],
        }
    return snap


def query_alerts(
    conn: psycopg.Connection,
    *,
    teams: Sequence[str] | None = None,
    states: Sequence[str] | None = None,
    severities: Sequence[str] | None = None,
    rules: Sequence[str] | None = None,
    resident: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    flapping: bool | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Alert snapshots, newest first, filtered (None = no filter)."""
    where: list[str] = []
    args: list[Any] = []
    for col, vals in (
        ("team", teams),
        ("state", states),
        ("severity", severities),
        ("rule", rules),
    ):
        if vals is not None:
            where.append(f"{col} = ANY(%s)")
            args.append(list(vals))
    if resident is not None:
        where.append("resident = %s")
        args.append(resident)
    if since is not None:
        where.append("raised_at >= %s")
        args.append(since)
    if until is not None:
        where.append("raised_at < %s")
        args.append(until)
    if flapping is not None:
        where.append("flapping = %s")
        args.append(flapping)
    q = (
        "SELECT snapshot, id::text, resident, team, rule, code, severity, state, raised_at,"
        " version FROM alerts"
    )
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY raised_at DESC LIMIT %s"
    args.append(limit)
    return [_snap(r) for r in conn.execute(q, args)]


def pending_notifications(conn: psycopg.Connection, since: datetime) -> list[dict[str, Any]]:
    """Outbox rows since ``since`` of open alerts that no delivery has reached yet."""
    rows = conn.execute(
        "SELECT n.key, n.alert_id::text, n.action, n.level, n.n, n.target, n.recipient,"
        " n.channel, n.address, n.due_at, n.digest FROM alert_notifications n"
        " JOIN alerts a ON a.id = n.alert_id"
        " WHERE n.due_at >= %s AND a.state IN ('raised', 'notified')"
        " AND NOT EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.key = n.key AND d.ok)"
        " ORDER BY n.due_at",
        [since],
    ).fetchall()
    cols = (
        "key",
        "alert_id",
        "action",
        "level",
        "n",
        "target",
        "recipient",
        "channel",
        "address",
        "due_at",
        "digest",
    )
    return [dict(zip(cols, r, strict=True)) for r in rows]


def deliveries(conn: psycopg.Connection, alert_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT key, channel, address, at, attempts, ok, status, error, latency_ms"
        " FROM alert_deliveries WHERE alert_id = %s ORDER BY at, id",
        [alert_id],
    ).fetchall()
    cols = ("key", "channel", "address", "at", "attempts", "ok", "status", "error", "latency_ms")
    return [dict(zip(cols, r, strict=True)) for r in rows]


def resident_events(
    conn: psycopg.Connection, resident: str, since: datetime, limit: int = 200
) -> list[dict[str, Any]]:
    """A resident's recent events, newest first (for the timeline)."""
    rows = conn.execute(
        "SELECT time, device, event_id, type, value, room FROM events"
        " WHERE resident = %s AND time >= %s ORDER BY time DESC LIMIT %s",
        [resident, since, limit],
    ).fetchall()
    cols = ("time", "device", "event_id", "type", "value", "room")
    return [dict(zip(cols, r, strict=True)) for r in rows]
