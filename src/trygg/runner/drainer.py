"""The drainer: the spool written to PostgreSQL, in a process of its own.

    runner (receive, decide, alert) --spool files--> drainer process --> PostgreSQL

Storing is the one stage that needs no answer back in a hurry, and it costs
about as much CPU per event as deciding does (JSON, rows, COPY). In the
runner's process it competed for the interpreter lock with the MQTT thread
and the rule engine, so on two cores one of them sat idle. As its own
process it runs on the other core; the spool files, already the durable
hand-off, are all the two share.

The pipe between them is small. The runner writes a byte to the drainer's
standard input when it has appended ("there is more"), and closes it to say
"finish and exit"; the drainer writes one JSON line per stored run to its
standard output (how far it got, how many events and dead letters were new),
which the runner turns into its statistics and the spool's fill level. If
the runner dies, even by SIGKILL, the pipe closes and the drainer finishes
what is spooled and exits. A second drainer on the same spool (an old one
still finishing while a restarted runner starts a new one) cannot store a
record twice: each run is applied under a lock on the spool's checkpoint and
only from the position the checkpoint holds (trygg.store.spooled.apply).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg

from trygg import logs
from trygg.child import ChildProcess, leave_stop_signals_to_the_runner
from trygg.model import DeadLetter
from trygg.repeats import RepeatLog
from trygg.retry import DRAIN, RetryPolicy
from trygg.runner.drain_lag import LAG_BUCKETS, receipt_lags, record_time
from trygg.runner.spool import Position, SpoolReader
from trygg.store import spooled

log = logs.get("trygg.drainer")

# --- the drainer process -------------------------------------------------------


class _Wakes:
    """The runner's wake-ups (bytes on standard input) and its goodbye (EOF)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self.closed = False

    def wait(self, seconds: float) -> None:
        """Until the runner says there is more, or ``seconds`` pass."""
        if self.closed:
            return
        ready, _, _ = select.select([self._fd], [], [], seconds)
        if ready and not os.read(self._fd, 4096):
            self.closed = True

    def sleep(self, seconds: float) -> None:
        """``seconds`` whatever the runner appends meanwhile; only its goodbye ends
        it early. (A back-off cut short by every wake-up is no back-off: under load
        the runner wakes the drainer for each batch, and a database outage made
        6,783 connection attempts in 30 s.)"""
        end = time.monotonic() + seconds
        while not self.closed and (left := end - time.monotonic()) > 0:
            self.wait(left)


class _Outage:
    """Back-off for a database that is away, and one log line per change of state.

    The waits are trygg's one retry policy (``trygg.retry.DRAIN``: doubling from
    0.2 s to 10 s, with jitter), counted from the outage's first failure; they
    start again once a run is stored. The drainer sleeps them itself, so that a
    new record or the runner's exit can wake it (``_Wakes``).
    """

    def __init__(self, out: IO[bytes], policy: RetryPolicy = DRAIN) -> None:
        self._out = out
        self.policy = policy
        self.since: float | None = None
        self.attempts = 0

    def failed(self, exc: BaseException, what: str) -> float:
        """Note a failure; the seconds to wait before the next try."""
        self.attempts += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "database unavailable: storing paused, the spool keeps everything",
                what=what,
                error=_first_line(exc),
            )
            _say(self._out, {"db": "down"})
        return self.policy.delay(self.attempts)

    def recovered(self) -> None:
        if self.since is not None:
            log.info(
                "database available again: storing resumed",
                down_s=round(time.monotonic() - self.since, 1),
                attempts=self.attempts,
            )
            _say(self._out, {"db": "up"})
        self.since, self.attempts = None, 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _say(out: IO[bytes], doc: dict[str, Any]) -> None:
    out.write(orjson.dumps(doc))
    out.write(b"\n")
    out.flush()


def _report(
    out: IO[bytes],
    pos: Position,
    stored: int = 0,
    dead: int = 0,
    lag: dict[str, Any] | None = None,
) -> None:
    doc: dict[str, Any] = {"to": [pos.segment, pos.offset], "stored": stored, "dead": dead}
    if lag:
        doc["lag"] = lag
    _say(out, doc)


