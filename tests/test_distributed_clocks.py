"""The worker's timer clocks: the event clock from the bridges' progress
(``Sources``, events kept until it reaches them) and the wall clock per partition
(``WallClocks``, the receipt-delay correction of ``trygg.runner.timer_clock``), and
the worker's timer scan on each, through Faust's test contexts (no broker)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
S = timedelta(seconds=1)


# ------------------------------------------------------------ the event clock

faust = pytest.importorskip("faust")

from tests.test_distributed_agents import make_worker  # noqa: E402
from trygg.distributed import codecs  # noqa: E402
from trygg.distributed.worker.clocks import (  # noqa: E402
    EventClocks,
    Sources,
    WallClocks,
    record_source,
)
from trygg.model import DeviceKind, Event, EventType  # noqa: E402

T0 = NOW.timestamp()


def test_sources_run_no_further_than_the_slowest_bridge() -> None:
    src = Sources(idle_s=30)
    src.see("b1", T0 + 600, rx=T0)
    src.see("b2", T0 + 60, rx=T0)  # starved: ten minutes behind b1
    assert src.watermark() == T0 + 60
    src.see("b1", T0 + 900, rx=T0 + 1)
    assert src.watermark() == T0 + 60  # b1 going on moves nothing
    src.see("b2", T0 + 700, rx=T0 + 2)  # b2 catches up
    assert src.watermark() == T0 + 700


def test_a_bridge_announced_without_progress_holds_the_clock() -> None:
    src = Sources(idle_s=30)
    src.see("b1", T0 + 600, rx=T0)
    src.see("b2", None, rx=T0)  # started, has forwarded nothing yet
    assert src.watermark() is None
    src.see("b2", T0 + 10, rx=T0 + 1)
    assert src.watermark() == T0 + 10
    src.see("b2", None, rx=T0 + 2)  # a watermark record without progress changes nothing
    assert src.watermark() == T0 + 10


def test_an_idle_bridge_stops_holding_the_clock_and_the_clock_never_goes_back() -> None:
    src = Sources(idle_s=30)
    src.see("b1", T0 + 100, rx=T0)
    src.see("b2", T0 + 50, rx=T0)
    assert src.watermark() == T0 + 50
    src.see("b1", T0 + 3000, rx=T0 + 30)  # 30 s of b1's receipts: b2 not yet idle
    assert src.watermark() == T0 + 50
    src.see("b1", T0 + 3100, rx=T0 + 31)  # 31 s: b2 is idle (gone, or nothing to send)
    assert src.watermark() == T0 + 3100
    assert set(src.seen) == {"b1"}  # forgotten
    src.see("b2", T0 + 70, rx=T0 + 32)  # back, behind: holds nothing back
    assert src.watermark() == T0 + 3100


def test_record_source_reads_the_stamp_and_falls_back_to_the_event_time() -> None:
    e = Event("button-0001", "e1", EventType.HEARTBEAT, NOW, "r-0001", DeviceKind.BUTTON)
    rx = NOW + 2 * S
    stamped = orjson.loads(codecs.dumps(codecs.event_record(e, rx, "b1", NOW + S)))
    assert record_source(stamped) == ("b1", T0 + 1, T0 + 2)
    plain = orjson.loads(codecs.dumps(codecs.event_record(e, rx)))
    assert record_source(plain) == ("", T0, T0 + 2)  # an older bridge: the event's time
    hello = orjson.loads(codecs.dumps(codecs.watermark_record("b2", None, rx)))
    assert record_source(hello) == ("b2", None, T0 + 2)
    tick = orjson.loads(codecs.dumps(codecs.tick_record("r-0001", NOW)))
    assert record_source(tick) is None


def test_a_new_owner_waits_for_every_bridge_its_stored_states_name() -> None:
    """A new owner reads the partition again from its committed offset; a kill that cut
    a commit's state writes short leaves some residents' states behind the newest, so
    the newest stored progress (b2 at +90) can be ahead of records still to be read
    again. Each bridge the states name holds the clock until a record read again says
    how far it had got; a partition owned already keeps its clock."""
    clocks = EventClocks()
    clocks.parts[3] = kept = Sources()
    kept.see("b1", T0 + 5, T0)
    st1 = orjson.dumps({"p": 1, "src": {"b1": [T0 + 600, T0], "b2": [T0 + 60, T0]}})
    st2 = orjson.dumps({"p": 1, "src": {"b1": [T0 + 500, T0], "b2": [T0 + 90, T0 + 1]}})
    other = orjson.dumps({"p": 2, "src": {"b1": [T0 + 9000, T0 + 9]}})
    clocks.rebuild({1, 3}, [("r-1", st1), ("r-2", st2), ("r-3", other), ("r-4", b"")])
    assert clocks.clock(1) is None  # nothing read again yet: every event waits
    assert clocks.state(1) == {"b1": [None, T0], "b2": [None, T0 + 1]}
    assert clocks.clock(2) is None  # not owned
    assert clocks.parts[3] is kept and clocks.clock(3) == T0 + 5
    # the records read again: b2's first says +30, behind the newest stored +90
    ev = {"op": "ev", "t": "", "rx": datetime.fromtimestamp(T0 + 20, UTC).isoformat()}
    at = {k: datetime.fromtimestamp(T0 + k, UTC).isoformat() for k in (30, 40)}
    clocks.see(1, {**ev, "b": "b1", "bw": at[40]})
    assert clocks.clock(1) is None  # b2 not heard of yet
    clocks.see(1, {**ev, "b": "b2", "bw": at[30]})
    assert clocks.clock(1) == T0 + 30


def test_the_bridge_stamps_its_progress_capped_at_its_receipt() -> None:
    from trygg.distributed.bridge import Bridge
    from trygg.ingest.mqtt import Message
    from trygg.settings import Settings
    from trygg.simulate import build_homes, event_topic
    from trygg.simulate.generate import SimEvent

    registry, _ = build_homes(1, seed=1)
    dev = registry.devices[0].id
    b = Bridge(Settings(site="test", mqtt_client_id="bridge-a"))
    b._set_registry(registry)
    now = datetime.now(UTC)

    def msg(i: int, at: datetime) -> Message:
        e = SimEvent(int(at.timestamp()), dev, f"e{i}", "heartbeat", at.isoformat())
        return Message(event_topic("test", dev), e.payload_bytes(), i, 1)

    t1, t2 = now - timedelta(minutes=10), now - timedelta(minutes=20)
    ahead = now + timedelta(minutes=5)  # within the decoder's limits, ahead of the receipt
    records, _ = b.encode([msg(1, t1), msg(2, t2), msg(3, ahead)])
    stamps = [orjson.loads(v) for _, _, v in records]
    assert [r["b"] for r in stamps] == ["bridge-a"] * 3
    bw = [datetime.fromisoformat(r["bw"]) for r in stamps]
    assert bw[0] == bw[1] == t1  # a running maximum
    rx = datetime.fromisoformat(stamps[2]["rx"])
    assert bw[2] == rx  # a clock ahead moves the progress to the receipt, no further
    assert b.progress == rx and b.watermark_due(time.monotonic())  # never sent yet


# ------------------------------------------------------------ the wall clock per partition


def test_wall_clocks_hold_a_partition_taken_over_until_its_backlog_is_read() -> None:
    wc = WallClocks(hold_s=30)
    wc.assigned({0, 1}, {0: T0 - 3600}, at=100.0)  # partition 0 has state, 1 is new
    assert wc.clock(0, NOW, at=100.5) == NOW - timedelta(hours=1)  # held
    assert wc.clock(1, NOW, at=100.5) == NOW  # nothing to wait for
    wc.note(0, timedelta(minutes=20), at=101.0)  # the first event read: the backlog counts
    assert wc.clock(0, NOW, at=101.5) == NOW - timedelta(minutes=20)
    assert wc.clock(0, NOW, at=103.5) == NOW  # live again
    wc.assigned({1, 2}, {2: T0 - 60}, at=200.0)
    assert set(wc.parts) == {1, 2}
    assert wc.clock(2, NOW, at=229.0) == NOW - timedelta(minutes=1)
    assert wc.clock(2, NOW, at=230.5) == NOW  # a quiet partition: held 30 s at most


# ------------------------------------------------------------ the worker's timer scan


def heartbeat(i: int, at: datetime, rx: datetime, bridge: str | None = None) -> bytes:
    e = Event("button-0001", f"h{i}", EventType.HEARTBEAT, at, "r-0001", DeviceKind.BUTTON)
    return codecs.dumps(codecs.event_record(e, rx, bridge, at if bridge else None))


def scan(w: Any, rec: Any) -> list[dict[str, Any]]:
    """Run one timer scan of partition 0; the ticks it sent to the events topic."""
    w._owned = lambda topic: frozenset({0})
    before = len(rec.sent)
    asyncio.run(w.scan_timers())
    return [r for t, _, r, _ in rec.sent[before:] if r["op"] == "tick"]


def put_all(w: Any, values: list[bytes]) -> None:
    async def go() -> None:
        async with w.rules_agent.test_context() as agent:
            for v in values:
                await agent.put(key="r-0001", value=v, partition=0)

    asyncio.run(go())


def test_wall_worker_fires_no_timer_early_while_its_events_arrive_late() -> None:
    """A backlog: the device's heartbeats reach the worker 20 minutes after they were
    sent, one a second. Its offline deadline (15 min after each) is always past on the
    wall clock, but the device is not offline: its next heartbeat is on its way. Timers
    run to the wall clock less the receipt delay, so no tick, until the backlog is gone
    (the window empties) and the device really has been silent for 20 minutes."""
    w, rec = make_worker(worker_clock="wall")
    lag = timedelta(minutes=20)
    put_all(w, [heartbeat(i, NOW - lag + i * S, rx=NOW + i * S) for i in range(3)])
    deadline = w.rule_timers.due["r-0001"][1]
    assert deadline < NOW.timestamp()  # due on the wall clock
    assert scan(w, rec) == []
    w.wall_clocks.parts[0].window_s = 0.05  # let the window empty now rather than in 2 s
    time.sleep(0.1)
    ticks = scan(w, rec)
    assert [t["r"] for t in ticks] == ["r-0001"]
    assert datetime.fromisoformat(ticks[0]["at"]) == NOW


def test_wall_worker_counts_a_backlog_at_kafka_too() -> None:
    """The bridge received the heartbeats in time, but the worker reads them 20 minutes
    later (a take-over, a worker behind): the delay is counted to the worker, not to
    the bridge's receipt, so their offline deadline waits as well."""
    w, rec = make_worker(worker_clock="wall")
    old = NOW - timedelta(minutes=20)
    put_all(w, [heartbeat(i, old + i * S, rx=old + i * S) for i in range(3)])
    assert w.rule_timers.due["r-0001"][1] < NOW.timestamp()
    assert scan(w, rec) == []


