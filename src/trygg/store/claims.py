"""Who sends an alarm's first notification: a bridge's relay or a worker's notify
agent (migration 0012; docs/distributed.md, "The relay").

The first to insert a notification key's row sends it. A relay claims all of an
alert's first notifications or none, pages, then marks them sent; a worker that
finds a relay's row unsent after ``lease_s`` takes it over (the relay died
between its claim and its page). A worker's own row never stops a worker: a
notification read again after a crash is sent again, as without a relay.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg

RELAY_LEASE_S = 10.0  # a relay's claim holds a worker's copy this long (then it takes over)
WORKER = "worker"  # the claimant name of every worker's notify agent

MINE = "mine"  # send it
RELAYED = "relayed"  # a relay sent it: settled


def alert_claimed(conn: psycopg.Connection, alert_id: str) -> bool:
    """Whether any first notification of the alert is claimed (by anyone)."""
    row = conn.execute(
        "SELECT 1 FROM notification_claims WHERE alert_id = %s LIMIT 1", [alert_id]
    ).fetchone()
    return row is not None


def claim_for_relay(conn: psycopg.Connection, alert_id: str, keys: list[str], by: str) -> bool:
    """The alert's first notifications ``keys`` for the relay ``by``: all of them, or
    none (False) if any is claimed already."""
    try:
        with conn.transaction():
            for key in keys:
                cur = conn.execute(
                    "INSERT INTO notification_claims (key, alert_id, by, sent)"
                    " VALUES (%s, %s, %s, false) ON CONFLICT (key) DO NOTHING RETURNING key",
                    [key, alert_id, by],
                )
                if cur.fetchone() is None:
                    raise _Taken
    except _Taken:
        return False
    return True


def relay_settled(conn: psycopg.Connection, delivered: list[str], failed: list[str]) -> None:
    """The relay has paged: what it delivered is sent; what failed is given back (the
    row deleted), so that the notify agent sends it, with its retries."""
    with conn.transaction():
        conn.execute("UPDATE notification_claims SET sent = true WHERE key = ANY(%s)", [delivered])
        conn.execute("DELETE FROM notification_claims WHERE key = ANY(%s) AND NOT sent", [failed])


def claim_for_worker(
    conn: psycopg.Connection, key: str, alert_id: str, lease_s: float
) -> str | datetime:
    """A notify agent's claim of a first notification: ``MINE`` (send it), ``RELAYED``
    (a relay sent it), or the time until which a relay paging it holds it."""
    cur = conn.execute(
        "INSERT INTO notification_claims (key, alert_id, by, sent) VALUES (%s, %s, %s, true)"
        " ON CONFLICT (key) DO NOTHING RETURNING key",
        [key, alert_id, WORKER],
    )
    if cur.fetchone() is not None:
        return MINE
    row = conn.execute(
        "SELECT by, at, sent FROM notification_claims WHERE key = %s", [key]
    ).fetchone()
    if row is None or row[0] == WORKER:
        return MINE
    _by, at, sent = row
    if sent:
        return RELAYED
    took = conn.execute(
        "UPDATE notification_claims SET by = %s, at = now(), sent = true"
        " WHERE key = %s AND NOT sent AND at < now() - %s RETURNING key",
        [WORKER, key, timedelta(seconds=lease_s)],
    ).fetchone()
    if took is not None:
        return MINE
    until: datetime = at + timedelta(seconds=lease_s)
    return until


def forget_old_claims(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete the claims older than ``older_than`` (their notifications are long settled)."""
    cur = conn.execute("DELETE FROM notification_claims WHERE at < now() - %s", [older_than])
    return cur.rowcount


class _Taken(Exception):
    """A key of the relay's claim was taken already: the whole claim is undone."""