def _connect(url: str, wakes: _Wakes, outage: _Outage) -> psycopg.Connection | None:
    """A connection, retried with backoff; None once the runner has gone."""
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            delay = outage.failed(exc, "connect")
        wakes.sleep(delay)
        if wakes.closed:
            return None


def _start(conn: psycopg.Connection, reader: SpoolReader, name: str) -> Position:
    """Where to go on: the stored checkpoint, if the spool still holds it."""
    cp = spooled.checkpoint(conn, name)
    if cp is None:
        return reader.first()
    pos = Position(*cp)
    if reader.holds(pos):
        return pos
    # The spool directory was replaced (a new volume, a wiped disk): reading from the old
    # position would skip everything the new spool holds, silently.
    first = reader.first()
    log.error(
        "the spool does not hold the stored checkpoint (was the spool directory replaced?):"
        " storing the spool from its beginning",
        spool=name,
        checkpoint=list(cp),
        start=[first.segment, first.offset],
    )
    spooled.apply(conn, name, [], (first.segment, first.offset))
    return first


def drain(
    reader: SpoolReader,
    name: str,
    url: str,
    wakes: _Wakes,
    out: IO[bytes],
    batch: int = 5000,
    gather: float = 0.05,
) -> None:
    """Store the spool until the runner closes the pipe and all is stored.

    A database outage only delays this: the position stays where the last
    committed run left it, and the run is tried again on a new connection.
    When the runner has gone and the database has too, the drainer exits and
    leaves the rest to the next one (the spool keeps it).

    A record the database refuses is logged in full the first time per device
    and reason, then as one line a minute with the count (trygg.repeats).
    """
    refused = RepeatLog(
        log,
        "a spooled record the database refused is kept as a dead letter",
        "spooled records the database refused, kept as dead letters",
        level="error",
    )
    try:
        _drain(reader, name, url, wakes, out, batch, gather, refused)
    finally:
        refused.flush(everything=True)


def _drain(
    reader: SpoolReader,
    name: str,
    url: str,
    wakes: _Wakes,
    out: IO[bytes],
    batch: int,
    gather: float,
    refused: RepeatLog,
) -> None:
    conn: psycopg.Connection | None = None
    pos: Position | None = None
    outage = _Outage(out)

    def poisoned(letter: DeadLetter) -> None:
        # Ids and the database's reason only: never the record's contents.
        refused.note(letter.device, letter.reason, kind=letter.topic)

    while True:
        refused.flush()
        if conn is None or conn.closed:
            conn = _connect(url, wakes, outage)
            if conn is None:
                return
            pos = None
        try:
            if pos is None:
                pos = _start(conn, reader, name)
                _report(out, pos)
            records, upto = reader.read(pos, batch)
            if records:
                stored, dead = spooled.apply(
                    conn,
                    name,
                    records,
                    (upto.segment, upto.offset),
                    start=(pos.segment, pos.offset),
                    on_poison=poisoned,
                )
                pos = upto
                reader.release(pos)
                outage.recovered()
                _report(out, pos, stored, dead, receipt_lags(records, time.time()))
                if len(records) < batch // 5 and not wakes.closed:
                    # Under load, let a run gather: a transaction per few dozen events
                    # cost PostgreSQL more CPU than the rows themselves (bench_ingest).
                    time.sleep(gather)
                continue
            outage.recovered()
        except spooled.CheckpointMoved as exc:
            log.warning("another drainer stored part of this spool: going on from there", at=exc.at)
            pos = Position(*exc.at)
            continue
        except psycopg.Error as exc:
            # The server gone, or a state of the database that no record causes (a
            # missing table, a full disk): wait and try again on a new connection.
            # Records the database refuses never get here (spooled.apply isolates them).
            delay = outage.failed(exc, "store")
            with contextlib.suppress(Exception):
                conn.close()
            conn = None
            wakes.sleep(delay)
            if wakes.closed and outage.since is not None:
                return  # the runner has gone and the database too: the spool keeps the rest
            continue
        if wakes.closed:
            return  # the runner has gone and everything spooled is stored
        wakes.wait(1.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m trygg.runner.drainer",
        description="Store a trygg spool in PostgreSQL (started by trygg run, not by hand). "
        "The database URL comes from TRYGG_DATABASE_URL, so that no password is on the "
        "command line.",
    )
    ap.add_argument("--spool", type=Path, required=True, help="the spool directory")
    ap.add_argument("--name", required=True, help="the spool's name in spool_checkpoint")
    args = ap.parse_args(argv)
    logs.configure(
        os.environ.get("TRYGG_LOG_FORMAT", "console"), os.environ.get("TRYGG_LOG_LEVEL", "INFO")
    )
    url = os.environ["TRYGG_DATABASE_URL"]
    leave_stop_signals_to_the_runner()  # the runner says when to stop: EOF on stdin
    drain(SpoolReader(args.spool), args.name, url, _Wakes(sys.stdin.buffer), sys.stdout.buffer)


