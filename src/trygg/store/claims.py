"""Who sends an alarm's first notification: a bridge's relay or a worker's notify
agent (migration 0012; docs/distributed.md, "The relay").

The first to insert a notification key's row sends it, and marks it sent once it
has. A relay claims all of an alert's first notifications or none, pages, then
marks them sent; a worker that finds a relay's row unsent after ``RELAY_LEASE_S``
takes it over (the relay died between its claim and its page). A worker's row
unsent after ``WORKER_LEASE_S`` is the relay's to take over (the worker died
between its claim and its send: a SIGKILL lands there about one time in five at
four alarms a second). A worker's own row never stops a worker: a notification
read again after a crash is sent again, as without a relay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg

RELAY_LEASE_S = 10.0  # a relay's claim holds a worker's copy this long (then it takes over)
WORKER_LEASE_S = 3.0  # a worker's unsent claim holds the relay off this long (then it may page)
T = TypeVar("T")
WORKER = "worker"  # the claimant name of every worker's notify agent

MINE = "mine"  # send it
RELAYED = "relayed"  # a relay sent it: settled


def alert_claims(conn: psycopg.Connection, alert_id: str) -> dict[str, bool | datetime]:
    """The alert's first notifications claimed so far, by key: True if for good (sent,
    or a relay's); a worker's still unsent: until when its claim holds (then ask
    again), or False once that has passed (a relay may take it over). A key that is
    not here is claimed by no one: a worker that sent the console's notification and
    stalled before the webhook's leaves the webhook's out (docs/distributed.md, "The
    relay")."""
    rows = conn.execute(
        "SELECT key, sent OR by <> %s, at + %s, at + %s > now()"
        " FROM notification_claims WHERE alert_id = %s",
        [WORKER, timedelta(seconds=WORKER_LEASE_S), timedelta(seconds=WORKER_LEASE_S), alert_id],
    ).fetchall()
    return {
        key: True if settled else (until if held else False) for key, settled, until, held in rows
    }


def claim_for_relay(conn: psycopg.Connection, alert_id: str, keys: list[str], by: str) -> bool:
    """The alert's first notifications ``keys`` for the relay ``by``: all of them, or
    none (False) if any is claimed already."""
    try:
        with conn.transaction():
            for key in keys:
                # a worker's claim left unsent past its lease is taken over
                cur = conn.execute(
                    "INSERT INTO notification_claims AS c (key, alert_id, by, sent)"
                    " VALUES (%s, %s, %s, false) ON CONFLICT (key) DO UPDATE"
                    " SET by = excluded.by, at = now()"
                    " WHERE c.by = %s AND NOT c.sent AND c.at < now() - %s RETURNING key",
                    [key, alert_id, by, WORKER, timedelta(seconds=WORKER_LEASE_S)],
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


# One statement, one round trip: the worker's claim inserted, or else the row as it
# was (a relay's), taken over if the relay's lease has run out unsent.
_WORKER_CLAIM = """
WITH ins AS (
    INSERT INTO notification_claims (key, alert_id, by, sent)
    VALUES (%(key)s, %(alert)s, %(worker)s, false)
    ON CONFLICT (key) DO NOTHING RETURNING key
), took AS (
    UPDATE notification_claims SET by = %(worker)s, at = now(), sent = false
     WHERE key = %(key)s AND by <> %(worker)s AND NOT sent AND at < now() - %(lease)s
    RETURNING key
)
SELECT EXISTS (SELECT 1 FROM ins) OR EXISTS (SELECT 1 FROM took), c.by, c.at, c.sent
  FROM (SELECT 1) AS one LEFT JOIN notification_claims c ON c.key = %(key)s
"""


class WorkerClaims:
    """A notify agent's claims of first notifications, on a connection of its own in
    the event loop (no thread, no pool shared with the sink: a claim is on every
    alarm's path, so it must cost one round trip). ``claim`` answers ``MINE`` (send
    it), ``RELAYED`` (a relay sent it), or the time until which a relay paging it
    holds it; it raises if the database does not answer within ``wait_s`` (the
    caller then sends: an alarm is never held for the database)."""

    def __init__(
        self, url: str, lease_s: float = RELAY_LEASE_S, wait_s: float = 1.0, rest_s: float = 5.0
    ) -> None:
        self.url = url
        self.lease = timedelta(seconds=lease_s)
        self.wait_s = wait_s
        self.rest_s = rest_s  # after a failure, answer "unavailable" at once this long
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._rest_until = 0.0

    async def claim(self, key: str, alert_id: str) -> str | datetime:
        return await self.claim_wait(self._claim(key, alert_id))

    async def claim_wait(self, work: Coroutine[Any, Any, T]) -> T:
        loop = asyncio.get_running_loop()
        if loop.time() < self._rest_until:
            # a database just found away is not asked again for each alarm (each would
            # wait ``wait_s``): the caller sends, as it does when the database is away
            work.close()
            raise ConnectionError("the claims' database was away moments ago")
        try:
            return await asyncio.wait_for(work, self.wait_s)
        except BaseException:
            self._rest_until = loop.time() + self.rest_s
            await self.close()  # a query cut short leaves the connection unusable
            raise

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.wait_s))
            )
        return self._conn

    async def _claim(self, key: str, alert_id: str) -> str | datetime:
        conn = await self._connection()
        args = {"key": key, "alert": alert_id, "worker": WORKER, "lease": self.lease}
        cur = await conn.execute(_WORKER_CLAIM, args)
        row = await cur.fetchone()
        assert row is not None
        mine, by, at, sent = row
        if mine or by is None or by == WORKER:
            return MINE
        if sent:
            return RELAYED
        until: datetime = at + self.lease
        return until

    async def sent(self, key: str) -> None:
        """The worker has sent (or tried) the notification it claimed: the relay no
        longer waits on it. Raises like ``claim``; the caller only logs it."""
        await self.claim_wait(self._sent(key))

    async def _sent(self, key: str) -> None:
        conn = await self._connection()
        await conn.execute(
            "UPDATE notification_claims SET sent = true WHERE key = %s AND by = %s",
            [key, WORKER],
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def forget_old_claims(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Delete the claims older than ``older_than`` (their notifications are long settled)."""
    cur = conn.execute("DELETE FROM notification_claims WHERE at < now() - %s", [older_than])
    return cur.rowcount


class _Taken(Exception):
    """A key of the relay's claim was taken already: the whole claim is undone."""
