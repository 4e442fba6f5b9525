"""A durable local spool: the hand-off between receiving and storing.

An MQTT message is acknowledged once its events are appended here and
fsync'ed, not when the database has them, so alerting never waits for
PostgreSQL and a database outage costs disk space, not data. The spool is a
directory of append-only segment files of JSON lines::

    spool-000001.jsonl  spool-000002.jsonl ...

A reader drains records from a position ``(segment, offset)``; the drainer
stores that position in the database in the same transaction as the records
(see ``trygg.store.spooled``), so replay after a crash applies each record
exactly once. Segments wholly before the stored position are deleted. The
spool is bounded: ``full`` tells the runner to stop taking messages, and the
broker keeps them meanwhile.
"""

from __future__ import annotations

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
        self, directory: Path, segment_bytes: int = 64 << 20, max_bytes: int = 4 << 30
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

    def append(self, records: Sequence[dict[str, Any]]) -> Position:
        """Append records durably (write + fsync); return the new end position."""
        buf = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._lock:
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

    # --- reading ------------------------------------------------------------
    def read(
        self, start: Position, max_records: int = 5000
    ) -> tuple[list[dict[str, Any]], Position]:
        """Records after ``start`` (at most ``max_records``) and the position after them."""
        out: list[dict[str, Any]] = []
        pos = start
        end = self.end
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
                    out.append(orjson.loads(line))
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
