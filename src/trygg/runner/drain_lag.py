"""How far storing lags behind receipt: a stored run's lag, and when a record came about.

The drainer reports, for each run it stores, the seconds from each event's
receipt to the commit, bucketed (``receipt_lags``), and the runner adds them up
(``trygg.runner.drainer.DrainerProcess.lag``); the distributed runner's sink
reports its own the same way. ``record_time`` dates a spooled record, for the
age of the backlog not yet stored.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from typing import Any

# trygg_drainer_lag_seconds (/metrics): from an event's receipt to its commit, a
# fraction of a second, or as long as the database was away. Counted in the
# drainer process, and added up by the runner (DrainerProcess.lag).
LAG_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
)  # fmt: skip


def receipt_lags(records: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    """The drainer's lag for a stored run, seconds from each event's receipt to
    ``now``, as counts per ``LAG_BUCKETS`` bucket (the last one +Inf) and their
    sum: a line of fixed size on the pipe however many events the run held. The
    runner gives a batch's events one receipt time: one parse per batch."""
    by_rx: dict[str, int] = {}
    for r in records:
        if r.get("op") == "ev" and isinstance(rx := r.get("rx"), str):
            by_rx[rx] = by_rx.get(rx, 0) + 1
    if not by_rx:
        return None
    counts = [0] * (len(LAG_BUCKETS) + 1)
    total = 0.0
    for rx, n in by_rx.items():
        try:
            lag = max(0.0, now - datetime.fromisoformat(rx).timestamp())
        except ValueError:
            continue
        counts[bisect.bisect_left(LAG_BUCKETS, lag)] += n
        total += lag * n
    return {"n": counts, "sum": round(total, 6)}


def record_time(r: dict[str, Any]) -> datetime | None:
    """When a spooled record came about: an event's or dead letter's receipt, an
    alert change's first record, an access or a delivery; None if it tells no time."""
    at = r.get("rx") or r.get("at")
    if at is None and r.get("op") == "achg" and r.get("recs"):
        at = r["recs"][0].get("at")
    if at is None and r.get("op") == "outbox" and r.get("rows"):
        at = r["rows"][0].get("due_at")
    try:
        t = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        return None
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC)
