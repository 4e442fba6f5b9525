"""Property: how the stream is cut up (batches with clock advances between them,
snapshot/restore into a fresh engine) never changes the signals."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_rules_helpers import HOME, ev, local, registry, standard
from trygg.model import Event, Signal
from trygg.rules.engine import Engine

DEVICES = [d["id"] for d in HOME]
TYPES = {
    "bed-1": ["bed.vacant", "bed.occupied", "heartbeat"],
    "pir-bath": ["motion.detected", "heartbeat"],
    "pir-living": ["motion.detected", "heartbeat"],
    "door-1": ["door.opened", "door.closed"],
    "fall-1": ["fall.detected", "fall.cancelled", "battery"],
    "therm-1": ["temperature"],
}
RESIDENTS = ["r-1", "r-2"]
REG = registry(
    [{**d, "id": f"{d['id']}.{r}", "resident": r} for r in RESIDENTS for d in HOME],
    [
        {"id": "r-1", "team": "t"},
        {"id": "r-2", "team": "t", "overrides": {"bed-exit-no-return": {"wait": "5m"}}},
    ],
)
# more with TRYGG_RULES_EXAMPLES=500 (CI keeps the default short)
EXAMPLES = int(os.environ.get("TRYGG_RULES_EXAMPLES", "60"))
BASES = [local("2026-03-28T20:00"), local("2026-10-24T20:00"), local("2026-05-05T06:00")]


@st.composite
def streams(draw: st.DrawFn, monotone: bool = False) -> list[Event]:
    """Events of two homes. Steps are added in wall-clock time, so across a DST
    change a device's clock can jump back (late events, and clocks the engine
    judges wrong), unless ``monotone``: then time only moves forward."""
    base = draw(st.sampled_from(BASES))
    n = draw(st.integers(1, 60))
    steps = draw(st.lists(st.integers(0, 90), min_size=n, max_size=n))
    out = []
    t = base
    for i, step in enumerate(steps):
        if monotone:
            t = (t.astimezone(UTC) + timedelta(minutes=step)).astimezone(base.tzinfo)
        else:
            t = t + timedelta(minutes=step)
        r = draw(st.sampled_from(RESIDENTS))
        dev = draw(st.sampled_from(DEVICES))
        typ = draw(st.sampled_from(TYPES[dev]))
        value = None
        if typ == "temperature":
            value = float(draw(st.sampled_from([12, 15.5, 16.5, 20, 27.5, 28.5, 31])))
        elif typ == "battery":
            value = float(draw(st.sampled_from([10, 14, 16, 50, 100])))
        out.append(ev(REG, f"{dev}.{r}", typ, t, value=value, eid=f"x{i}"))
    return out


def reference(events: list[Event], end: datetime) -> list[Signal]:
    eng = Engine(standard(), REG)
    out: list[Signal] = []
    for e in events:
        out += eng.process(e)
    return out + eng.advance(end)


def by_resident(sigs: list[Signal]) -> dict[str, list[Signal]]:
    d: dict[str, list[Signal]] = {}
    for s in sigs:
        d.setdefault(s.resident, []).append(s)
    return d


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(monotone=True), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_batches_with_advances_give_the_same_signals(events: list[Event], cuts: list[int]) -> None:
    """Advancing the clock between batches changes nothing, as long as the clock
    advanced to is a true one: here every device's clock only moves forward.
    (An advance to the newest time of a device whose clock jumped back asserts
    a time the engine itself would not trust; the snapshot property below keeps
    such streams.)"""
    end = events[-1].time + timedelta(days=1)
    ref = reference(events, end)
    eng = Engine(standard(), REG)
    out: list[Signal] = []
    bounds = sorted({c % (len(events) + 1) for c in cuts} | {len(events)})
    start = 0
    for b in bounds:
        batch = events[start:b]
        for e in batch:
            out += eng.process(e)
        if batch:
            out += eng.advance(max(batch, key=lambda e: e.time.timestamp()).time)
        start = b
    out += eng.advance(end)
    assert by_resident(out) == by_resident(ref)
    key = lambda s: (s.at.timestamp(), s.resident, s.rule, s.action, s.device or "", s.events)  # noqa: E731
    assert sorted(out, key=key) == sorted(ref, key=key)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=streams(), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_snapshot_restore_anywhere_gives_the_same_signals(
    events: list[Event], cuts: list[int]
) -> None:
    end = events[-1].time + timedelta(days=1)
    ref = reference(events, end)
    eng = Engine(standard(), REG)
    out: list[Signal] = []
    cutset = {c % (len(events) + 1) for c in cuts}
    for i, e in enumerate(events):
        if i in cutset:
            blobs = {r: eng.snapshot(r) for r in RESIDENTS}
            eng = Engine(standard(), REG)
            for r, b in blobs.items():
                eng.restore(r, b)
        out += eng.process(e)
    out += eng.advance(end)
    assert out == ref
