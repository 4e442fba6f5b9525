"""Alerts and their append-only lifecycle records."""

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
