"""The bridge's relay (issue 17, item 1: an alarm waits at most 2 s through a planned
join or leave): an immediate alarm the workers have not claimed within
``relay_after_s`` is paged by the bridge, once, through the same gates.

Real PostgreSQL (the claims decide who sends) and a real HTTP receiver; the relay's
Kafka producer is replaced by a recorder of what it would send (the records it
produces are checked, not the broker). The whole path on tansu, through a join and a
leave, is ``tests/test_distributed_failover.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO
from tests.helpers import WebhookReceiver
from trygg.alerts.contacts import Channel
from trygg.distributed import codecs
from trygg.distributed.relay import Relay, Watch, _as_read
from trygg.distributed.relay_build import DbStore
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.rules_core import RulesCore
from trygg.model import DeviceKind, Event, EventType
from trygg.notify.webhooks import NamedWebhooks
from trygg.registry import Registry
from trygg.rules import Engine, load_catalogue
from trygg.runner.routing import default_routing
from trygg.settings import Settings
from trygg.simulate import build_homes
from trygg.store import claims


def _registry() -> Registry:
    registry, _ = build_homes(3, seed=1)
    return registry


def _event(registry: Registry, kind: DeviceKind, etype: EventType, eid: str) -> Event:
    """An event of the first resident's device of ``kind``, timed now (no fixed date:
    the relay's gates run on the wall clock)."""
    dev = next(d for d in registry.devices if d.kind is kind and d.resident == "r-0001")
    return Event(dev.id, eid, etype, datetime.now(UTC), dev.resident, kind)


def test_immediate_rules_judge_an_event_by_itself() -> None:
    """The bridge asks only what needs no history: a button press raises its alarm, a
    heartbeat nothing, and the engine keeps no state for either."""
    registry = _registry()
    engine = Engine(load_catalogue([REPO / "rules"]), registry)
    press = _event(registry, DeviceKind.BUTTON, EventType.BUTTON_PRESSED, "p1")
    sigs = engine.immediate(press)
    assert [(s.rule, s.action.value, s.events) for s in sigs] == [("button", "fire", ("p1",))]
    assert EventType.BUTTON_PRESSED in engine.immediate_types()
    assert EventType.HEARTBEAT not in engine.immediate_types()
    beat = replace(press, type=EventType.HEARTBEAT, id="h1")
    assert engine.immediate(beat) == []
    assert engine._res == {}  # nothing kept: the workers' engine owns the resident's state


def test_claims_settle_who_sends_a_first_notification(db: str) -> None:
    aid = "00000000-0000-4000-8000-000000000001"
    worker = claims.WorkerClaims(db, lease_s=10.0)

    def claim(key: str) -> str | datetime:
        return asyncio.run(worker.claim(key, aid))

    with psycopg.connect(db, autocommit=True) as conn:
        assert claims.claim_for_relay(conn, aid, ["k1", "k2"], "bridge-1")
        # all or none: k2 is taken, so k3 is not claimed either
        assert not claims.claim_for_relay(conn, aid, ["k2", "k3"], "bridge-2")
        assert claim("k3") == claims.MINE
        # a relay is paging k1: the worker holds its copy until the lease ends
        until = claim("k1")
        assert isinstance(until, datetime)
        assert timedelta(seconds=9) < until - datetime.now(UTC) <= timedelta(seconds=10)
        # the relay delivered k1 and failed k2: k1 is settled, k2 goes back to the worker
        claims.relay_settled(conn, ["k1"], ["k2"])
        assert claim("k1") == claims.RELAYED
        assert claim("k2") == claims.MINE
        # a worker's own claim never stops a worker (a notification read again after a crash)
        assert claim("k2") == claims.MINE
        # a relay that died between its claim and its page: taken over after the lease
        assert claims.claim_for_relay(conn, aid, ["k5"], "bridge-1")
        conn.execute("UPDATE notification_claims SET at = now() - interval '11 s' WHERE key = 'k5'")
        assert claim("k5") == claims.MINE
        by = conn.execute("SELECT by FROM notification_claims WHERE key = 'k5'").fetchone()
        assert by == (claims.WORKER,)
        # what the relay sees, key by key: k1 settled (its own, sent), k2 k3 k5 workers'
        # claims still in their lease
        seen = claims.alert_claims(conn, aid)
        assert seen["k1"] is True
        assert all(isinstance(seen[k], datetime) for k in ("k2", "k3", "k5")), seen
        assert claims.alert_claims(conn, "00000000-0000-4000-8000-000000000002") == {}
        # a worker sending: the relay waits for the worker's lease, then may take over
        other = "00000000-0000-4000-8000-000000000003"
        assert asyncio.run(worker.claim("w1", other)) == claims.MINE
        pending = claims.alert_claims(conn, other)["w1"]
        assert isinstance(pending, datetime)
        assert pending - datetime.now(UTC) <= timedelta(seconds=claims.WORKER_LEASE_S)
        assert not claims.claim_for_relay(conn, other, ["w1"], "bridge-1")
        asyncio.run(worker.sent("w1"))
        assert claims.alert_claims(conn, other) == {"w1": True}
        # a worker killed between its claim and its send: after its lease, the relay's
        third = "00000000-0000-4000-8000-000000000004"
        assert asyncio.run(worker.claim("w2", third)) == claims.MINE
        conn.execute("UPDATE notification_claims SET at = now() - interval '4 s' WHERE key = 'w2'")
        assert claims.alert_claims(conn, third) == {"w2": False}
        assert claims.claim_for_relay(conn, third, ["w2"], "bridge-1")
    asyncio.run(worker.close())


