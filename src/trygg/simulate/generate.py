"""Event generation: daily routines, injected incidents and their ground truth.

The generator is lazy. Each home plans one *unit* at a time, from waking up
on a local date to waking up on the next (so a night is never cut in two),
as a short sorted list of behaviour events (motion, bed, door, doses,
battery and temperature readings, incidents). Heartbeats are not stored but
computed per window. The homes are merged window by window (one hour of
simulated time) with a sort, so memory stays at one unit per home plus one
window, whatever the duration.

All routine times are local wall-clock times in the resident's timezone
(zoneinfo), so daylight-saving changes move nothing: bedtime stays at 22:40
local on the night clocks go forward.

The hot path uses plain tuples and hand-built JSON, not pydantic: a week for
a thousand residents is tens of millions of events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from trygg.simulate.events import SimEvent, TimeFormat
from trygg.simulate.homes import Home
from trygg.simulate.incidents import (
    DEFAULT_RATES,
    INCIDENT_RULES,
    MALFORMED_KINDS,
    Truth,
    make_rates,
    malformed,
)
from trygg.simulate.routine import HomeSim

__all__ = [
    "DEFAULT_RATES",
    "INCIDENT_RULES",
    "MALFORMED_KINDS",
    "SimEvent",
    "Truth",
    "generate",
    "make_rates",
]


def _epoch(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("simulation start and end must be timezone-aware")
    return int(t.timestamp())


def generate(
    homes: list[Home],
    start: datetime,
    end: datetime,
    seed: int = 1,
    rates: Mapping[str, float] | None = None,
    truth: list[Truth] | None = None,
    *,
    window: int = 3600,
) -> Iterator[SimEvent]:
    """Generate the homes' events in [start, end), time-ordered and lazily.

    ``rates`` (see ``make_rates``/``DEFAULT_RATES``) are expected incidents
    per resident-day. Injected incidents are appended to ``truth`` as they
    are planned (the alerts for conditions carried over from before
    ``start`` once the first events decide them); their ``events`` fill in
    as the events are generated.
    Event ids are ``e-NNNNNN``, unique in the whole run (so per device too).
    Equal times are ordered by home, then by generation order.
    """
    s, e = _epoch(start), _epoch(end)
    rates = dict(DEFAULT_RATES) if rates is None else dict(rates)
    sims = [HomeSim(h, seed, rates, s, e, truth) for h in homes]
    fmts: dict[str, TimeFormat] = {}
    by_index: dict[int, TimeFormat] = {}
    for h in homes:
        by_index[h.index] = fmts.setdefault(h.timezone, TimeFormat(h.tz))
    counter = 0
    w = s
    while w < e:
        w1 = min(w + window, e)
        batch: list[tuple[Any, ...]] = []
        for sim in sims:
            sim.collect(w, w1, batch)
        batch.sort()
        for ts, hi, _n, dev, typ, val, room, tags, flag in batch:
            tstr = by_index[hi](ts)
            if flag == 2:
                yield malformed(SimEvent(ts, dev, "", "", tstr), val, seed)
                continue
            counter += 1
            eid = f"e-{counter:06d}"
            if tags:
                for lst in tags:
                    lst.append(eid)
            ev = SimEvent(ts, dev, eid, typ, tstr, val, room)
            yield ev
            if flag == 1:
                yield ev._replace(duplicate=True)
        w = w1
