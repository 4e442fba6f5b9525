"""API users (hashed tokens) and console sessions: who signs in, as whom.

Sessions (migration 0008, docs/api.md "Sign-in"): a one-time enrolment code
is exchanged once for a device session; an OpenID Connect sign-in or a
console sign-in with a bearer token gives a session too. Only SHA-256s of
codes, secrets and tokens are stored. A session signs in while it is not
revoked, not expired, its user is not disabled and (kind ``token``) the token
it was made from is still the user's.

Adding and listing users is trygg.store.users; the access log (who read which
resident's data) is trygg.store.access_log.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

ROLES = ("care_staff", "team_leader", "specialist", "auditor", "admin")
# Roles that see and act on the alerts of their own teams only.
TEAM_ROLES = ("care_staff", "team_leader")
SESSION_PREFIX = "ts_"  # a session's secret, as the cookie holds it
ENROL_PREFIX = "te_"  # a one-time enrolment code


@dataclass(frozen=True)
class User:
    name: str
    role: str
    teams: tuple[str, ...]
    # Signed in with a session (not a bearer token): its id, kind and end.
    session: str | None = None
    session_kind: str | None = None
    expires_at: datetime | None = None
    # The districts the user is scoped to (migration 0010); ``teams`` then holds
    # its listed teams and every team in those districts when it signed in.
    districts: tuple[str, ...] = ()

    @property
    def scoped(self) -> bool:
        """Sees only ``teams`` (care staff, team leaders, and anyone scoped to
        districts but an admin); else every team."""
        return self.role in TEAM_ROLES or (bool(self.districts) and self.role != "admin")


# The user's teams as it signs in: those listed and those of its districts
# (u: api_users); a team moved to another district moves with it.
_TEAMS = (
    "CASE WHEN cardinality(u.districts) = 0 THEN u.teams ELSE"
    " ARRAY(SELECT DISTINCT x FROM unnest(u.teams"
    " || ARRAY(SELECT t.id FROM teams t WHERE t.district = ANY(u.districts))) x ORDER BY x) END"
)


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no password stretching)."""
    return hashlib.sha256(token.encode()).hexdigest()


