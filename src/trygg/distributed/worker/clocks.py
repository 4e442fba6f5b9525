"""The rule timers' clocks, one per owned partition of the events topic.

On the event clock (``worker_clock = event``, back-fills and tests) a partition's
clock is the slowest bridge's progress (``Sources``, ``EventClocks``); on the wall
clock (production) it is the wall clock less the partition's receipt delay
(``WallClocks``). Pure: every time is passed in. See docs/distributed.md, "Timers:
the wall clock and the event clock".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from trygg.runner.timer_clock import ReceiptClock

SOURCE_IDLE_S = 30.0  # a bridge quiet on a partition this long no longer holds its clock
TAKEOVER_HOLD_S = 30.0  # wall clock: how long a new partition's clock may wait for its backlog


class Sources:
    """One partition's event clock: the bridges' progress, like Flink's per-input watermark.

    Two bridges forward a resident's events side by side, and each forwards its
    share of the MQTT stream in the order it received it. The newest event time of
    a partition is therefore no measure of what is still on its way: while one
    bridge is starved of CPU, the other's newer events move the partition's
    newest time ahead, and a clock derived from it fires timers before the starved
    bridge's older events arrive. So every bridge stamps each event with its own
    progress (``bw``: the newest event time it has forwarded, at most its receipt
    time) and sends that progress on its own (``op: wm``) to every partition once a
    second when it moved, and once at start with no progress. A partition's event
    clock is the *smallest* progress over its bridges: nothing a bridge sends later
    is older than its progress, so no event still in flight is older than that.

    A bridge that has not been heard of on this partition for ``idle_s`` of the
    partition's receipt time (the newest ``rx`` from any bridge) is idle: it no
    longer holds the clock back (Flink's idle sources), and is forgotten. A bridge
    announced without progress holds the clock (None) until its first event or
    until it is idle. The clock never goes back. Records without a stamp (an older
    bridge) count as one unnamed source whose progress is their event time.

    ``seen``: bridge -> [progress or None, newest rx] (epoch s), as kept in the
    rules state (``src``) so a new owner of the partition knows its bridges.
    """

    __slots__ = ("floor", "idle_s", "seen")

    def __init__(self, idle_s: float = SOURCE_IDLE_S) -> None:
        self.idle_s = idle_s
        self.seen: dict[str, list[float | None]] = {}
        self.floor: float | None = None

    def see(self, bridge: str, progress: float | None, rx: float) -> None:
        prev = self.seen.get(bridge)
        if prev is None:
            self.seen[bridge] = [progress, rx]
            return
        p0, rx0 = prev
        if progress is not None and (p0 is None or progress > p0):
            prev[0] = progress
        if rx0 is None or rx > rx0:
            prev[1] = rx

    def name_bridges(self, seen: dict[str, Any]) -> None:
        """Take in the bridges a stored ``src`` map (a resident's state) names, without
        their progress: each holds the clock until a record says how far it had got
        (``EventClocks.rebuild``)."""
        for bridge, (_progress, rx) in seen.items():
            self.see(bridge, None, rx)

    def watermark(self) -> float | None:
        """The smallest progress over the bridges not idle (None: not known yet)."""
        seen = self.seen
        if seen:
            newest = max(v[1] or 0.0 for v in seen.values())
            for bridge in [b for b, v in seen.items() if newest - (v[1] or 0.0) > self.idle_s]:
                del seen[bridge]
            ps = [v[0] for v in seen.values()]
            if all(p is not None for p in ps):
                low = min(p for p in ps if p is not None)
                if self.floor is None or low > self.floor:
                    self.floor = low
        return self.floor


def record_source(rec: dict[str, Any]) -> tuple[str, float | None, float] | None:
    """(bridge, progress, receipt time) of an events-topic record, as epoch seconds;
    None for a record that says nothing about a bridge (a tick)."""
    op = rec.get("op")
    if op == "wm":
        bw = rec.get("bw")
        return rec["b"], epoch(bw) if bw else None, epoch(rec["rx"])
    if op != "ev":
        return None
    rx = epoch(rec["rx"])
    bw = rec.get("bw")
    if bw:
        return rec.get("b") or "", epoch(bw), rx
    return "", min(epoch(rec["t"]), rx), rx


def epoch(v: str | datetime) -> float:
    """Epoch seconds of an ISO 8601 time (or of a datetime)."""
    return (v if isinstance(v, datetime) else datetime.fromisoformat(v)).timestamp()


def timestamp(dt: datetime | None) -> float | None:
    """Epoch seconds of a time (None: none)."""
    return dt.timestamp() if dt is not None else None


class EventClocks:
    """The event clock (``worker_clock = event``) of each owned partition (``Sources``)."""

    def __init__(self, idle_s: float = SOURCE_IDLE_S) -> None:
        self.idle_s = idle_s
        self.parts: dict[int, Sources] = {}

    def _of(self, partition: int) -> Sources:
        src = self.parts.get(partition)
        if src is None:
            src = self.parts[partition] = Sources(self.idle_s)
        return src

    def see(self, partition: int, rec: dict[str, Any]) -> bool:
        """Take in a record's stamp; False if it carries none."""
        s = record_source(rec)
        if s is None:
            return False
        self._of(partition).see(*s)
        return True

    def state(self, partition: int) -> dict[str, list[float | None]]:
        """What to keep in a resident's state (a copy of the partition's ``seen``)."""
        src = self.parts.get(partition)
        return {b: list(v) for b, v in src.seen.items()} if src is not None else {}

    def rebuild(self, partitions: set[int], items: Iterable[tuple[str, bytes | str]]) -> None:
        """The owned partitions changed: forget those no longer owned, keep those still
        owned, and start each new one from the bridges its stored rules states name
        (``src``), none with progress.

        A new owner reads a partition again from its committed offset, which can be
        behind the partition's newest stored state: the states are written one record
        a resident at each commit, and a worker killed in the middle of those writes
        leaves some residents' states newer than others'. A clock started at the newest
        progress would release the events read again of the residents left behind at
        once, in arrival order rather than time order, and fire their timers on the
        way. Named without progress, every bridge holds the clock until a record read
        again says how far it had got (``Sources``: a bridge announced without
        progress); an idle one still stops holding it."""
        self.parts = {p: src for p, src in self.parts.items() if p in partitions}
        new = {p: Sources(self.idle_s) for p in partitions if p not in self.parts}
        if not new:
            return
        for _, state in items:
            if not state:
                continue
            doc = orjson.loads(state)
            p, seen = doc.get("p"), doc.get("src")
            if seen and p in new:
                new[p].name_bridges(seen)
        self.parts.update(new)

    def clock(self, partition: int) -> float | None:
        src = self.parts.get(partition)
        return src.watermark() if src is not None else None


class WallClocks:
    """The wall clock of each owned partition (``worker_clock = wall``, production).

    The embedded runner's receipt-delay correction (``trygg.runner.timer_clock``,
    the same class), one per partition: a worker behind on one partition (a take-over,
    a backlog at Kafka or at mosquitto) holds only that partition's timers back. A
    partition's delay is fed with each event the rules agent applies (not late, not a
    repeat): the time it reached the engine - its event time.

    A partition just taken over has read none of its backlog when the first scan
    comes, and its window is empty, which would mean "live": its clock is held at
    the newest event time its table holds until the rules agent has applied a new
    event of it, or ``hold_s`` at most (a quiet partition)."""

    def __init__(self, hold_s: float = TAKEOVER_HOLD_S) -> None:
        self.hold_s = hold_s
        self.parts: dict[int, ReceiptClock] = {}
        self.held: dict[int, tuple[float, float]] = {}  # partition -> (clock, until (mono))

    def assigned(self, partitions: set[int], newest: dict[int, float], at: float) -> None:
        """The owned partitions changed: start a clock (held) for each new one."""
        for p in [p for p in self.parts if p not in partitions]:
            del self.parts[p]
            self.held.pop(p, None)
        for p in partitions:
            if p not in self.parts:
                self.parts[p] = ReceiptClock()
                if p in newest:
                    self.held[p] = (newest[p], at + self.hold_s)

    def note(self, partition: int, delay: timedelta, at: float) -> None:
        self.held.pop(partition, None)
        rc = self.parts.get(partition)
        if rc is None:
            rc = self.parts[partition] = ReceiptClock()
        rc.note(delay, at)

    def clock(self, partition: int, now: datetime, at: float) -> datetime:
        held = self.held.get(partition)
        if held is not None:
            if at < held[1]:
                return min(now, datetime.fromtimestamp(held[0], UTC))
            del self.held[partition]
        rc = self.parts.get(partition)
        return rc.clock(now, at) if rc is not None else now
