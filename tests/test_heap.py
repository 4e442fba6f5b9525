"""trygg.heap: a process's start-up objects leave the collector's full passes.

Run in a child process: freezing pytest's own heap would keep every later test's
objects from ever being collected. Object counts, not times (a timed test fails on a
busy machine; the pause itself is measured in bench/bench_distributed.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import gc, json, weakref

import trygg.distributed.worker.app  # the worker's imports: Faust, aiokafka, pydantic, ...
from trygg.heap import freeze_startup_heap


class Node:
    pass


a, b = Node(), Node()
a.other, b.other = b, a  # a cycle: garbage only a collection frees
gone = weakref.ref(a)
del a, b
before = len(gc.get_objects())  # what a full pass walks
frozen = freeze_startup_heap()
kept = [Node() for _ in range(1000)]  # made after the freeze
print(json.dumps({
    "before": before,
    "frozen": frozen,
    "walked_after": len(gc.get_objects()),
    "cycle_freed": gone() is None,
    "later_tracked": all(gc.is_tracked(k) for k in kept),
}))
"""


def test_a_full_pass_after_start_up_walks_only_what_came_later() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # the worker's imports are a large heap, and the freeze takes (nearly) all of it
    assert got["before"] > 50_000, got
    assert got["frozen"] > 0.9 * got["before"], got
    # a full collection now walks a small fraction of it: the 1,000 new objects and
    # what the freeze's own log line made, not the imports
    assert got["walked_after"] < 0.05 * got["before"], got
    assert got["walked_after"] >= 1_000, got
    # garbage made before the freeze was collected first, not frozen for good
    assert got["cycle_freed"], got
    assert got["later_tracked"], got