def test_event_worker_waits_for_the_slower_bridge() -> None:
    """Two bridges forward the events of one partition; bridge b is starved, behind a.
    r-0001's heartbeats come at t, t+10 and t+20 min: in time order the device is never
    15 min silent. b holds the one at t+10 while a forwards t+20. Applied on arrival,
    t+20 would fire device-offline (due t+15) before t+10 came, and a tick on a's newest
    event less the lag would as well. The worker keeps a's events until b has reached
    them, and runs timers to b's progress less the lag."""
    w, rec = make_worker(worker_clock="event")
    lag = timedelta(seconds=w.settings.worker_event_clock_lag_s)
    t = NOW - timedelta(hours=1)
    m = timedelta(minutes=1)

    def hb(dev: str, i: int, at: datetime, bridge: str) -> bytes:
        resident = "r-" + dev.rsplit("-", 1)[1]
        e = Event(dev, f"h{i}", EventType.HEARTBEAT, at, resident, DeviceKind.BUTTON)
        return codecs.dumps(codecs.event_record(e, NOW, bridge, at))

    w._owned = lambda topic: frozenset({0})

    async def go() -> list[datetime]:
        async with w.rules_agent.test_context() as agent:

            async def put(key: str, value: bytes) -> None:
                await agent.put(key=key, value=value, partition=0)

            async def scan() -> list[datetime]:
                """A timer scan, its ticks applied as the events topic would bring them."""
                before = len(rec.sent)
                await w.scan_timers()
                ticks = [r for _, _, r, _ in rec.sent[before:] if r["op"] == "tick"]
                for r in ticks:
                    await put(r["r"], codecs.dumps(r))
                return [datetime.fromisoformat(r["at"]) for r in ticks]

            await put("b", codecs.dumps(codecs.watermark_record("b", None, NOW)))  # b started
            await put("r-0001", hb("button-0001", 1, t, "a"))
            await put("r-0001", hb("button-0001", 3, t + 20 * m, "a"))
            assert await scan() == []  # b has forwarded nothing: no clock, nothing applied
            assert (
                w.stats["events"] == 2 and len(orjson.loads(w.rules_state("r-0001"))["pend"]) == 2
            )
            await put("r-0002", hb("button-0002", 9, t + 5 * m, "b"))
            assert w.event_clocks.clock(0) == (t + 5 * m).timestamp()  # b's, not a's t+20
            ticked = await scan()  # releases the heartbeat at t, keeps the one at t+20
            assert ticked == [t + 5 * m - lag]
            assert len(orjson.loads(w.rules_state("r-0001"))["pend"]) == 1
            await put("r-0001", hb("button-0001", 2, t + 10 * m, "b"))  # applied at once
            # b's progress, sent to every partition, lets a's t+20 through
            await put("b", codecs.dumps(codecs.watermark_record("b", t + 30 * m, NOW + S)))
            ticked += await scan()
            return ticked

    ticked = asyncio.run(go())
    assert ticked[-1] == t + 20 * m - lag  # a's progress is now the smaller
    state = orjson.loads(w.rules_state("r-0001"))
    assert "pend" not in state and set(state["src"]) == {"a", "b"}
    assert state["keys"] == ["button-0001|h1", "button-0001|h3", "button-0001|h2"]
    # (the home's other devices, never heard of, are offline from t+15 on: as in replay)
    fired = [
        (r["rule"], r["dev"]) for _, _, r, _ in rec.sent if r["op"] == "sig" and r["a"] == "fire"
    ]
    assert ("device-offline", "button-0001") not in fired
    # r-0002's button, heard of at t+5 only, is due at t+20: past the clock (t+18) not yet
    assert ("device-offline", "button-0002") not in fired
    assert ("device-offline", "door-0001") in fired  # never heard of: due t+15
