"""The worker's rules and alerts agents through Faust's own test contexts (no broker).

``agent.test_context()`` runs the real agent function over an in-memory channel;
the Faust tables are the real ones (memory store). What the agents send to
other topics is captured by a recording sender in place of the producer.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

faust = pytest.importorskip("faust")

from tests.conftest import REPO  # noqa: E402
from trygg.distributed import codecs  # noqa: E402
from trygg.distributed.worker.alerts_core import AlertsCore  # noqa: E402
from trygg.distributed.worker.app import Worker  # noqa: E402
from trygg.distributed.worker.rules_core import RulesCore  # noqa: E402
from trygg.model import DeviceKind, Event, EventType, Room  # noqa: E402
from trygg.rules import Engine, load_catalogue  # noqa: E402
from trygg.runner.routing import default_routing  # noqa: E402
from trygg.settings import Settings  # noqa: E402
from trygg.simulate import build_homes  # noqa: E402


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], int | None]] = []

    async def send_all(self, items: list[tuple[Any, str, bytes, int | None]]) -> None:
        self.sent += [(t.get_topic_name(), k, codecs.loads(v), p) for t, k, v, p in items]

    def ops(self, topic: str) -> list[str]:
        return [r["op"] for t, _, r, _ in self.sent if t == topic]


NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def make_worker(**settings: Any) -> tuple[Worker, Recorder]:
    registry, _ = build_homes(3, seed=1)
    cat = load_catalogue([REPO / "rules"])
    rec = Recorder()
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    s = Settings(kafka_partitions=4, **settings)
    w = Worker(
        s, rules=RulesCore(Engine(cat, registry)), alerts=alerts, sender=rec, clock=lambda: NOW
    )
    w.app.finalize()
    w.app.conf.store = "memory://"
    w.app.flow_control.resume()
    return w, rec


def ev(
    device: str,
    eid: str,
    typ: EventType,
    at: datetime,
    kind: DeviceKind,
    rx: datetime | None = None,
    **kw: Any,
) -> bytes:
    """An event record as the bridge sends it; ``rx``: when the bridge received it."""
    resident = "r-" + device.rsplit("-", 1)[1]
    e = Event(device, eid, typ, at, resident, kind, **kw)
    return codecs.dumps(codecs.event_record(e, rx or at))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_rules_agent_signals_state_and_redelivery() -> None:
    w, rec = make_worker()

    async def go() -> None:
        async with w.rules_agent.test_context() as agent:
            button = ev("button-0001", "e1", EventType.BUTTON_PRESSED, NOW, DeviceKind.BUTTON)
            await agent.put(key="r-0001", value=button)
            await agent.put(key="r-0001", value=button)  # MQTT or Kafka re-delivery
            motion = ev(
                "motion-bathroom-0001",
                "e2",
                EventType.MOTION_DETECTED,
                NOW,
                DeviceKind.MOTION,
                room=Room.BATHROOM,
            )
            await agent.put(key="r-0001", value=motion)

    run(go())
    sigs = [r for t, k, r, _ in rec.sent if r["op"] == "sig"]
    assert [(s["rule"], s["r"], s["a"]) for s in sigs] == [("button", "r-0001", "fire")]
    assert w.stats["duplicates"] == 1 and w.stats["events"] == 2
    state = orjson.loads(w.rules_state("r-0001"))
    assert state["keys"] == ["button-0001|e1", "motion-bathroom-0001|e2"]
    # the resident's next deadline is in the state, so a timer scan finds it
    assert state["next"] is not None and state["next"] > NOW.timestamp()
    assert w.rule_timers.due["r-0001"][1] == state["next"]


def test_rules_agent_tick_fires_absence_timer_once() -> None:
    w, rec = make_worker()

    async def go() -> None:
        async with w.rules_agent.test_context() as agent:
            motion = ev(
                "motion-bathroom-0001",
                "e1",
                EventType.MOTION_DETECTED,
                NOW,
                DeviceKind.MOTION,
                room=Room.BATHROOM,
            )
            await agent.put(key="r-0001", value=motion)
            tick = codecs.dumps(codecs.tick_record("r-0001", NOW + timedelta(minutes=61)))
            await agent.put(key="r-0001", value=tick)
            await agent.put(key="r-0001", value=tick)  # a tick sent twice fires nothing more

    run(go())
    fired = [r["rule"] for _, _, r, _ in rec.sent if r["op"] == "sig" and r["a"] == "fire"]
    assert fired.count("long-bathroom-stay") == 1


def test_alerts_agent_raises_once_routes_and_cancels() -> None:
    w, rec = make_worker()
    e = Event("button-0001", "e1", EventType.BUTTON_PRESSED, NOW, "r-0001", DeviceKind.BUTTON)
    from trygg.model import Severity, Signal, SignalAction

    fire = Signal(SignalAction.FIRE, "button", "r-0001", NOW, "4.13", Severity.RED, "v1", ("e1",))
    reset = Event("button-0001", "e2", EventType.ALARM_RESET, NOW, "r-0001", DeviceKind.BUTTON)

    async def go() -> None:
        async with w.alerts_agent.test_context() as agent:
            await agent.put(key="r-0001", value=codecs.dumps(codecs.signal_record(fire)))
            await agent.put(key="r-0001", value=codecs.dumps(codecs.signal_record(fire)))
            await agent.put(key="r-0001", value=codecs.dumps(codecs.reset_record(reset)))

    run(go())
    assert e.resident == "r-0001"
    changes = [r for t, _, r, _ in rec.sent if r["op"] == "achg"]
    steps = [x["step"] for c in changes for x in c["recs"]]
    assert steps.count("raised") == 1  # the re-delivered signal is dropped
    assert "notified" in steps  # routed at once (escalation level 1)
    assert steps[-1] == "cancelled"  # the device reset cancels it before anyone answered
    assert rec.ops("trygg-notifications")  # notifications for the notify agent
    ids = {c["snap"]["id"] for c in changes}
    assert len(ids) == 1
    # the alert id derives from resident and signal: the same signal gives the same id
    w2, rec2 = make_worker()

    async def again() -> None:
        async with w2.alerts_agent.test_context() as agent:
            await agent.put(key="r-0001", value=codecs.dumps(codecs.signal_record(fire)))

    run(again())
    assert {r["snap"]["id"] for _, _, r, _ in rec2.sent if r["op"] == "achg"} == ids
    state = orjson.loads(w.alerts_table["r-0001"])
    assert [recs[-1]["step"] for recs in state["alerts"]] == ["cancelled"]


def test_rules_agent_alerts_late_alarms_and_judges_a_clock_ahead() -> None:
    """The late-event policy through the worker's rules agent, as in the embedded
    runner and replay (rules/tests/late-events.yaml): an alarm ten minutes late and
    one thirty minutes behind its own button are both alerted; a thermometer an
    hour ahead of the bridge's clock raises device-clock, hides no button press and
    makes no other device look offline."""
    w, rec = make_worker()
    b, t = DeviceKind.BUTTON, DeviceKind.THERMOMETER

    async def go() -> None:
        async with w.rules_agent.test_context() as agent:
            put = agent.put
            motion = EventType.MOTION_DETECTED
            await put(
                key="r-0001", value=ev("motion-kitchen-0001", "m1", motion, NOW, DeviceKind.MOTION)
            )
            press = EventType.BUTTON_PRESSED
            ten_late = NOW - timedelta(minutes=10)
            await put(key="r-0001", value=ev("button-0001", "p1", press, ten_late, b, rx=NOW))
            await put(key="r-0001", value=ev("button-0001", "h1", EventType.HEARTBEAT, NOW, b))
            thirty = NOW - timedelta(minutes=30)
            await put(key="r-0001", value=ev("button-0001", "p2", press, thirty, b, rx=NOW))
            fast = ev(
                "thermometer-0001",
                "t1",
                EventType.TEMPERATURE,
                NOW + timedelta(hours=1),
                t,
                rx=NOW + timedelta(minutes=1),
                value=21.0,
            )
            await put(key="r-0001", value=fast)
            later = NOW + timedelta(minutes=2)
            await put(key="r-0001", value=ev("button-0001", "p3", press, later, b))

    run(go())
    fired = [
        (r["rule"], r["ev"]) for _, _, r, _ in rec.sent if r["op"] == "sig" and r["a"] == "fire"
    ]
    assert ("button", ["p1"]) in fired and ("button", ["p2"]) in fired
    assert ("button", ["p3"]) in fired
    assert ("device-clock", ["t1"]) in fired
    assert not [f for f in fired if f[0] == "device-offline"]
    assert w.stats["events"] == 6


def test_two_offline_devices_one_alert_through_the_agents() -> None:
    """The gates of commit 11e5af6 (one device-offline alert per resident, listing its
    devices; inactivity inhibited meanwhile; closed with the last device back), through
    the worker's rules and alerts agents: each signal the rules agent sends is put to
    the alerts agent, which rebuilds the resident's gatekeeper from its table state on
    every step (as in tests/test_late_alarms_live.py for the embedded runner)."""
    from trygg.registry import read_registry_text

    registry = read_registry_text(
        "residents:\n"
        "  - {id: r-1, team: t1, overrides: {inactivity: {for: 10s, window: always}}}\n"
        "devices:\n"
        "  - {id: pir-1, resident: r-1, kind: motion, room: livingroom, heartbeat: 2s}\n"
        "  - {id: door-1, resident: r-1, kind: door, room: entrance, heartbeat: 2s}\n"
        "  - {id: button-1, resident: r-1, kind: button, heartbeat: 1h}\n"
    )
    now = [NOW]
    rec = Recorder()
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    cat = load_catalogue([REPO / "rules"])
    w = Worker(
        Settings(kafka_partitions=4),
        rules=RulesCore(Engine(cat, registry)),
        alerts=alerts,
        sender=rec,
        clock=lambda: now[0],
    )
    w.app.finalize()
    w.app.conf.store = "memory://"
    w.app.flow_control.resume()
    signals = Settings().kafka_signals_topic

    def at(s: float) -> datetime:
        return NOW + timedelta(seconds=s)

    def event(device: str, eid: str, typ: EventType, t: float) -> bytes:
        kind = {"pir-1": DeviceKind.MOTION, "door-1": DeviceKind.DOOR}.get(device)
        e = Event(device, eid, typ, at(t), "r-1", kind or DeviceKind.BUTTON)
        return codecs.dumps(codecs.event_record(e, at(t)))

    def tick(t: float) -> bytes:
        return codecs.dumps(codecs.tick_record("r-1", at(t)))

    async def go() -> None:
        async with (
            w.rules_agent.test_context() as rules,
            w.alerts_agent.test_context() as gates,
        ):
            passed = 0

            async def put(value: bytes, t: float) -> None:
                nonlocal passed
                now[0] = at(t)
                await rules.put(key="r-1", value=value)
                # what the rules agent sent to the signals topic, to the alerts agent
                for topic, _, r, _ in rec.sent[passed:]:
                    if topic == signals:
                        await gates.put(key="r-1", value=codecs.dumps(r))
                passed = len(rec.sent)

            hb = EventType.HEARTBEAT
            await put(event("pir-1", "m1", EventType.MOTION_DETECTED, 0), 0)
            await put(event("door-1", "d1", hb, 0), 0)
            await put(event("button-1", "b1", hb, 0), 0)
            await put(tick(7), 7)  # more than 3 x 2 s from both sensors: offline
            await put(tick(11), 11)  # and no activity for 10 s: inactivity
            await put(event("pir-1", "m2", hb, 12), 12)  # the motion sensor is back
            await put(tick(12.5), 12.5)
            await put(event("door-1", "d2", hb, 13), 13)  # the door too
            await put(event("pir-1", "m3", hb, 13), 13)

    run(go())
    sigs = [(r["rule"], r["a"], r.get("dev")) for t, _, r, _ in rec.sent if r["op"] == "sig"]
    offline = [s for s in sigs if s[0] == "device-offline"]
    assert sorted(d for _, a, d in offline if a == "fire") == ["door-1", "pir-1"], sigs
    assert ("inactivity", "fire") in [(r, a) for r, a, _ in sigs], sigs
    changes = [r for _, _, r, _ in rec.sent if r["op"] == "achg"]
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for c in changes:
        by_alert.setdefault(c["snap"]["id"], []).append(c)
    rules_of = {aid: cs[-1]["snap"]["rule"] for aid, cs in by_alert.items()}
    off = [aid for aid, rule in rules_of.items() if rule == "device-offline"]
    assert len(off) == 1, rules_of  # ONE alert for the home, not one per device
    steps = [x for c in by_alert[off[0]] for x in c["recs"]]
    raised = [x for x in steps if x["step"] in ("raised", "repeated")]
    assert sorted(x["data"].get("device") for x in raised) == ["door-1", "pir-1"], raised
    snaps = [c["snap"] for c in by_alert[off[0]]]
    assert any(sorted(s["devices"]) == ["door-1", "pir-1"] for s in snaps), snaps
    noted = [x for x in steps if (x.get("data") or {}).get("device_cleared") == "pir-1"]
    assert noted, steps  # the motion sensor back: noted, the alert still open for the door
    assert snaps[-1]["state"] == "cancelled", snaps[-1]  # closed with the last one back
    # inactivity meanwhile: raised suppressed (a device it depends on is offline), not sent
    ina = [aid for aid, rule in rules_of.items() if rule == "inactivity"]
    assert len(ina) == 1
    ina_snap = by_alert[ina[0]][-1]["snap"]
    assert "offline" in (ina_snap.get("suppressed_reason") or ""), ina_snap
    notified = [r["alert"]["rule"] for _, _, r, _ in rec.sent if r["op"] == "ntf"]
    assert "inactivity" not in notified and notified.count("device-offline") >= 1, notified
    keys = [r["row"]["key"] for _, _, r, _ in rec.sent if r.get("op") == "ntf"]
    assert len(keys) == len(set(keys))  # the repeat and the note notify nobody again
    # closing it tells the notify agent, which drops any retry still pending
    assert [k for _, k, r, _ in rec.sent if r["op"] == "cls"] == off


def test_a_take_over_applies_what_a_cut_state_write_lost() -> None:
    """A worker writes its residents' rules states one changelog record at a time at
    each offsets commit; a SIGKILL in the middle of those writes leaves one resident's
    state new (offset 320) and another's old (offset 136). The new owner must apply the
    second resident's records after 136 again, though they lie below the first one's
    offset: skipping them lost those events for good (the next one of that resident
    then found its devices silent since 136 and raised device-offline; found by
    tests/test_distributed_integration.py under load, 2026-12-07)."""
    hb = EventType.HEARTBEAT
    registry, _ = build_homes(3, seed=1)
    core = RulesCore(Engine(load_catalogue([REPO / "rules"]), registry))
    # what the changelog holds after the cut: each state as the killed worker wrote it
    recovered = {}
    for offset, device, eid in ((136, "bed-0001", "b1"), (320, "bed-0002", "c1")):
        rec = codecs.loads(ev(device, eid, hb, NOW, DeviceKind.BED))
        step = core.step("r-" + device[-4:], None, rec, 1, offset=offset)
        assert step.state is not None
        recovered["r-" + device[-4:]] = step.state.decode()

    survivor, _ = make_worker()
    for rid, state in recovered.items():
        survivor.rules_table.data[rid] = state  # as Faust's recovery fills the table

    async def after() -> None:
        async with survivor.rules_agent.test_context() as agent:
            agent.sent_offset = 200  # r-0001's record the killed worker's state lost
            later = ev("bed-0001", "b2", hb, NOW + timedelta(minutes=1), DeviceKind.BED)
            await agent.put(key="r-0001", value=later, partition=1)
            agent.sent_offset = 201  # r-0002's: taken in by its recovered state (320)
            seen = ev("bed-0002", "c0", hb, NOW - timedelta(minutes=1), DeviceKind.BED)
            await agent.put(key="r-0002", value=seen, partition=1)

    run(after())
    state = orjson.loads(survivor.rules_state("r-0001"))
    assert state["o"] == 200 and "bed-0001|b2" in state["keys"]
    assert survivor.stats["applied"] == 1  # r-0002's record was not applied again


def test_a_hole_after_an_assignment_reads_again_from_the_offset_sought_to() -> None:
    """After an assignment the rules agent expects the committed offset Faust sought
    the partition to (100). A record fetched before the seek (150) arrives first: a
    hole, so the partition is read again from 100. Meanwhile Faust's committed offset
    moves on (120) as such records are acknowledged. The record at 100 must then be
    applied: the agent used to take the committed offset afresh for every record
    until one matched, so it skipped 100 as taken in, then every record after it, and
    the partition's events were never applied again (a fall and two presses unraised
    in tests/test_distributed_integration.py under load, 2026-12-07).

    No broker here (Faust's test context): the consumer's seek is recorded in place
    of the real one; the integration test does it against tansu."""
    from faust.types import TP

    hb = EventType.HEARTBEAT
    w, _ = make_worker(worker_clock="wall")
    tp = TP(w.settings.kafka_events_topic, 1)
    sought: list[tuple[Any, int]] = []

    async def seek(partition: Any, offset: int) -> None:
        sought.append((partition, offset))

    w.app.consumer.seek = seek  # type: ignore[method-assign]
    w.app.consumer._committed_offset[tp] = 100  # where Faust sought the partition to

    async def after() -> None:
        async with w.rules_agent.test_context() as agent:
            agent.sent_offset = 150  # fetched before the seek
            stale = ev("bed-0001", "b9", hb, NOW + timedelta(minutes=9), DeviceKind.BED)
            await agent.put(key="r-0001", value=stale, partition=1)
            w.app.consumer._committed_offset[tp] = 120  # acknowledged meanwhile
            for k in range(3):  # read again from 100
                agent.sent_offset = 100 + k
                e = ev("bed-0001", f"b{k}", hb, NOW + timedelta(minutes=k), DeviceKind.BED)
                await agent.put(key="r-0001", value=e, partition=1)

    run(after())
    assert sought == [(tp, 100)]
    state = orjson.loads(w.rules_state("r-0001"))
    assert state["o"] == 102
    assert {"bed-0001|b0", "bed-0001|b1", "bed-0001|b2"} <= set(state["keys"])
    assert w.stats["applied"] == 3


def test_a_partition_taken_over_is_held_by_its_stored_clock_before_any_record() -> None:
    """On the event clock a partition's clock is its slowest bridge's progress, and a
    new owner starts it from the bridges its stored states name (b1 and b2), each
    holding it until a record says how far it had got. That must be done when Faust's
    table recovery is complete, before the streams resume (``on_rebalance_complete``):
    left to the timer scan, the rules agent stepped up to 300 records of a partition
    taken over while its clock knew only the bridges heard of since, so b1's newer
    events were applied before b2's older ones still on their way, and timers fired
    that b2's events cancel (a false device-offline, 2026-12-07). Here an event b1
    forwarded at 13:05 must wait for b2."""
    from faust.assignor.client_assignment import ClientAssignment

    w, _ = make_worker(worker_clock="event")
    topic = w.settings.kafka_events_topic
    t0 = datetime(2026, 3, 10, 13, 0, tzinfo=UTC).timestamp()
    stored = {"p": 1, "src": {"b1": [t0 + 600, t0 + 600], "b2": [t0, t0 + 590]}}
    w.rules_table.data["r-0002"] = orjson.dumps(stored).decode()  # as recovery fills it
    w.app.assignor._assignment = ClientAssignment(actives={topic: [1]}, standbys={})
    at = datetime.fromtimestamp(t0 + 300, UTC)

    async def after() -> None:
        await w.app.on_rebalance_complete.send()
        async with w.rules_agent.test_context() as agent:
            b1 = codecs.event_record(
                Event("bed-0001", "b1", EventType.HEARTBEAT, at, "r-0001", DeviceKind.BED),
                at,
                bridge="b1",
                progress=at,
            )
            agent.sent_offset = 7
            await agent.put(key="r-0001", value=codecs.dumps(b1), partition=1)

    run(after())
    assert w.event_clocks.clock(1) is None  # b2 holds it: not heard of since
    assert set(w.event_clocks.state(1)) == {"b1", "b2"}
    state = orjson.loads(w.rules_state("r-0001"))
    assert [r["i"] for r in state["pend"]] == ["b1"]
    assert w.stats["applied"] == 0
