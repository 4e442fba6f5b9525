"""Reading history back for ``trygg rules backtest``: stored events, streamed in
the order trygg received them, and what became of the stored alerts of a period.

Events are read with a server-side cursor (``DECLARE ... CURSOR``, fetched
``itersize`` rows at a time, binary format), so a month of a city's events
is never in memory at once: memory depends on ``itersize``, not on the
length of the period. The period is chosen by event time; the events come
in the order they were received (``received_at``, ties by event time and
then event id), which is the order the live rules saw them in, each with
its receipt time, so that the rules judge device clocks as live did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from trygg.alerts.alert import FALSE_OUTCOMES  # also: cancelled with reason false_alarm
from trygg.model import Event, EventType, Room
from trygg.registry import Registry

EVENT_COLUMNS = "time, device, event_id, type, resident, value, room, lat, lon, received_at"


def _filters(
    start: datetime, end: datetime, residents: Sequence[str] | None, col: str = "time"
) -> tuple[str, list[Any]]:
    where = f"{col} >= %s AND {col} < %s"
    params: list[Any] = [start, end]
    if residents is not None:
        where += " AND resident = ANY(%s)"
        params.append(list(residents))
    return where, params


def _alert_filters(
    start: datetime, end: datetime, teams: Sequence[str] | None
) -> tuple[str, list[Any]]:
    """Alerts (``a``) raised in ``[start, end)``, of one of ``teams`` if given."""
    where, params = _filters(start, end, None, col="a.raised_at")
    if teams:
        where += " AND a.team = ANY(%s)"
        params.append(list(teams))
    return where, params


def count_events(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    residents: Sequence[str] | None = None,
) -> int:
    """How many events are stored in ``[start, end)`` (a full count: use it for
    small periods; the backtest's progress bar goes by event time instead)."""
    where, params = _filters(start, end, residents)
    row = conn.execute(f"SELECT count(*) FROM events WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


class EventStream:
    """The stored events of ``[start, end)`` (by event time) as ``(Event,
    received_at)`` pairs, in the order trygg received them.

    Why that order: live, the rules see each event when it arrives and judge
    its device's clock by the receipt time. In event-time order a device
    whose clock runs an hour fast would reach the rules an hour after the
    rest of its home, judged at its receipt time, and so look silent (offline)
    for that hour, again at every event; and an event delivered late would
    look on time. Sorting the period by receipt costs a sort in the
    database, not memory here.

    Iterate it once. ``residents`` limits the stream to those residents (a
    team filter); events from devices not in ``registry`` are skipped and
    counted in ``unknown_device``. ``progress(n, last_time)`` is called after
    every fetched chunk with the number of events so far and the time of the
    last one. The connection must not be in autocommit mode, or must be in a
    transaction: a server-side cursor lives in one.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        registry: Registry,
        start: datetime,
        end: datetime,
        *,
        residents: Sequence[str] | None = None,
        itersize: int = 20_000,
        progress: Callable[[int, datetime | None], None] | None = None,
        name: str = "trygg_history",
    ) -> None:
        self.conn = conn
        self.devices = {d.id: (d.kind, d.room) for d in registry.devices}
        self.start, self.end = start, end
        self.residents = residents
        self.itersize = itersize
        self.progress = progress
        self.name = name
        self.events = 0
        self.unknown_device = 0
        self.fetches = 0
        self.server_side: bool | None = None

    def __iter__(self) -> Iterator[tuple[Event, datetime]]:
        where, params = _filters(self.start, self.end, self.residents)
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY received_at, time, event_id"
        )
        types = {t.value: t for t in EventType}
        rooms: dict[str | None, Room | None] = {r.value: r for r in Room}
        rooms[None] = None
        devices = self.devices
        n = 0
        with self.conn.transaction(), self.conn.cursor(name=self.name, binary=True) as cur:
            cur.execute(sql, params)
            self.server_side = isinstance(cur, psycopg.ServerCursor)
            while True:
                rows = cur.fetchmany(self.itersize)
                if not rows:
                    break
                self.fetches += 1
                for t, dev, eid, typ, res, value, room, lat, lon, rx in rows:
                    d = devices.get(dev)
                    if d is None:
                        self.unknown_device += 1
                        continue
                    n += 1
                    ev = Event(
                        dev,
                        eid,
                        types[typ],
                        t,
                        res,
                        d[0],
                        rooms[room] if room is not None else d[1],
                        value,
                        None if lat is None else (lat, lon),
                    )
                    yield ev, rx
                self.events = n
                if self.progress is not None:
                    self.progress(n, rows[-1][0])
        self.events = n


def alert_outcomes(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    teams: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per (rule, team): the stored (non-shadow) alerts raised in ``[start, end)``,
    how many are closed, how many were false (outcome ``false_alarm`` or
    ``no_help_needed``, or cancelled with reason ``false_alarm``) and how many
    led to a call-out (an ``arrived`` record)."""
    where, params = _alert_filters(start, end, teams)
    false = ", ".join(f"'{o}'" for o in sorted(FALSE_OUTCOMES))
    sql = f"""
        SELECT rule, team, count(*) AS alerts,
               count(*) FILTER (WHERE closed) AS closed,
               count(*) FILTER (WHERE closed AND (outcome IN ({false})
                                                  OR reason = 'false_alarm')) AS false_alarms,
               count(*) FILTER (WHERE arrived) AS callouts
          FROM (
            SELECT a.rule, a.team, a.state IN ('resolved', 'cancelled') AS closed,
                   coalesce(a.outcome, c.outcome) AS outcome,
                   CASE WHEN a.state = 'cancelled' THEN coalesce(a.cancel_reason, c.reason) END
                       AS reason,
                   EXISTS (SELECT 1 FROM alert_records r
                            WHERE r.alert_id = a.id AND r.step = 'arrived') AS arrived
              FROM alerts a
              LEFT JOIN LATERAL (
                    SELECT r.data ->> 'outcome' AS outcome, r.data ->> 'reason' AS reason
                      FROM alert_records r
                     WHERE r.alert_id = a.id AND r.step IN ('resolved', 'cancelled')
                     ORDER BY r.at, r.id LIMIT 1) c ON true
             WHERE {where} AND NOT a.shadow
          ) s
         GROUP BY rule, team
         ORDER BY rule, team
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(sql, params).fetchall())


def recorded_incidents(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    teams: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Real incidents of ``[start, end)``: stored (non-shadow) alerts that ended
    ``resolved`` after someone arrived, with the time of the first arrival,
    in raise order."""
    where, params = _alert_filters(start, end, teams)
    sql = f"""
        SELECT a.id::text AS alert_id, a.rule, a.resident, a.team, a.raised_at,
               a.events, a.device, a.outcome, arr.at AS arrived_at
          FROM alerts a
          JOIN LATERAL (SELECT min(r.at) AS at FROM alert_records r
                         WHERE r.alert_id = a.id AND r.step = 'arrived') arr ON arr.at IS NOT NULL
         WHERE {where} AND NOT a.shadow AND a.state = 'resolved'
         ORDER BY a.raised_at, a.id
    """
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(sql, params).fetchall())


# ------------------------------------------------------------------ shards --

SHARD_OF = "mod(mod(hashtextextended({col}, 0), %(n)s::bigint) + %(n)s::bigint, %(n)s::bigint)"
"""The shard (0 .. n-1) of a resident id: PostgreSQL's stable text hash (the one
hash partitioning uses, the same on every server and in every session, unlike
Python's salted ``hash()``), made non-negative. An operator can ask psql which
shard a resident is in: ``SELECT mod(mod(hashtextextended('r-0001', 0), 4) + 4, 4)``."""


def resident_shards(conn: psycopg.Connection[Any], n: int) -> list[list[str]]:
    """Every stored resident, in ``n`` shards by ``SHARD_OF`` (each sorted).

    The stored residents are all there are: ingest stores an event with its
    device's resident from the registry, and residents are never deleted, so
    the shards together cover every stored event."""
    if n < 1:
        raise ValueError("the number of shards must be at least 1")
    sql = f"SELECT id, {SHARD_OF.format(col='id')} FROM residents ORDER BY id"
    shards: list[list[str]] = [[] for _ in range(n)]
    for rid, k in conn.execute(sql, {"n": n}).fetchall():
        shards[int(k)].append(rid)
    return shards


def event_stream_plan(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    residents: Sequence[str] | None = None,
    *,
    analyze: bool = False,
) -> str:
    """``EXPLAIN`` of ``EventStream``'s query (the plan one shard's cursor runs):
    which chunks, which index. ``analyze`` runs it (reads the rows).

    Planned as a cursor's query is: PostgreSQL runs no parallel workers for
    a cursor (``DECLARE``), so they are off here too (a plain ``EXPLAIN`` of
    the same ``SELECT`` shows a ``Gather Merge`` the cursor never gets)."""
    where, params = _filters(start, end, residents)
    opts = "ANALYZE, BUFFERS, " if analyze else ""
    sql = (
        f"EXPLAIN ({opts}COSTS OFF) SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
        " ORDER BY received_at, time, event_id"
    )
    with conn.transaction():
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        rows = conn.execute(sql, params).fetchall()
    return "\n".join(str(r[0]) for r in rows)