def test_a_worker_sends_without_asking_a_database_that_was_just_away() -> None:
    """No database: the claim fails (the notify agent then sends), and for a while after
    it fails at once rather than make each alarm wait for the connection again."""
    from trygg.devenv import free_port

    worker = claims.WorkerClaims(f"postgresql://trygg@127.0.0.1:{free_port()}/none", wait_s=1.0)

    async def go() -> list[str]:
        out = []
        for _ in range(2):
            try:
                await worker.claim("k", "00000000-0000-4000-8000-000000000001")
            except Exception as exc:
                out.append(str(exc))
        return out

    first, second = asyncio.run(go())
    assert "away moments ago" not in first
    assert second == "the claims' database was away moments ago"


class _Sent:
    """What the relay would produce to Kafka (its producer is not under test here)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, records: list[tuple[str, str, bytes]]) -> None:
        self.records += [(t, k, codecs.loads(v)) for t, k, v in records]


def _relay(s: Settings, registry: Registry, store: DbStore, hook: Any, send: _Sent) -> Relay:
    """A bridge's relay over the standard catalogue and routing, paging one webhook."""
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    return Relay(
        s,
        rules=RulesCore(Engine(load_catalogue([REPO / "rules"]), registry)),
        alerts=alerts,
        channels={Channel.WEBHOOK: NamedWebhooks({"default": hook.url})},
        store=store,
        send=send,
    )


def _first_keys(relay: Relay, w: Watch) -> list[str]:
    """The keys of the first notifications of ``w``'s alert, as the alerts agent makes
    them (what a worker's notify agent claims)."""
    sig = codecs.loads(codecs.dumps(codecs.signal_record(w.signal)))
    step = relay.alerts.step(w.resident, None, sig, 0, datetime.now(UTC))  # no prior alerts
    return [n["row"]["key"] for n in step.notifications if n["row"]["alert_id"] == w.alert_id]


async def _close(relay: Relay) -> None:
    for ch in relay.channels.values():
        await ch.aclose()


@pytest.fixture
def relay_parts(db: str) -> Iterator[tuple[Settings, Registry, DbStore]]:
    from psycopg_pool import ConnectionPool

    registry = _registry()
    s = Settings(database_url=db, mqtt_client_id="bridge-test", relay_after_s=1.0)
    pool = ConnectionPool(db, min_size=1, max_size=2, kwargs={"autocommit": True}, open=True)
    try:
        yield s, registry, DbStore(pool, default_routing(), s.mqtt_client_id)
    finally:
        pool.close()


