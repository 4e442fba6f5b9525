"""The start-up heap, kept out of the garbage collector's full passes.

CPython's full collection (generation 2) walks every object the process tracks, and
it stops the event loop while it does. Before a trygg process handles its first event it
holds many such objects (76,000 after the worker's imports alone): the modules, classes
and functions of its imports (Faust, aiokafka, pydantic, psycopg, ...) and its wiring.
In a worker a full collection took 70-100 ms, every 8-40 s in the benchmark's stages,
with both workers often at the same moment: every alarm in flight waited that long
(bench/RESULTS.md, 2026-12-07 late evening; docs/distributed.md, "An alarm's path at
steady state").

Those objects live as long as the process and never become garbage, so once the
process is built they are moved out of the collector's sight (``gc.freeze``); the full
passes after that walk only what came later and took 2-4 ms in the same benchmark.
Garbage present at that moment is collected first, so nothing is frozen that could
have been freed. Objects made after the freeze are collected as before.
"""

from __future__ import annotations

import gc

from trygg import logs

log = logs.get("trygg.heap")


def freeze_startup_heap() -> int:
    """Collect, then freeze what is left; call once, when the process is built and
    before it takes its first event. Returns how many objects were frozen (logged)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen", objects=frozen)
    return frozen
