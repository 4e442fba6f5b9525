"""Each owned partition's keys by their next deadline: which residents (or alerts)
the timer scan ticks now.

Pure (the scan, ``timer_scan.TimerScan``, sends the ticks): rebuilt from a table's
states whenever the assignment changes, so a timer lives in the table, never only
here (docs/distributed.md, "Delivery guarantees").
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable

import orjson


def state_index(state: bytes | str) -> tuple[int | None, float | None, float | None]:
    """(partition, next deadline, newest event time) of a rules or alerts state."""
    doc = orjson.loads(state)
    return doc.get("p"), doc.get("next"), doc.get("wm")


class TimerIndex:
    """Each owned partition's residents by next deadline, rebuilt from the table.

    A scan pops only the due residents (a heap per partition). Entries go
    stale when a resident's deadline moves; ``due`` keeps the current one and
    stale entries are skipped. A resident that was ticked is ticked again
    after ``retry_s`` if its deadline has not moved (the tick was lost, e.g.
    in a rebalance).
    """

    def __init__(self, retry_s: float = 5.0) -> None:
        self.heaps: dict[int, list[tuple[float, str]]] = {}
        self.due: dict[str, tuple[int, float]] = {}
        self.wm: dict[int, float] = {}
        self.ticked: dict[str, tuple[float, float]] = {}
        self.retry_s = retry_s

    def update(
        self, partition: int, resident: str, deadline: float | None, wm: float | None
    ) -> None:
        if wm is not None and wm > self.wm.get(partition, float("-inf")):
            self.wm[partition] = wm
        if deadline is None:
            self.due.pop(resident, None)
            return
        if self.due.get(resident) == (partition, deadline):
            return
        self.due[resident] = (partition, deadline)
        heapq.heappush(self.heaps.setdefault(partition, []), (deadline, resident))

    def rebuild(self, partitions: set[int], items: Iterable[tuple[str, bytes | str]]) -> None:
        """Start over from the table's entries of the owned ``partitions``."""
        self.heaps = {p: [] for p in partitions}
        self.due.clear()
        self.ticked.clear()
        self.wm = {}
        for resident, state in items:
            if not state:
                continue
            p, nxt, wm = state_index(state)
            if p in partitions:
                self.update(p, resident, nxt, wm)
        for h in self.heaps.values():
            heapq.heapify(h)

    def pop_due(self, partition: int, now: float) -> list[str]:
        h = self.heaps.get(partition)
        if not h:
            return []
        out: list[str] = []
        keep: list[tuple[float, str]] = []
        mono = time.monotonic()
        while h and h[0][0] <= now:
            d, rid = heapq.heappop(h)
            if self.due.get(rid) != (partition, d):
                continue  # stale
            t = self.ticked.get(rid)
            keep.append((d, rid))
            if t is not None and t[0] == d and mono - t[1] < self.retry_s:
                continue
            self.ticked[rid] = (d, mono)
            out.append(rid)
        for e in keep:
            heapq.heappush(h, e)
        return out

    def next_deadline(self, partitions: Iterable[int]) -> float | None:
        best: float | None = None
        for p in partitions:
            h = self.heaps.get(p)
            if h and (best is None or h[0][0] < best):
                best = h[0][0]
        return best
