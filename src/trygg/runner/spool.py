"""A durable local spool: the hand-off between receiving and storing.

An MQTT message is acknowledged once its events are appended here and
fsync'ed, not when the database has them, so alerting never waits for
PostgreSQL and a database outage costs disk space, not data. The spool is a
directory of append-only segment files of JSON lines, one line per append
(a JSON array of that append's records; a line holding a single object is
one record, as spools written before 2026-11-29 have it)::

    spool-000001.jsonl  spool-000002.jsonl ...

One process writes (``Spool``, the runner); another reads (``SpoolReader``,
the drainer process, trygg.runner.drainer), from the files alone: the two
share nothing but the directory, so the reader can run on the other core.
A reader drains records from a position ``(segment, offset)``; the drainer
stores that position in the database in the same transaction as the records
(see ``trygg.store.spooled``), so replay after a crash applies each record
exactly once. Segments wholly before the stored position are deleted. The
spool is bounded: ``full`` tells the runner to stop taking messages, and the
broker keeps them meanwhile.

What makes reading while the writer appends safe: a reader takes only whole
lines (a line still being written has no newline yet), and the writer opens
the next segment only after the last line of the current one is written, so
a reader that sees the next segment exist reads the current one to its end
once more before it moves on.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SEG = re.compile(r"^spool-(\d{6,})\.jsonl$")


@dataclass(frozen=True, order=True, slots=True)
class Position:
    segment: int
    offset: int


class Spool:
    def __init__(
        self,
        directory: Path,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 4 << 30,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        segs = self.segments()
        self._wseg = segs[-1] if segs else 1
        path = self._path(self._wseg)
        self._repair(path)
        self._wf = open(path, "ab")  # noqa: SIM115 - held open for the spool's life
        self._wsize = self._wf.tell()
        self._lock = threading.Lock()  # appends come from several worker threads
        self.appended = 0  # bytes appended since opened: a cheap "has it grown much?"

    # --- layout -------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return _path(self.dir, seg)

    def segments(self) -> list[int]:
        return _segments(self.dir)

    @staticmethod
    def _repair(path: Path) -> None:
        """Cut a torn last line (a crash mid-append) so every line is whole."""
        if not path.exists():
            return
        with open(path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                f.truncate(end)

    # --- writing ------------------------------------------------------------
    @property
    def end(self) -> Position:
        with self._lock:
            return Position(self._wseg, self._wsize)

    @staticmethod
    def encode(records: Sequence[dict[str, Any]]) -> bytes:
        """Records as one spool line: a JSON array of them (one encoder call), or
        nothing for no records."""
        if not records:
            return b""
        return orjson.dumps(records if isinstance(records, list) else list(records)) + b"\n"

    def append(self, records: Sequence[dict[str, Any]]) -> Position:
        """Append records durably (write + fsync); return the new end position."""
        return self.append_encoded([self.encode(records)])

    def append_encoded(self, lines: Sequence[bytes]) -> Position:
        """Append lines made by ``encode`` durably, in one write and one fsync (a
        group commit); return the new end position."""
        buf = b"".join(lines)
        with self._lock:
            if buf:
                self._wf.write(buf)
                self._wf.flush()
                os.fsync(self._wf.fileno())
                self._wsize += len(buf)
                self.appended += len(buf)
            if self._wsize >= self.segment_bytes:
                self._wf.close()
                self._wseg += 1
                self._wf = open(self._path(self._wseg), "ab")  # noqa: SIM115
                self._wsize = 0
            return Position(self._wseg, self._wsize)

    def pending_bytes(self, since: Position) -> int:
        total = 0
        for seg in self.segments():
            if seg < since.segment:
                continue
            path = self._path(seg)
            if seg == self._wseg:
                size = self._wsize
            else:
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
            total += size - (since.offset if seg == since.segment else 0)
        return max(total, 0)

    def full(self, since: Position) -> bool:
        return self.pending_bytes(since) >= self.max_bytes

    def close(self) -> None:
        self._wf.close()


def _path(directory: Path, seg: int) -> Path:
    return directory / f"spool-{seg:06d}.jsonl"


def _segments(directory: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _SEG.match(p.name)))


def _unreadable(line: bytes, exc: Exception) -> dict[str, Any]:
    """A line that is not JSON, as a record the drainer keeps as a dead letter."""
    return {
        "op": "unreadable",
        "raw": base64.b64encode(line[: 64 * 1024]).decode(),
        "error": f"{str(exc)[:200]} ({len(line)} bytes)",
    }


class SpoolReader:
    """Reads a spool that another process appends to; deletes what is stored."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def segments(self) -> list[int]:
        return _segments(self.dir)

    def first(self) -> Position:
        """Where a reader with no stored position starts: the oldest segment."""
        segs = self.segments()
        return Position(segs[0] if segs else 1, 0)

    def holds(self, pos: Position) -> bool:
        """Whether ``pos`` lies within the spool as it is on disk."""
        try:
            return _path(self.dir, pos.segment).stat().st_size >= pos.offset
        except FileNotFoundError:
            return pos.offset == 0 and not any(s > pos.segment for s in self.segments())

    def read(
        self, start: Position, max_records: int = 5000
    ) -> tuple[list[dict[str, Any]], Position]:
        """Whole records after ``start`` (about ``max_records``: whole lines, so
        possibly a few more) and the position after them."""
        out: list[dict[str, Any]] = []
        pos = start
        while len(out) < max_records:
            path = _path(self.dir, pos.segment)
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                later = [s for s in self.segments() if s > pos.segment]
                if not later:
                    break  # nothing written yet
                pos = Position(later[0], 0)
                continue
            with f:
                f.seek(pos.offset)
                offset = pos.offset
                at_end = False
                while len(out) < max_records:
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        at_end = not line  # a line without its newline is still being written
                        break
                    offset += len(line)
                    try:
                        doc = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        # A damaged line must not stop the spool: the drainer stores it
                        # as a dead letter (trygg.store.spooled) and goes on.
                        doc = _unreadable(line, exc)
                    if isinstance(doc, list):
                        out.extend(doc)
                    else:  # a spool written before 2026-11-29: one record per line
                        out.append(doc)
                pos = Position(pos.segment, offset)
                if not at_end:
                    break
                # The end of this file: the writer may have moved on to the next segment.
                # It opens the next one only after the last line here is written, so a
                # next segment that exists means this file is whole: read it to its end
                # once more (the lines written since our readline), then go on.
                if not _path(self.dir, pos.segment + 1).exists():
                    break
                if os.fstat(f.fileno()).st_size > offset:
                    continue
                pos = Position(pos.segment + 1, 0)
        return out, pos

    def release(self, upto: Position) -> None:
        """Delete segments that lie wholly before ``upto`` (already stored)."""
        for seg in self.segments():
            if seg < upto.segment:
                _path(self.dir, seg).unlink(missing_ok=True)
