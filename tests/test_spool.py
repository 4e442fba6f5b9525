"""The local spool: what the drainer reads is what was appended, in order, once.

The in-memory tail is a shortcut for the drainer; these tests check that it
never changes *what* is read, only whether it comes back as the caller's own
objects or parsed from disk, and that a drainer starting anywhere (after a
restart, after the tail was trimmed, across a run appended without objects)
reads every record exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from trygg.runner.spool import Position, Spool


def _runs(n: int, size: int, start: int = 0) -> list[list[dict[str, Any]]]:
    return [[{"op": "ev", "n": start + r * size + i} for i in range(size)] for r in range(n)]


def _drain(spool: Spool, pos: Position, max_records: int = 5000) -> tuple[list[Any], Position]:
    out: list[Any] = []
    while True:
        got, pos = spool.read(pos, max_records)
        if not got:
            return out, pos
        out.extend(got)


def _n(records: list[Any]) -> list[int]:
    return [r["n"] if isinstance(r, dict) else r.n for r in records]


class Live:
    """Stands in for a StoredEvent: proves a record came from memory, not disk."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_live_runs_come_back_from_memory_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for run in _runs(5, 10):
        spool.append(run, [Live(r["n"]) for r in run])
    got, end = _drain(spool, Position(1, 0))
    assert _n(got) == list(range(50))
    assert all(isinstance(r, Live) for r in got)
    assert end == spool.end


def test_after_a_restart_the_same_records_come_from_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for run in _runs(5, 10):
        spool.append(run, [Live(r["n"]) for r in run])
    half, pos = spool.read(Position(1, 0), max_records=20)
    spool.close()
    again = Spool(tmp_path)
    rest, end = _drain(again, pos)
    assert _n(half) + _n(rest) == list(range(50))
    assert all(isinstance(r, dict) for r in rest)
    assert end == again.end


def test_a_run_without_objects_is_read_from_disk_between_live_runs(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a, b, c = _runs(3, 4)
    spool.append(a, [Live(r["n"]) for r in a])
    spool.append(b)  # e.g. the alert service's records
    spool.append(c, [Live(r["n"]) for r in c])
    got, _ = _drain(spool, Position(1, 0))
    assert _n(got) == list(range(12))
    assert [type(r) for r in got] == [Live] * 4 + [dict] * 4 + [Live] * 4


def test_a_trimmed_tail_falls_back_to_disk_and_lines_up_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, tail_records=30)
    for run in _runs(10, 10):
        spool.append(run, [Live(r["n"]) for r in run])
    # The drainer was far behind (a database outage): the tail holds only the last runs.
    got, _ = _drain(spool, Position(1, 0), max_records=7)
    assert _n(got) == list(range(100))
    assert isinstance(got[-1], Live)  # caught up with the tail, back to memory


def test_segments_roll_over_and_are_released_once_stored(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    for run in _runs(20, 3):
        spool.append(run, [Live(r["n"]) for r in run])
    assert len(spool.segments()) > 3
    got, end = _drain(spool, Position(1, 0))
    assert _n(got) == list(range(60))
    spool.release(end)
    assert spool.segments() == [end.segment]
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.read(end) == ([], end)


def test_a_spool_of_one_record_per_line_is_still_read(tmp_path: Path) -> None:
    old = [{"op": "ev", "n": i} for i in range(3)]
    (tmp_path / "spool-000001.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in old))
    spool = Spool(tmp_path)
    new = [{"op": "ev", "n": 3}]
    spool.append(new)
    got, _ = _drain(spool, Position(1, 0))
    assert _n(got) == [0, 1, 2, 3]


def test_a_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"op": "ev", "n": 0}])
    spool.close()
    with open(tmp_path / "spool-000001.jsonl", "ab") as f:
        f.write(b'[{"op":"ev","n":1')  # a crash in the middle of an append
    reopened = Spool(tmp_path)
    reopened.append([{"op": "ev", "n": 2}])
    got, _ = _drain(reopened, Position(1, 0))
    assert _n(got) == [0, 2]