def get_user(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    """The user row (never its token), disabled or not; None if there is none."""
    row = conn.execute(
        "SELECT name, role, teams, disabled_at, source, districts FROM api_users WHERE name = %s",
        [name],
    ).fetchone()
    if row is None:
        return None
    return {
        "name": row[0],
        "role": row[1],
        "teams": list(row[2]),
        "disabled_at": row[3],
        "source": row[4],
        "districts": list(row[5]),
    }


def ensure_user(
    conn: psycopg.Connection,
    name: str,
    role: str,
    teams: Sequence[str],
    *,
    source: str,
    update: bool = False,
) -> dict[str, Any]:
    """The user ``name``; created without a bearer token if missing (it signs in
    on an enrolled phone or through the identity provider). ``update``: an
    existing user gets this role and these teams (the identity provider's
    claims); a disabled user stays disabled either way."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if role in TEAM_ROLES and not teams:
        raise ValueError(f"{role} needs at least one team")
    conflict = (
        "DO UPDATE SET role = excluded.role, teams = excluded.teams" if update else "DO NOTHING"
    )
    conn.execute(
        "INSERT INTO api_users (name, role, teams, token_hash, source)"
        f" VALUES (%s, %s, %s, NULL, %s) ON CONFLICT (name) {conflict}",
        [name, role, list(teams), source],
    )
    u = get_user(conn, name)
    assert u is not None
    return u


def disable_user(conn: psycopg.Connection, name: str) -> bool:
    """Disable the user: its token and every session of it stop signing in."""
    cur = conn.execute(
        "UPDATE api_users SET disabled_at = now() WHERE name = %s AND disabled_at IS NULL",
        [name],
    )
    return cur.rowcount > 0


def user_by_token(conn: psycopg.Connection, token: str) -> User | None:
    row = conn.execute(
        f"SELECT u.name, u.role, {_TEAMS}, u.districts FROM api_users u"
        " WHERE u.token_hash = %s AND u.disabled_at IS NULL",
        [hash_token(token)],
    ).fetchone()
    return User(row[0], row[1], tuple(row[2]), districts=tuple(row[3])) if row else None


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


# ------------------------------------------------------------------ sessions

# A session signs in while this holds (s: api_sessions, u: api_users).
_SESSION_VALID = (
    "s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL"
    " AND (s.kind <> 'token' OR s.token_hash = u.token_hash)"
)


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def create_enrolment(
    conn: psycopg.Connection, user: str, *, created_by: str, valid_for: timedelta
) -> tuple[str, dict[str, Any]]:
    """A one-time enrolment code for ``user`` (who must exist and not be
    disabled): (the code, shown once; its row). Enrolments and sessions that
    ended more than a week ago are removed on the way (the access log keeps
    what happened)."""
    u = get_user(conn, user)
    if u is None or u.get("disabled_at") is not None:
        raise ValueError(f"no active user {user!r}")
    conn.execute("DELETE FROM api_enrolments WHERE expires_at < now() - interval '7 days'")
    conn.execute(
        "DELETE FROM api_sessions"
        " WHERE greatest(expires_at, revoked_at) < now() - interval '7 days'"
    )
    code = new_secret(ENROL_PREFIX)
    eid = uuid.uuid4()
    row = conn.execute(
        "INSERT INTO api_enrolments (id, code_hash, user_name, created_by, expires_at)"
        " VALUES (%s, %s, %s, %s, now() + %s) RETURNING created_at, expires_at",
        [eid, hash_token(code), user, created_by, valid_for],
    ).fetchone()
    assert row is not None
    return code, {
        "id": str(eid),
        "user": user,
        "role": u["role"],
        "teams": u["teams"],
        "created_by": created_by,
        "created_at": row[0],
        "expires_at": row[1],
    }


def peek_enrolment(conn: psycopg.Connection, code: str) -> dict[str, Any] | None:
    """What an enrolment code is for, without using it: ``state`` is ``ok``,
    ``used``, ``expired`` or ``disabled`` (its user); None for an unknown code."""
    row = conn.execute(
        "SELECT e.id, e.user_name, e.expires_at, e.used_at, u.disabled_at, u.role, u.teams,"
        " e.expires_at <= now()"
        " FROM api_enrolments e JOIN api_users u ON u.name = e.user_name"
        " WHERE e.code_hash = %s",
        [hash_token(code)],
    ).fetchone()
    if row is None:
        return None
    state = (
        "used"
        if row[3] is not None
        else "disabled"
        if row[4] is not None
        else "expired"
        if row[7]
        else "ok"
    )
    return {
        "id": str(row[0]),
        "user": row[1],
        "expires_at": row[2],
        "used_at": row[3],
        "role": row[5],
        "teams": list(row[6]),
        "state": state,
    }


def exchange_enrolment(
    conn: psycopg.Connection, code: str, *, valid_for: timedelta, label: str
) -> tuple[str | None, dict[str, Any] | None]:
    """Use an enrolment code, once: (the new session's secret, the session) on
    success; (None, what the code was) when it is used, expired or its user
    disabled; (None, None) for an unknown code. Two phones racing with one
    code: one gets the session (the row is locked)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT e.id, e.user_name, e.used_at, e.expires_at <= now(), u.disabled_at"
            " FROM api_enrolments e JOIN api_users u ON u.name = e.user_name"
            " WHERE e.code_hash = %s FOR UPDATE OF e",
            [hash_token(code)],
        ).fetchone()
        if row is None:
            return None, None
        if row[2] is not None or row[3] or row[4] is not None:
            return None, peek_enrolment(conn, code)
        secret, sess = create_session(
            conn,
            row[1],
            kind="enrolled",
            created_by=f"enrolment {row[0]}",
            valid_for=valid_for,
            label=label,
        )
        conn.execute(
            "UPDATE api_enrolments SET used_at = now(), session_id = %s WHERE id = %s",
            [sess["id"], row[0]],
        )
    sess["enrolment"] = str(row[0])
    return secret, sess


def create_session(
    conn: psycopg.Connection,
    user: str,
    *,
    kind: str,
    created_by: str,
    valid_for: timedelta,
    label: str = "",
    token: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new session of ``user``: (its secret, shown once, for the cookie; its row)."""
    secret = new_secret(SESSION_PREFIX)
    sid = uuid.uuid4()
    row = conn.execute(
        "INSERT INTO api_sessions"
        " (id, secret_hash, user_name, kind, label, created_by, expires_at, token_hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, now() + %s, %s) RETURNING created_at, expires_at",
        [
            sid,
            hash_token(secret),
            user,
            kind,
            label[:200],
            created_by,
            valid_for,
            hash_token(token) if token is not None else None,
        ],
    ).fetchone()
    assert row is not None
    return secret, {
        "id": str(sid),
        "user": user,
        "kind": kind,
        "label": label[:200],
        "created_at": row[0],
        "expires_at": row[1],
    }


def user_by_session(conn: psycopg.Connection, secret: str) -> User | None:
    """The session's user, or None for an unknown, revoked or expired session
    (or a disabled user, or a replaced token)."""
    row = conn.execute(
        f"SELECT u.name, u.role, {_TEAMS}, s.id, s.kind, s.expires_at, u.districts"
        " FROM api_sessions s JOIN api_users u ON u.name = s.user_name"
        f" WHERE s.secret_hash = %s AND {_SESSION_VALID}",
        [hash_token(secret)],
    ).fetchone()
    if row is None:
        return None
    return User(row[0], row[1], tuple(row[2]), str(row[3]), row[4], row[5], tuple(row[6]))


def active_session_hashes(conn: psycopg.Connection, hashes: Sequence[str]) -> set[str]:
    """Which of these session-secret hashes still sign someone in (as
    :func:`user_by_session` would)."""
    if not hashes:
        return set()
    rows = conn.execute(
        "SELECT s.secret_hash FROM api_sessions s JOIN api_users u ON u.name = s.user_name"
        f" WHERE s.secret_hash = ANY(%s) AND {_SESSION_VALID}",
        [list(hashes)],
    ).fetchall()
    return {str(r[0]) for r in rows}


def list_sessions(
    conn: psycopg.Connection,
    *,
    user: str | None = None,
    teams: Sequence[str] | None = None,
    active: bool = True,
) -> list[dict[str, Any]]:
    """Sessions, newest first (never their secrets): of ``user``, or of users on
    one of ``teams``; ``active``: only those that still sign in."""
    where: list[str] = []
    args: list[Any] = []
    if user is not None:
        where.append("s.user_name = %s")
        args.append(user)
    if teams is not None:
        where.append("u.teams && %s")
        args.append(list(teams))
    if active:
        where.append(_SESSION_VALID)
    q = (
        "SELECT s.id, s.user_name, u.role, u.teams, s.kind, s.label, s.created_by,"
        " s.created_at, s.expires_at, s.revoked_at, s.revoked_by,"
        f" ({_SESSION_VALID}) AS active"
        " FROM api_sessions s JOIN api_users u ON u.name = s.user_name"
    )
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " ORDER BY s.created_at DESC LIMIT 500"
    cols = (
        "id",
        "user",
        "role",
        "teams",
        "kind",
        "label",
        "created_by",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "active",
    )
    out = []
    for r in conn.execute(q, args):
        d = dict(zip(cols, r, strict=True))
        d["id"] = str(d["id"])
        d["teams"] = list(d["teams"])
        out.append(d)
    return out


def get_session(conn: psycopg.Connection, session_id: str) -> dict[str, Any] | None:
    try:
        uuid.UUID(session_id)
    except ValueError:
        return None
    row = conn.execute(
        "SELECT s.id, s.user_name, u.teams, s.kind, s.revoked_at, s.expires_at"
        " FROM api_sessions s JOIN api_users u ON u.name = s.user_name WHERE s.id = %s",
        [session_id],
    ).fetchone()
    if row is None:
        return None
    return {
        "id": str(row[0]),
        "user": row[1],
        "teams": list(row[2]),
        "kind": row[3],
        "revoked_at": row[4],
        "expires_at": row[5],
    }


def revoke_session(conn: psycopg.Connection, session_id: str, *, by: str) -> bool:
    """Revoke a session now; False if it was revoked already (or is unknown)."""
    cur = conn.execute(
        "UPDATE api_sessions SET revoked_at = now(), revoked_by = %s"
        " WHERE id = %s AND revoked_at IS NULL",
        [by, session_id],
    )
    return cur.rowcount > 0


def revoke_user_sessions(conn: psycopg.Connection, user: str, *, by: str) -> list[str]:
    """Revoke every session of ``user`` that is not revoked yet; their ids."""
    rows = conn.execute(
        "UPDATE api_sessions SET revoked_at = now(), revoked_by = %s"
        " WHERE user_name = %s AND revoked_at IS NULL RETURNING id",
        [by, user],
    ).fetchall()
    return [str(r[0]) for r in rows]
