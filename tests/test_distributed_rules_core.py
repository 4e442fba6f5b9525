"""The rules core's live states kept between steps (issue 17, item 4) answer to the
table value, not to what the core last made: a state another worker wrote (a
take-over) or a step whose state never reached the table is decoded from the value.

Pure cores, no broker: ``RulesCore.step`` on the state bytes a table would hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tests.conftest import REPO
from trygg.distributed import codecs
from trygg.distributed.worker.rules_core import RulesCore
from trygg.model import DeviceKind, Event, EventType, Room
from trygg.rules import Engine, load_catalogue
from trygg.simulate import build_homes

T0 = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
RES = "r-0001"


def _core() -> RulesCore:
    registry, _ = build_homes(3, seed=1)
    return RulesCore(Engine(load_catalogue([REPO / "rules"]), registry))


def _motion(n: int) -> dict[str, Any]:
    at = T0 + timedelta(minutes=n)
    e = Event(
        "motion-bathroom-0001",
        f"m{n}",
        EventType.MOTION_DETECTED,
        at,
        RES,
        DeviceKind.MOTION,
        room=Room.BATHROOM,
    )
    return codecs.loads(codecs.dumps(codecs.event_record(e, at)))


def _steps(core: RulesCore, state: bytes | None, events: range) -> bytes | None:
    for n in events:
        res = core.step(RES, state, _motion(n), 0, offset=n)
        assert res.state is not None, n
        state = res.state
    return state


def test_a_state_written_by_another_worker_is_read_from_the_table() -> None:
    a, b, fresh = _core(), _core(), _core()
    s2 = _steps(a, None, range(0, 2))  # a holds its live state for s2
    s4 = _steps(b, s2, range(2, 4))  # the partition moved: b took events 2 and 3 in
    # back on a with b's value: a's held state (events 0-1) must not be used
    got = _steps(a, s4, range(4, 5))
    assert got == _steps(fresh, s4, range(4, 5))
    keys = orjson.loads(got or b"{}")["keys"]
    assert keys == [f"motion-bathroom-0001|m{n}" for n in range(5)]


def test_a_step_whose_state_was_never_written_is_applied_again() -> None:
    core, fresh = _core(), _core()
    s1 = _steps(core, None, range(0, 1))
    res = core.step(RES, s1, _motion(1), 0, offset=1)  # its state is lost (never written)
    assert res.state is not None and res.applied
    # read again from the table's value s1: event 1 is applied, not taken as done
    again = core.step(RES, s1, _motion(1), 0, offset=1)
    assert again.applied == [("motion-bathroom-0001", "m1")]
    assert again.state == fresh.step(RES, s1, _motion(1), 0, offset=1).state
    # and a record at or below the state's offset is still skipped
    assert core.step(RES, again.state, _motion(1), 0, offset=1).duplicate
