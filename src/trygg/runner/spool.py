"""A durable local spool: the hand-off between receiving and storing.

An MQTT message is acknowledged once its events are appended here and
fsync'ed, not when the database has them, so alerting never waits for
PostgreSQL and a database outage costs disk space, not data. The spool is a
directory of append-only segment files of JSON lines, one line per append
(a JSON array of that append's records; a line holding a single object is
one record, as spools written before 2026-11-29 have it)::

    spool-000001.jsonl  spool-000002.jsonl ...

A reader drains records from a position ``(segment, offset)``; the drainer
stores that position in the database in the same transaction as the records
(see ``trygg.store.spooled``), so replay after a crash applies each record
exactly once. Segments wholly before the stored position are deleted. The
spool is bounded: ``full`` tells the runner to stop taking messages, and the
broker keeps them meanwhile.

The disk is for crashes. While the process lives, the drainer usually wants
what was appended a moment ago, so ``append`` may also keep the caller's own
objects for that run of records (a bounded in-memory tail) and ``read``
returns those instead of parsing the lines back: the same records, without a
JSON round trip. Whatever is not in the tail (after a restart, or after a
long database outage pushed it out) is read from disk.
"""

from __future__ import annotations

import os
import re
import threading
from collections import deque
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
        tail_records: int = 50_000,
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
        # (start, end, live records) of recent appends; at most tail_records records
        self._tail: deque[tuple[Position, Position, Sequence[Any]]] = deque()
        self._tail_records = 0
        self._tail_max = tail_records

    # --- layout -------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.dir / f"spool-{seg:06d}.jsonl"

    def segments(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG.match(p.name)))

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

    def append(
        self, records: Sequence[dict[str, Any]], live: Sequence[Any] | None = None
    ) -> Position:
        """Append records durably (write + fsync); return the new end position.

        ``live``, if given, is what ``read`` returns for this run instead of
        parsing ``records`` back from disk (the caller's own objects for them).
        """
        # One line per append, a JSON array of its records: one encoder call.
        buf = orjson.dumps(records if isinstance(records, list) else list(records)) + b"\n"
        if not records:
            buf = b""
        with self._lock:
            start = Position(self._wseg, self._wsize)
            if buf:
                self._wf.write(buf)
                self._wf.flush()
                os.fsync(self._wf.fileno())
                self._wsize += len(buf)
            if self._wsize >= self.segment_bytes:
                self._wf.close()
                self._wseg += 1
                self._wf = open(self._path(self._wseg), "ab")  # noqa: SIM115
                self._wsize = 0
            end = Position(self._wseg, self._wsize)
            if live is not None and buf:
                self._tail.append((start, end, live))
                self._tail_records += len(live)
                while self._tail_records > self._tail_max:
                    self._tail_records -= len(self._tail.popleft()[2])
            return end

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

    # --- reading ------------------------------------------------------------
    def read(
        self, start: Position, max_records: int = 5000
    ) -> tuple[list[dict[str, Any]], Position]:
        """Records after ``start`` (about ``max_records``) and the position after them.

        From the in-memory tail when it holds ``start`` (whole appended runs,
        so possibly a few more than ``max_records``), else from disk up to
        where the tail begins.
        """
        with self._lock:
            tail = self._tail
            while tail and tail[0][1] <= start:
                self._tail_records -= len(tail.popleft()[2])
            if tail and tail[0][0] == start:
                live: list[Any] = []
                pos = start
                for first, last, recs in tail:
                    if first != pos or len(live) >= max_records:
                        break
                    live.extend(recs)
                    pos = last
                return live, pos
            # Read the disk up to the tail's next run boundary, so the next read lines up.
            if not tail:
                end = Position(self._wseg, self._wsize)
            else:
                end = tail[0][0] if start < tail[0][0] else tail[0][1]
        out: list[dict[str, Any]] = []
        pos = start
        while len(out) < max_records and pos < end:
            path = self._path(pos.segment)
            limit = end.offset if pos.segment == end.segment else None
            if not path.exists():
                pos = Position(pos.segment + 1, 0)
                continue
            with open(path, "rb") as f:
                f.seek(pos.offset)
                offset = pos.offset
                while len(out) < max_records and (limit is None or offset < limit):
                    line = f.readline()
                    if not line or not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    doc = orjson.loads(line)
                    if isinstance(doc, list):
                        out.extend(doc)
                    else:  # a spool written before 2026-11-29: one record per line
                        out.append(doc)
            if limit is None and len(out) < max_records:
                pos = Position(pos.segment + 1, 0)
            else:
                pos = Position(pos.segment, offset)
        return out, pos

    def release(self, upto: Position) -> None:
        """Delete segments that lie wholly before ``upto`` (already stored)."""
        for seg in self.segments():
            if seg < upto.segment and seg != self._wseg:
                self._path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        self._wf.close()
