"""Adding API users with a bearer token, and listing them (``trygg users``).

A team leader, specialist or auditor may be scoped to districts (migration
0010) that the registry stored. Signing in, and the users' other changes
(ensured by an identity provider, disabled), are in trygg.store.access.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import psycopg

from trygg.store.access import ROLES, TEAM_ROLES, hash_token

# Roles that may be scoped to districts instead of (or besides) listing teams
# (migration 0010): they then see the teams of those districts only.
DISTRICT_ROLES = ("team_leader", "specialist", "auditor")


def new_token() -> str:
    return "tg_" + secrets.token_urlsafe(32)


def check_districts(conn: psycopg.Connection, role: str, districts: Sequence[str]) -> None:
    """Refuse a district scope for a role that cannot have one, or a district
    that is not stored (``trygg registry load`` stores them)."""
    if not districts:
        return
    if role not in DISTRICT_ROLES:
        raise ValueError(f"{role} cannot be scoped to districts (only {', '.join(DISTRICT_ROLES)})")
    known = {str(r[0]) for r in conn.execute("SELECT id FROM districts").fetchall()}
    unknown = [d for d in districts if d not in known]
    if unknown:
        raise ValueError(
            f"unknown district {', '.join(map(repr, unknown))}"
            f" (stored: {', '.join(sorted(known)) or 'none'}; load the registry first)"
        )


def add_user(
    conn: psycopg.Connection,
    name: str,
    role: str,
    teams: Sequence[str] = (),
    districts: Sequence[str] = (),
) -> str:
    """Create (or replace the token of) a user; returns the token, shown only once.
    ``districts``: scope a team leader, specialist or auditor to these districts."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if role in TEAM_ROLES and not teams and not districts:
        raise ValueError(f"{role} needs at least one team (--team) or district (--district)")
    check_districts(conn, role, districts)
    token = new_token()
    conn.execute(
        "INSERT INTO api_users (name, role, teams, districts, token_hash)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role, teams = excluded.teams,"
        " districts = excluded.districts, token_hash = excluded.token_hash, disabled_at = NULL",
        [name, role, list(teams), list(districts), hash_token(token)],
    )
    return token


def list_users(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT name, role, teams, created_at, disabled_at, districts FROM api_users ORDER BY name"
    ).fetchall()
    return [
        {
            "name": r[0],
            "role": r[1],
            "teams": list(r[2]),
            "created_at": r[3],
            "disabled_at": r[4],
            "districts": list(r[5]),
        }
        for r in rows
    ]
