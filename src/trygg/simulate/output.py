"""Writing simulated traffic to files: replay JSONL, ground truth, malformed payloads."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from trygg.simulate.events import SimEvent
from trygg.simulate.incidents import Truth


@dataclass(slots=True)
class WriteStats:
    events: int = 0
    duplicates: int = 0
    malformed: int = 0


def write_jsonl(
    events: Iterable[SimEvent],
    out: IO[str],
    *,
    malformed_out: IO[str] | None = None,
    stats: WriteStats | None = None,
) -> WriteStats:
    """Write events in the replay format (payload plus ``"device"``), one a line.

    Duplicate re-sends are written too (they are valid events with a repeated
    id: the consumer is expected to drop them). Malformed payloads cannot be
    events, so they go to ``malformed_out`` (see ``malformed_line``) or nowhere.
    """
    st = stats if stats is not None else WriteStats()
    write = out.write
    buf: list[str] = []
    append = buf.append
    n = dups = bad = 0
    for ev in events:
        if ev.raw is not None:
            bad += 1
            if malformed_out is not None:
                malformed_out.write(malformed_line(ev) + "\n")
            continue
        if ev.duplicate:
            dups += 1
        n += 1
        # inlined SimEvent.jsonl(): this is the hot path
        s = f'{{"device":"{ev.device}","id":"{ev.id}","type":"{ev.type}","time":"{ev.time}"'
        if ev.value is not None:
            s += f',"value":{ev.value}'
        if ev.room is not None:
            s += f',"room":"{ev.room}"'
        append(s + "}\n")
        if len(buf) >= 4096:
            write("".join(buf))
            buf.clear()
    if buf:
        write("".join(buf))
    st.events += n
    st.duplicates += dups
    st.malformed += bad
    return st


def malformed_line(ev: SimEvent) -> str:
    """A malformed message as one JSON line: device, kind, time and raw bytes (base64)."""
    raw = ev.raw or b""
    return json.dumps(
        {
            "device": ev.device,
            "kind": ev.malformed,
            "time": ev.time,
            "raw_b64": base64.b64encode(raw).decode(),
        },
        separators=(",", ":"),
    )


def truth_lines(truth: Iterable[Truth]) -> Iterator[str]:
    """Ground-truth records as JSON lines, in order of start time."""
    for t in sorted(truth, key=lambda t: (t.start_ts, t.resident, t.incident)):
        yield json.dumps(t.to_dict(), separators=(",", ":"))


def write_truth(truth: Iterable[Truth], out: IO[str]) -> int:
    n = 0
    for line in truth_lines(truth):
        out.write(line + "\n")
        n += 1
    return n