def test_the_relay_pages_a_stalled_alarm_once_through_the_gates(
    db: str, relay_parts: tuple[Settings, Registry, DbStore]
) -> None:
    s, registry, store = relay_parts
    sent = _Sent()
    with WebhookReceiver() as hook:
        relay = _relay(s, registry, store, hook, sent)

        def due() -> list[Watch]:
            return relay.watches.due(time.monotonic() + 60)

        async def go() -> None:
            # a press no worker has claimed: paged by the relay
            press = _event(registry, DeviceKind.BUTTON, EventType.BUTTON_PRESSED, "p1")
            relay.note([press], datetime.now(UTC))
            (w,) = due()
            assert w.alert_id == AlertsCore.alert_id_of("r-0001", w.signal)
            await relay.relay(w)
            assert [p["id"] for _, _, p in hook.received] == [w.alert_id]
            assert hook.received[0][2]["notification"]["level"] == 1
            # a second press while that alert is open: a repeat, as for the alerts agent
            relay.note(
                [replace(press, id="p2", time=press.time + timedelta(seconds=5))], datetime.now(UTC)
            )
            (w2,) = due()
            await relay.relay(w2)
            assert len(hook.received) == 1 and relay.stats["gated"] == 1
            # the reset closes it; the next press is a new alarm, paged
            relay.note([replace(press, id="r1", type=EventType.ALARM_RESET)], datetime.now(UTC))
            relay.note(
                [replace(press, id="p3", time=press.time + timedelta(seconds=9))], datetime.now(UTC)
            )
            (w3,) = due()
            await relay.relay(w3)
            assert [p["id"] for _, _, p in hook.received] == [w.alert_id, w3.alert_id]
            # an alarm the notify agent claimed first is left to it
            press4 = replace(press, id="p4", time=press.time + timedelta(seconds=20))
            relay.note([press4], datetime.now(UTC))
            (w4,) = due()
            worker = claims.WorkerClaims(db)
            for key in _first_keys(relay, w4):
                assert await worker.claim(key, w4.alert_id) == claims.MINE
            # still sending: the relay looks again when the worker's claim would end
            await relay.relay(w4)
            assert relay.watches.open == {w4.alert_id: relay.watches.open[w4.alert_id]}
            for key in _first_keys(relay, w4):
                await worker.sent(key)
            (again,) = due()
            await relay.relay(again)
            assert len(hook.received) == 2 and relay.stats["claimed"] == 1
            # a worker that sent some of an alarm's first notifications and stalled before
            # the webhook's (the alert stored, so the gates would call it a repeat): the
            # relay pages what the worker has not claimed, and only that
            press5 = replace(press, id="p5", time=press.time + timedelta(seconds=30))
            relay.note([press5], datetime.now(UTC))
            (w5,) = due()
            others = [k for k in _first_keys(relay, w5) if ":webhook:" not in k]
            assert others  # the default routing's level 1 has more than the webhook
            for key in others:
                assert await worker.claim(key, w5.alert_id) == claims.MINE
                await worker.sent(key)
            await worker.close()
            await relay.relay(w5)
            assert [p["id"] for _, _, p in hook.received][-1] == w5.alert_id
            assert len(hook.received) == 3 and relay.stats["relayed"] == 3
            dlv5 = [r for _, _, r in sent.records if r["alert_id"] == w5.alert_id]
            assert {d["channel"] for d in dlv5} == {"webhook"}
            await _close(relay)

        asyncio.run(go())
    # Its deliveries go to the records topic, one per level-1 notification: the webhook
    # delivered; the default routing's other level-1 channels are not configured here,
    # so they failed and were given back to the notify agent (its retries): only what
    # was delivered stays claimed, as sent.
    paged = [p["id"] for _, _, p in hook.received]
    dlv = [r for t, _, r in sent.records if t == s.kafka_records_topic and r["op"] == "dlv"]
    assert [d["alert_id"] for d in dlv if d["channel"] == "webhook" and d["ok"]] == paged
    assert not [d for d in dlv if d["channel"] != "webhook" and d["ok"]]
    ok_keys = sorted(d["key"] for d in dlv if d["ok"])
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT key, sent FROM notification_claims WHERE by = 'bridge-test' ORDER BY key"
        ).fetchall()
    assert rows == [(k, True) for k in ok_keys]


def test_presses_while_the_workers_stall_page_once(
    relay_parts: tuple[Settings, Registry, DbStore],
) -> None:
    """A resident pressing on and on while the workers stall: one watch per resident
    and rule, and a press watched while the first one's relay is still under way is
    judged after that page, so it is a repeat, as for the alerts agent."""
    s, registry, store = relay_parts
    with WebhookReceiver() as hook:
        relay = _relay(s, registry, store, hook, _Sent())
        press = _event(registry, DeviceKind.BUTTON, EventType.BUTTON_PRESSED, "p1")
        # a stuck button: a hundred presses make one watch (one per resident and rule)
        relay.note(
            [
                replace(press, id=f"p{i}", time=press.time + timedelta(seconds=i))
                for i in range(100)
            ],
            datetime.now(UTC),
        )
        (first,) = relay.watches.due(time.monotonic() + 60)
        # pressed again while the first one's relay is still under way (a slow webhook)
        relay.note(
            [replace(press, id="again", time=press.time + timedelta(seconds=200))],
            datetime.now(UTC),
        )
        (second,) = relay.watches.due(time.monotonic() + 60)
        watches = [first, second]

        async def go() -> None:
            await asyncio.gather(*(relay._relay_logged(w) for w in watches))
            await _close(relay)

        asyncio.run(go())
    assert len(hook.received) == 1
    assert relay.stats["relayed"] == 1 and relay.stats["gated"] == 1


