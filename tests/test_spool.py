"""The local spool: what the drainer reads is what was appended, in order, once.

The writer (the runner) and the reader (the drainer process) share only the
files. These tests check that a reader starting anywhere (after a restart,
mid-segment, across segment roll-overs, while the writer is appending from
another process) reads every record exactly once and never half of one.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import orjson

from trygg.runner.spool import Position, Spool, SpoolReader


def _runs(n: int, size: int, start: int = 0) -> list[list[dict[str, Any]]]:
    return [[{"op": "ev", "n": start + r * size + i} for i in range(size)] for r in range(n)]


def _drain(
    reader: SpoolReader, pos: Position, max_records: int = 5000
) -> tuple[list[Any], Position]:
    out: list[Any] = []
    while True:
        got, pos = reader.read(pos, max_records)
        if not got:
            return out, pos
        out.extend(got)


def _n(records: list[Any]) -> list[int]:
    return [r["n"] for r in records]


def test_what_is_appended_is_read_in_order_up_to_the_end(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for run in _runs(5, 10):
        spool.append(run)
    got, end = _drain(SpoolReader(tmp_path), Position(1, 0), max_records=7)
    assert _n(got) == list(range(50))
    assert end == spool.end


def test_after_a_restart_reading_goes_on_where_it_stopped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for run in _runs(5, 10):
        spool.append(run)
    half, pos = SpoolReader(tmp_path).read(Position(1, 0), max_records=20)
    spool.close()
    again = Spool(tmp_path)
    again.append(_runs(1, 5, start=50)[0])
    rest, end = _drain(SpoolReader(tmp_path), pos)
    assert _n(half) + _n(rest) == list(range(55))
    assert end == again.end


def test_segments_roll_over_and_are_released_once_stored(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    for run in _runs(20, 3):
        spool.append(run)
    assert len(spool.segments()) > 3
    reader = SpoolReader(tmp_path)
    got, end = _drain(reader, Position(1, 0))
    assert _n(got) == list(range(60))
    reader.release(end)
    assert spool.segments() == [end.segment]
    spool.close()
    Spool(tmp_path)
    assert reader.read(end) == ([], end)


def test_a_spool_of_one_record_per_line_is_still_read(tmp_path: Path) -> None:
    old = [{"op": "ev", "n": i} for i in range(3)]
    (tmp_path / "spool-000001.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in old))
    spool = Spool(tmp_path)
    spool.append([{"op": "ev", "n": 3}])
    got, _ = _drain(SpoolReader(tmp_path), Position(1, 0))
    assert _n(got) == [0, 1, 2, 3]


def test_a_torn_last_line_is_cut_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"op": "ev", "n": 0}])
    spool.close()
    with open(tmp_path / "spool-000001.jsonl", "ab") as f:
        f.write(b'[{"op":"ev","n":1')  # a crash in the middle of an append
    reopened = Spool(tmp_path)
    reopened.append([{"op": "ev", "n": 2}])
    got, _ = _drain(SpoolReader(tmp_path), Position(1, 0))
    assert _n(got) == [0, 2]


def test_a_line_still_being_written_is_not_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"op": "ev", "n": 0}])
    with open(tmp_path / "spool-000001.jsonl", "ab") as f:
        f.write(b'[{"op":"ev","n":1}')  # the writer is half-way through its write
    reader = SpoolReader(tmp_path)
    got, pos = reader.read(Position(1, 0))
    assert _n(got) == [0]
    with open(tmp_path / "spool-000001.jsonl", "ab") as f:
        f.write(b"]\n")
    got, _ = reader.read(pos)
    assert _n(got) == [1]


def test_a_replaced_spool_directory_is_noticed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for run in _runs(3, 10):
        spool.append(run)
    reader = SpoolReader(tmp_path)
    assert reader.holds(spool.end)
    assert not reader.holds(Position(1, spool.end.offset + 1))
    # A segment the writer has not begun is where a reader waits, not past the end.
    assert reader.holds(Position(spool.end.segment + 1, 0))


def _write(directory: str, runs: int) -> None:
    spool = Spool(Path(directory), segment_bytes=2000)
    for run in _runs(runs, 7):
        spool.append(run)
        time.sleep(0.0005)
    spool.close()


def test_a_reader_in_another_process_gets_every_record_once_while_the_writer_appends(
    tmp_path: Path,
) -> None:
    """The drainer's situation: a concurrent writer that rolls segments over."""
    writer = multiprocessing.get_context("spawn").Process(target=_write, args=(str(tmp_path), 600))
    writer.start()
    reader = SpoolReader(tmp_path)
    pos, got = Position(1, 0), []
    deadline = time.monotonic() + 60
    while len(got) < 600 * 7 and time.monotonic() < deadline:
        records, pos = reader.read(pos, max_records=50)
        got.extend(records)
        reader.release(pos)
    writer.join(10)
    assert _n(got) == list(range(600 * 7))
    assert len(SpoolReader(tmp_path).segments()) <= 2
