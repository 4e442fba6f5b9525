"""API users (hashed tokens) and the access log: who read which resident's data.

The access log is append-only (a trigger refuses UPDATE and DELETE). The API
writes it through the runner's spool (``spooled.access_record``), so a read
is logged even while the database is away, and exactly once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ROLES = ("care_staff", "specialist", "auditor", "admin")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    teams: tuple[str, ...]


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tg_" + secrets.token_urlsafe(32)


def add_user(conn: psycopg.Connection, name: str, role: str, teams: Sequence[str] = ()) -> str:
    """Create (or replace the token of) a user; returns the token, shown only once."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if role == "care_staff" and not teams:
        raise ValueError("care staff need at least one team (--team)")
    token = new_token()
    conn.execute(
        "INSERT INTO api_users (name, role, teams, token_hash) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role, teams = excluded.teams,"
        " token_hash = excluded.token_hash, disabled_at = NULL",
        [name, role, list(teams), hash_token(token)],
    )
    return token


def disable_user(conn: psycopg.Connection, name: str) -> bool:
    cur = conn.execute(
        "UPDATE api_users SET disabled_at = now() WHERE name = %s AND disabled_at IS NULL",
        [name],
    )
    return cur.rowcount > 0


def list_users(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT name, role, teams, created_at, disabled_at FROM api_users ORDER BY name"
    ).fetchall()
    return [
        {"name": r[0], "role": r[1], "teams": list(r[2]), "created_at": r[3], "disabled_at": r[4]}
        for r in rows
    ]


def user_by_token(conn: psycopg.Connection, token: str) -> User | None:
    row = conn.execute(
        "SELECT name, role, teams FROM api_users WHERE token_hash = %s AND disabled_at IS NULL",
        [hash_token(token)],
    ).fetchone()
    return User(row[0], row[1], tuple(row[2])) if row else None


def active_token_hashes(conn: psycopg.Connection, hashes: Sequence[str]) -> set[str]:
    """Which of these token hashes still sign someone in (as :func:`user_by_token`
    would): the API checks its open live streams with one query a second."""
    if not hashes:
        return set()
    rows = conn.execute(
        "SELECT token_hash FROM api_users WHERE token_hash = ANY(%s) AND disabled_at IS NULL",
        [list(hashes)],
    ).fetchall()
    return {str(r[0]) for r in rows}


def log_access(
    conn: psycopg.Connection,
    *,
    at: datetime,
    actor: str,
    role: str,
    action: str,
    resident: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO access_log (at, actor, role, action, resident, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [at, actor, role, action, resident, Jsonb(detail or {})],
    )


def read_access_log(
    conn: psycopg.Connection,
    *,
    resident: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[Any] = []
    if resident is not None:
        where.append("resident = %s")
        args.append(resident)
    if actor is not None:
        where.append("actor = %s")
        args.append(actor)
    if since is not None:
        where.append("at >= %s")
        args.append(since)
    q = "SELECT at, actor, role, action, resident, detail FROM access_log"
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY at DESC, id DESC LIMIT %s"
    args.append(limit)
    cols = ("at", "actor", "role", "action", "resident", "detail")
    return [dict(zip(cols, r, strict=True)) for r in conn.execute(q, args)]
