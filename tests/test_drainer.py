"""The drainer process: the spool stored exactly once, whoever drains it.

Real PostgreSQL (the private test server) and real drainer processes, started
the way the runner starts them (``python -m trygg.runner.drainer``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from trygg.model import DeadLetter
from trygg.runner.spool import Spool
from trygg.store import spooled


def _events(n: int, start: int = 0) -> list[dict[str, Any]]:
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    return [
        {
            "op": "ev",
            "d": "door-1",
            "i": f"e-{i}",
            "y": "door.opened",
            "t": (t0 + timedelta(milliseconds=i)).isoformat(),
            "r": "r-1",
            "k": "door",
            "m": "entrance",
            "v": None,
            "p": None,
            "rx": t0.isoformat(),
            "late": False,
        }
        for i in range(start, start + n)
    ]


def _dead_letter(i: int) -> dict[str, Any]:
    """Dead letters have no natural key: only the checkpoint keeps them from doubling."""
    return spooled.dead_letter_record(
        DeadLetter("trygg/t/devices/x/events", b"{", f"not JSON ({i})", datetime.now(UTC), "x")
    )


def _drainer(spool: Path, db: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "trygg.runner.drainer", "--spool", str(spool), "--name", "t"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "TRYGG_DATABASE_URL": db, "TRYGG_LOG_LEVEL": "WARNING"},
    )


def _stored(db: str) -> list[str]:
    with psycopg.connect(db) as c:
        return [r[0] for r in c.execute("SELECT event_id FROM events ORDER BY time")]


def _finish(p: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """Close the pipe (the runner's goodbye) and read what the drainer reported."""
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    return [orjson.loads(line) for line in out.splitlines()]


def test_two_drainers_of_one_spool_store_each_event_once(tmp_path: Path, db: str) -> None:
    """An old drainer still finishing while a restarted runner's new one starts."""
    spool = Spool(tmp_path / "spool", segment_bytes=20_000)
    a, b = _drainer(spool.dir, db), _drainer(spool.dir, db)
    for k in range(40):
        spool.append([*_events(50, start=k * 50), _dead_letter(k)])
        for p in (a, b):
            assert p.stdin is not None
            p.stdin.write(b"w")
            p.stdin.flush()
    reports = _finish(a) + _finish(b)
    stored = _stored(db)
    assert len(stored) == 2000 == len(set(stored))
    assert sum(r["stored"] for r in reports) == 2000  # neither counted the other's rows
    assert sum(r["dead"] for r in reports) == 40
    with psycopg.connect(db) as c:
        assert c.execute("SELECT count(*) FROM dead_letters").fetchone() == (40,)
        cp = spooled.checkpoint(c, "t")
    assert cp == (spool.end.segment, spool.end.offset)


def test_when_the_runner_goes_away_the_drainer_stores_the_rest_and_exits(
    tmp_path: Path, db: str
) -> None:
    spool = Spool(tmp_path / "spool")
    p = _drainer(spool.dir, db)
    spool.append(_events(300))
    assert p.stdin is not None
    p.stdin.close()  # what a SIGKILL of the runner does to the pipe
    p.wait(60)
    assert p.returncode == 0
    assert len(_stored(db)) == 300


def test_a_replaced_spool_directory_is_stored_from_its_beginning(tmp_path: Path, db: str) -> None:
    first = Spool(tmp_path / "spool")
    first.append(_events(100))
    first.append(_events(100, start=100))
    assert len(_finish(_drainer(first.dir, db))) >= 1
    first.close()
    # A new, empty volume: the database's checkpoint is past anything the new spool holds.
    for f in (tmp_path / "spool").iterdir():
        f.unlink()
    second = Spool(tmp_path / "spool")
    second.append(_events(10, start=1000))
    p = _drainer(second.dir, db)
    time.sleep(0.5)
    _finish(p)
    assert len(_stored(db)) == 210


def _poisoned(i: int, how: str) -> dict[str, Any]:
    """An event record PostgreSQL refuses (or Python cannot even send)."""
    (r,) = _events(1, start=i)
    if how == "nul":
        r["i"] = "a\x00b"  # text cannot hold NUL
    elif how == "time":
        r["t"] = "300000-01-01T00:00:00+00:00"  # beyond timestamptz (294276 AD)
    elif how == "shape":
        del r["r"]  # a record of the wrong shape
    return r


def _letters(db: str) -> list[tuple[str, str | None, bytes]]:
    with psycopg.connect(db) as c:
        return [
            (r[0], r[1], bytes(r[2]))
            for r in c.execute("SELECT reason, device, payload FROM dead_letters ORDER BY id")
        ]


def test_records_the_database_refuses_become_dead_letters_and_the_rest_is_stored(
    tmp_path: Path, db: str
) -> None:
    """One bad record used to fail its whole run on every try: the drainer
    crash-looped and nothing more was stored. Now each refused record stands
    alone as a dead letter with the database's reason, in the same transaction
    as the good records around it."""
    spool = Spool(tmp_path / "spool")
    spool.append([*_events(10), _poisoned(10, "nul"), *_events(10, start=11)])
    spool.append([_poisoned(21, "time"), *_events(5, start=22), _poisoned(27, "shape")])
    p = _drainer(spool.dir, db)
    reports = _finish(p)
    assert _stored(db) == [f"e-{i}" for i in range(27) if i not in (10, 21)]
    letters = _letters(db)
    assert len(letters) == 3
    reasons = " | ".join(r for r, _, _ in letters)
    assert "0x00" in reasons  # PostgreSQL's own words: invalid byte sequence ... 0x00
    assert "out of range" in reasons or "timestamp" in reasons
    assert all(
        r.startswith("stored from the spool: the database refused this record")
        for r, _, _ in letters
    )
    assert all(d == "door-1" for _, d, _ in letters)
    assert b"a\\u0000b" in letters[0][2]  # the record itself, as JSON that any column holds
    assert sum(r.get("stored", 0) for r in reports) == 25
    with psycopg.connect(db) as c:
        (cp,) = c.execute('SELECT segment, "offset" FROM spool_checkpoint').fetchall()
    assert (cp[0], cp[1]) == (spool.end.segment, spool.end.offset)


def test_a_damaged_spool_line_becomes_a_dead_letter(tmp_path: Path, db: str) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(_events(3))
    spool.close()
    seg = sorted(spool.dir.iterdir())[-1]
    with open(seg, "ab") as f:
        f.write(b'[{"op": "ev", "d": "door-1", \xff\xfe broken\n')
    spool = Spool(tmp_path / "spool")
    spool.append(_events(3, start=3))
    _finish(_drainer(spool.dir, db))
    assert _stored(db) == [f"e-{i}" for i in range(6)]
    ((reason, _, raw),) = _letters(db)
    assert reason.startswith("a spool line that could not be read")
    assert raw.startswith(b'[{"op": "ev"')


def test_a_database_outage_is_logged_once_not_per_attempt(tmp_path: Path) -> None:
    """The drainer backs off (with jitter) and says 'unavailable' once per outage,
    however often the runner wakes it meanwhile."""
    spool = Spool(tmp_path / "spool")
    spool.append(_events(3))
    p = subprocess.Popen(
        [sys.executable, "-m", "trygg.runner.drainer", "--spool", str(spool.dir), "--name", "t"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            # Nothing listens on port 9: every connection attempt is refused at once.
            "TRYGG_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
            "TRYGG_LOG_FORMAT": "json",
        },
    )
    assert p.stdin is not None and p.stdout is not None
    end = time.monotonic() + 4
    while time.monotonic() < end:  # the runner waking it for every batch
        p.stdin.write(b"w")
        p.stdin.flush()
        time.sleep(0.005)
    out, err = p.communicate(timeout=30)  # closes its input: the runner's goodbye
    assert p.returncode == 0
    lines = [orjson.loads(x) for x in err.splitlines() if x.startswith(b"{")]
    unavailable = [x for x in lines if "unavailable" in x.get("event", "")]
    assert len(unavailable) == 1, lines
    assert [orjson.loads(x) for x in out.splitlines()] == [{"db": "down"}]
