"""The access log: who read which resident's data.

The access log is append-only (a trigger refuses UPDATE and DELETE). The API
writes it through the runner's spool (``spooled.access_record``), so a read
is logged even while the database is away, and exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# An access-log row's columns, in the order they are written and read back.
_COLUMNS = ("at", "actor", "role", "action", "resident", "detail")
_COLUMN_LIST = ", ".join(_COLUMNS)


def log_access(
    conn: psycopg.Connection,
    *,
    at: datetime | None = None,
    actor: str,
    role: str,
    action: str,
    resident: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One access-log row (Normen fact sheet 15): who read what. ``at``: when
    (None: now, the transaction's time, as the column's default)."""
    conn.execute(
        f"INSERT INTO access_log ({_COLUMN_LIST}) VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s)",
        [at, actor, role, action, resident, Jsonb(detail or {})],
    )


def read_access_log(
    conn: psycopg.Connection,
    *,
    resident: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int = 500,
    residents: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The newest rows first. ``residents``: only rows about one of these
    residents (a district-scoped auditor's)."""
    where: list[str] = []
    args: list[Any] = []
    if resident is not None:
        where.append("resident = %s")
        args.append(resident)
    if residents is not None:
        where.append("resident = ANY(%s)")
        args.append(list(residents))
    if actor is not None:
        where.append("actor = %s")
        args.append(actor)
    if since is not None:
        where.append("at >= %s")
        args.append(since)
    q = f"SELECT {_COLUMN_LIST} FROM access_log"
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY at DESC, id DESC LIMIT %s"
    args.append(limit)
    return [dict(zip(_COLUMNS, r, strict=True)) for r in conn.execute(q, args)]