def test_a_reset_not_yet_stored_closes_the_alert_for_the_relay(
    db: str, relay_parts: tuple[Settings, Registry, DbStore]
) -> None:
    """The workers stall between taking a reset and storing it (the sink stops with
    them): the database still shows the alert open. A reset the bridge received after
    that alert was raised closes it for the relay, so the next press is a new alarm,
    paged; a reset received before the alert was raised is left alone (the agent may
    have taken it first), so there the next press is a repeat."""
    from trygg.store import spooled
    from trygg.store.registry import save_registry

    s, registry, store = relay_parts
    with psycopg.connect(db) as conn:
        save_registry(conn, registry)
    agent = AlertsCore(default_routing())  # the alerts agent, before the stall
    agent.update_registry(registry)

    def stored_open_alert(resident: str, eid: str) -> Event:
        ev = _event(registry, DeviceKind.BUTTON, EventType.BUTTON_PRESSED, eid)
        ev = replace(ev, resident=resident, device=ev.device.replace("0001", resident[-4:]))
        (sig,) = Engine(load_catalogue([REPO / "rules"]), registry).immediate(ev)
        step = agent.step(resident, None, _as_read(codecs.signal_record(sig)), 0, datetime.now(UTC))
        with psycopg.connect(db) as conn:
            spooled.apply_many(conn, step.records, {f"test-{eid}": (0, 1)})
        return ev

    with WebhookReceiver() as hook:
        relay = _relay(s, registry, store, hook, _Sent())
        press = _event(registry, DeviceKind.BUTTON, EventType.BUTTON_PRESSED, "p1")

        async def go() -> None:
            # r-0001: alert stored open, then a reset received (not stored), then a press
            stored_open_alert("r-0001", "p0")
            reset = replace(press, id="r0", type=EventType.ALARM_RESET, time=datetime.now(UTC))
            relay.note([reset], datetime.now(UTC))
            relay.note([replace(press, time=press.time + timedelta(seconds=3))], datetime.now(UTC))
            (w,) = relay.watches.due(time.monotonic() + 60)
            await relay.relay(w)
            assert [p["id"] for _, _, p in hook.received] == [w.alert_id]
            # r-0002: a reset received, then an alert raised and stored, then a press
            other = replace(press, resident="r-0002", device=press.device.replace("0001", "0002"))
            reset = replace(other, id="r9", type=EventType.ALARM_RESET, time=datetime.now(UTC))
            relay.note([reset], datetime.now(UTC))
            await asyncio.sleep(0.01)
            stored_open_alert("r-0002", "p8")
            relay.note([replace(other, id="p9")], datetime.now(UTC))
            (w2,) = relay.watches.due(time.monotonic() + 60)
            await relay.relay(w2)
            assert len(hook.received) == 1 and relay.stats["gated"] == 1
            # r-0003: a press and its reset 50 ms later reach Kafka in one batch of the
            # bridge (a loaded bridge batches more), so they share a receipt time; the
            # relay pages the press, and the reset, received after it, closes it: the
            # next press is a new alarm (a leave with busy loops held 7 such presses
            # back as repeats, which the workers then paged 4.7-8 s late)
            third = replace(press, resident="r-0003", device=press.device.replace("0001", "0003"))
            one_batch = datetime.now(UTC)
            relay.note(
                [replace(third, id="p20"), replace(third, id="r20", type=EventType.ALARM_RESET)],
                one_batch,
            )
            (w3,) = relay.watches.due(time.monotonic() + 60)
            await relay.relay(w3)
            assert [p["id"] for _, _, p in hook.received][-1] == w3.alert_id
            later = replace(third, id="p21", time=third.time + timedelta(seconds=6))
            relay.note([later], one_batch + timedelta(seconds=6))
            (w4,) = relay.watches.due(time.monotonic() + 60)
            await relay.relay(w4)
            assert [p["id"] for _, _, p in hook.received][-2:] == [w3.alert_id, w4.alert_id]
            assert relay.stats["gated"] == 1
            # r-0005: a worker catching up after a take-over raised this very alarm and
            # its sink stored it before its notify agent got to it (nothing claimed):
            # the relay pages it, and does not take it for a repeat of itself (two such
            # holds in three kill runs with busy loops)
            caught_up = stored_open_alert("r-0005", "p40")
            relay.note([caught_up], datetime.now(UTC))
            (w5,) = relay.watches.due(time.monotonic() + 60)
            await relay.relay(w5)
            assert [p["id"] for _, _, p in hook.received][-1] == w5.alert_id
            assert relay.stats["gated"] == 1
            await _close(relay)

        asyncio.run(go())


