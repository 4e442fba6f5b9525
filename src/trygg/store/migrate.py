"""Versioned SQL migrations: ``trygg db migrate``.

Migrations are the numbered ``migrations/NNNN_name.sql`` files of this
package, applied in order, each in its own transaction, under an advisory lock
so that two processes starting at once do not race. Applying is idempotent;
a database whose schema is newer than this trygg knows is refused rather than
half-understood.

Roles (migration 0007, docs/auditing.md): the migrating login becomes a member
of ``trygg_owner``, and after every run that applied something
``trygg_apply_roles()`` hands every table, view, sequence and function to
``trygg_owner`` and grants ``trygg_app`` and ``trygg_reader`` their share, so
a table added by a later migration is covered without it having to know. The
migrating login may be a superuser (the demo, the tests) or a member of
``trygg_owner`` with CREATE on the schema (docker compose).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7472_7967  # "tryg"


class MigrationError(RuntimeError):
    """The database cannot be brought to this trygg's schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("trygg.store.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for i, mig in enumerate(found, start=1):
        if mig.version != i:
            raise MigrationError(
                f"migration numbers must be 1, 2, 3...; found {mig.version} at {i}"
            )
    return found


def _holds(conn: psycopg.Connection[Any], query: str) -> bool:
    """True when ``query``, one value in one row, answers true."""
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    """True when the timescaledb extension is installed in this database."""
    return _holds(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")


def timescaledb_available(conn: psycopg.Connection) -> bool:
    """True when the server has TimescaleDB preloaded (so CREATE EXTENSION works),
    or the extension is already in this database (a role that is not a superuser
    may not read shared_preload_libraries, and cannot create the extension)."""
    if has_timescaledb(conn):
        return True
    readable = _holds(
        conn,
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"
        " FROM pg_roles WHERE rolname = current_user",
    )
    return readable and _holds(
        conn,
        "SELECT current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'"
        " AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )


def apply_roles(conn: psycopg.Connection) -> bool:
    """Run ``trygg_apply_roles()`` (ownership and grants) if the schema has it."""
    if not _holds(conn, "SELECT to_regprocedure('trygg_apply_roles()') IS NOT NULL"):
        return False
    with conn.transaction():
        conn.execute("SELECT trygg_apply_roles()")
    return True


def schema_version(conn: psycopg.Connection) -> int:
    if not _holds(conn, "SELECT to_regclass('trygg_schema') IS NOT NULL"):
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM trygg_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(url: str, use_timescaledb: bool | None = None) -> list[Migration]:
    """Bring the database at ``url`` to the newest schema; return what was applied.

    ``use_timescaledb=None`` detects the extension; False forces plain tables.
    """
    known = migrations()
    applied: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS trygg_schema (version integer PRIMARY KEY,"
                " name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = schema_version(conn)
            if current > len(known):
                raise MigrationError(
                    f"the database schema is version {current}, newer than this trygg knows"
                    f" ({len(known)}): upgrade trygg before running it against this database"
                )
            tsdb = timescaledb_available(conn) if use_timescaledb is None else use_timescaledb
            for m in known[current:]:
                with conn.transaction():
                    conn.execute(
                        "SELECT set_config('trygg.timescaledb', %s, true)",
                        ["on" if tsdb else "off"],
                    )
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO trygg_schema (version, name, checksum) VALUES (%s, %s, %s)",
                        [m.version, m.name, m.checksum],
                    )
                applied.append(m)
            if applied:
                apply_roles(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied


def uses_hypertable(conn: psycopg.Connection) -> bool:
    return has_timescaledb(conn) and _holds(
        conn,
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'events')",
    )
