"""store: the only module that speaks SQL.

Everything trygg keeps lives in PostgreSQL (TimescaleDB where available):
migrations, batched event and dead-letter writes, the registry, alerts and
their append-only lifecycle records. Functions take an open psycopg
connection, so the caller decides about pooling and transactions.
"""

from typing import Any

import psycopg

DB_AWAY: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.AdminShutdown,
    psycopg.errors.QueryCanceled,
)
"""The errors of a database that is away (down, restarting, a statement cut off
by a restart), as opposed to one that refuses what it was asked: worth retrying."""


def ping(conn: psycopg.Connection[Any]) -> None:
    """Ask the database the smallest question (readiness probes): returns if it
    answers, raises one of :data:`DB_AWAY` if it is away."""
    conn.execute("SELECT 1").fetchone()