# --- the runner's side ---------------------------------------------------------


class DrainerProcess:
    """Starts the drainer process, wakes it, and follows how far it has stored."""

    def __init__(
        self,
        spool_dir: Path,
        name: str,
        database_url: str,
        log_format: str,
        log_level: str,
        on_stored: Callable[[int, int], None] = lambda stored, dead: None,
    ) -> None:
        env = {
            **os.environ,
            "TRYGG_DATABASE_URL": database_url,
            "TRYGG_LOG_FORMAT": log_format,
            "TRYGG_LOG_LEVEL": log_level,
        }
        self._child = ChildProcess(
            "drainer",
            "trygg.runner.drainer",
            ["--spool", str(spool_dir), "--name", name],
            env,
            self._follow,
        )
        self._on_stored = on_stored
        from trygg.api.metrics import drainer_lag  # the runner's side only

        self.lag = drainer_lag(LAG_BUCKETS)  # receipt -> stored, as the drainer reports it
        self._spool_dir = spool_dir
        self.position: Position | None = None  # stored up to here (None: not yet known)
        self.stored_at = time.monotonic()  # when it last told of progress (or started)
        self.db_down_since: float | None = None  # monotonic; None while it can store
        self._moved = asyncio.Event()

    async def start(self) -> None:
        await self._child.start()

    async def _follow(self, out: asyncio.StreamReader) -> None:
        while line := await out.readline():
            doc: dict[str, Any] = orjson.loads(line)
            if "db" in doc:
                self.db_down_since = time.monotonic() if doc["db"] == "down" else None
                continue
            self.position = Position(*doc["to"])
            self.stored_at = time.monotonic()
            if (lag := doc.get("lag")) is not None:
                self.lag.add(lag["n"], lag["sum"])
            self._on_stored(doc["stored"], doc["dead"])
            self._moved.set()

    def backlog_age(self, now: datetime) -> float:
        """Seconds since the oldest record not yet stored came about (0: all stored):
        read from the spool at the position the drainer last reported (the first
        line there), so it grows while the database is away, restarts included."""
        reader = SpoolReader(self._spool_dir)
        records, _ = reader.read(self.position or reader.first(), 1)
        times = [t for r in records if (t := record_time(r)) is not None]
        if times:
            return max(0.0, (now - min(times)).total_seconds())
        if records:  # a line that tells no time (a silence): since the drainer last stored
            return time.monotonic() - self.stored_at
        return 0.0

    def wake(self) -> None:
        """There is more in the spool. (A byte per call: the drainer reads all that
        are waiting at once, and skipping one because another "seems" pending could
        leave it asleep with records to store.)"""
        self._child.write(b"w")

    async def stored_to(self, pos: Position) -> None:
        """Until everything before ``pos`` is stored."""
        while self.position is None or self.position < pos:
            self._moved.clear()
            self.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), 1.0)

    async def stop(self, within: float = 5.0) -> None:
        """Let it store what is spooled (for at most ``within`` seconds), then end it."""
        await self._child.stop(within)


if __name__ == "__main__":
    main()