def test_the_notify_agent_defers_to_a_relay_that_claimed_first() -> None:
    """The notify agent asks who sends each first notification (``Worker.claim``;
    here a script of the database's answers, since the claims are tested against
    PostgreSQL above): a relay's sent claim settles it, one still paging holds it until
    the lease, no answer sends it. In-process through Faust's test contexts, with a
    real HTTP receiver and a fake clock."""
    from tests.test_distributed_agents import NOW, Recorder
    from tests.test_distributed_notify import Receiver, fire
    from trygg.distributed.worker.app import Worker

    registry = _registry()
    now = [NOW]
    rec = Recorder()
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    until = (NOW + timedelta(seconds=10)).timestamp()
    # per resident: the answers to the first and to any later claim of a notification
    script: dict[str, tuple[str | float | None, str | float | None]] = {
        "r-0001": (until, claims.RELAYED),  # a relay was paging it, then had sent it
        "r-0002": (until, claims.MINE),  # a relay that died: taken over after the lease
        "r-0003": (None, None),  # the database did not answer: sent at once
    }
    asked: dict[str, int] = {}
    ids = {
        AlertsCore.alert_id_of(r, codecs.signal_of(codecs.loads(fire(r, f"press-{r}")))): r
        for r in script
    }

    async def claim(key: str, alert_id: str) -> str | float | None:
        n = asked[key] = asked.get(key, 0) + 1
        return script[ids[alert_id]][0 if n == 1 else 1]

    marked: list[str] = []  # claims the agent marked sent (the relay stops waiting on them)

    async def claim_sent(key: str) -> None:
        marked.append(key)

    with Receiver() as hook:
        w = Worker(
            Settings(kafka_partitions=4),
            rules=RulesCore(Engine(load_catalogue([REPO / "rules"]), registry)),
            alerts=alerts,
            sender=rec,
            clock=lambda: now[0],
            channels={Channel.WEBHOOK: NamedWebhooks({"default": hook.url})},
            claim=claim,
            claim_sent=claim_sent,
        )
        w.app.finalize()
        w.app.conf.store = "memory://"
        w.app.flow_control.resume()
        w._owned = lambda topic: frozenset(range(4))  # type: ignore[method-assign]
        w._ready = lambda: True  # type: ignore[method-assign]
        done = [0]
        step = w.notify_step
        stepped = asyncio.Condition()

        async def counted(*args: Any) -> None:
            try:
                await step(*args)
            finally:
                async with stepped:
                    done[0] += 1
                    stepped.notify_all()

        w.notify_step = counted  # type: ignore[method-assign]

        async def go() -> None:
            async with (
                w.alerts_agent.test_context() as gates,
                w.notify_agent.test_context() as notify,
            ):
                seen = 0

                async def forward(ops: tuple[str, ...]) -> None:
                    nonlocal seen
                    new, seen = rec.sent[seen:], len(rec.sent)
                    for topic, key, r, _ in new:
                        if topic == w.notifications_topic.get_topic_name() and r["op"] in ops:
                            want = done[0] + 1
                            await notify.put(key=key, value=codecs.dumps(r))
                            async with asyncio.timeout(10), stepped:
                                await stepped.wait_for(lambda n=want: done[0] >= n)

                for rid in script:
                    await gates.put(key=rid, value=fire(rid, f"press-{rid}"))
                await forward(("ntf",))
                # only the one whose claim got no answer went out at once
                assert [r for _, _, r in hook.received] == ["r-0003"]
                now[0] += timedelta(seconds=11)  # past the relay's lease
                await w.scan_timers()
                await forward(("rty",))

        asyncio.run(go())
    # r-0001: the relay sent it, so the agent did not; r-0002: taken over, sent once
    assert sorted(r for _, _, r in hook.received) == ["r-0002", "r-0003"]
    assert w.stats["relayed"] == len([k for k in asked if ids[k.split(":")[0]] == "r-0001"])
    assert w.stats["relayed"] >= 1
    # what the agent claimed and sent is marked sent, once; what it did not claim is not
    mine = [k for k in asked if ids[k.split(":")[0]] == "r-0002"]
    assert mine and sorted(marked) == sorted(mine)
