"""The HTTP API against a real broker, database and trygg: every lifecycle
transition, every quality gate, roles and the access log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.alerting_stack import Stack, start_stack
from tests.helpers import WebhookReceiver, wait_until


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as h:
        yield h


@pytest.fixture
def stack(db, broker, tmp_path, hook) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = start_stack(db, broker, tmp_path, webhook_url=hook.url)
    try:
        yield s
    finally:
        s.close()


def _act(c: httpx.Client, alert_id: str, action: str, **body: object) -> httpx.Response:
    return c.post(f"/api/alerts/{alert_id}/{action}", json=body)


def test_full_lifecycle_through_the_api(stack: Stack, hook: WebhookReceiver) -> None:
    stack.publish("fall-a1", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open", rule="fall")
    assert a["state"] == "notified" and a["severity"] == "red" and a["team"] == "team-a"
    assert "take" in a["allowed_actions"] and "acknowledge" in a["allowed_actions"]
    wait_until(lambda: hook.received)
    aid, v = a["id"], a["version"]
    with stack.client("nurse-a") as nurse, stack.client("nurse-a2") as other:
        r = _act(nurse, aid, "acknowledge", expected_version=v)
        assert r.status_code == 200, r.text
        a = r.json()["alert"]
        assert a["state"] == "acknowledged" and a["acknowledged_by"] == "nurse-a"
        r = _act(nurse, aid, "assign", assignee="nurse-a2", expected_version=a["version"])
        assert r.status_code == 200 and r.json()["alert"]["assignee"] == "nurse-a2"
        # only the assignee may accept
        r = _act(nurse, aid, "accept")
        assert r.status_code == 409
        assert r.json()["detail"] == "alert is assigned to nurse-a2; only they can accept it"
        assert _act(other, aid, "accept").json()["alert"]["state"] == "accepted"
        assert _act(other, aid, "arrive").json()["alert"]["state"] == "arrived"
        r = _act(other, aid, "resolve", outcome="helped", note="helped up, unhurt")
        assert r.json()["alert"]["state"] == "resolved"
        r = _act(nurse, aid, "note", note="too late")
        assert r.status_code == 409 and r.json()["detail"] == "alert is already resolved"
    stack.wait_db_state(aid, "resolved")
    wait_until(lambda: len(stack.steps(aid)) == 7)
    assert stack.steps(aid) == [
        "raised",
        "notified",
        "acknowledged",
        "assigned",
        "accepted",
        "arrived",
        "resolved",
    ]
    rows = stack.sql(
        "SELECT acknowledged_by, assignee, outcome, version, closed_at IS NOT NULL"
        " FROM alerts WHERE id = %s",
        aid,
    )
    assert rows == [("nurse-a", "nurse-a2", "helped", 7, True)]
    actors = stack.sql("SELECT actor FROM alert_records WHERE alert_id = %s ORDER BY seq", aid)
    assert [x[0] for x in actors] == [
        "system",
        "system",
        "nurse-a",
        "nurse-a",
        "nurse-a2",
        "nurse-a2",
        "nurse-a2",
    ]
    # every delivery was recorded
    wait_until(lambda: stack.sql("SELECT count(*) FROM alert_deliveries")[0][0] >= 3)
    chans = stack.sql("SELECT channel, ok FROM alert_deliveries WHERE alert_id = %s", aid)
    assert {c for c, ok in chans if ok} == {"webhook", "mqtt", "console"}


def test_a_closed_alert_answers_as_closed_before_it_is_stored(stack: Stack) -> None:
    """The database lags the alert service (spool -> drainer -> PostgreSQL): an
    alert resolved or cancelled in memory must not be read back from the
    database as still open, nor acted on, until its closing record is stored."""
    stack.publish("fall-a1", "fall.detected")
    stack.publish("button-a2", "button.pressed")
    a = stack.wait_alert("nurse-a", state="open", rule="fall")
    b = stack.wait_alert("nurse-a", state="open", rule="button")
    with stack.client("nurse-a") as c:
        assert _act(c, a["id"], "take").status_code == 200
        assert _act(c, a["id"], "arrive").status_code == 200
        stack.wait_db_state(a["id"], "arrived")
        stack.wait_db_state(b["id"], "notified")
        with stack.drainer_paused():  # nothing more reaches the database meanwhile
            r = _act(c, a["id"], "resolve", outcome="helped")
            assert r.status_code == 200 and r.json()["alert"]["state"] == "resolved"
            r = _act(c, b["id"], "cancel", reason="false_alarm")
            assert r.status_code == 200 and r.json()["alert"]["state"] == "cancelled"
            for _ in range(3):
                r = _act(c, a["id"], "note", note="too late")
                assert r.status_code == 409, r.text
                assert r.json()["detail"] == "alert is already resolved"
                r = _act(c, b["id"], "acknowledge")
                assert r.status_code == 409, r.text
                assert r.json()["detail"].startswith("alert is already cancelled")
            got = c.get(f"/api/alerts/{a['id']}").json()
            assert got["alert"]["state"] == "resolved" and got["alert"]["allowed_actions"] == []
            assert [x["step"] for x in got["records"]][-1] == "resolved"
            still_open = c.get("/api/alerts", params={"state": "open"}).json()["alerts"]
            assert not {x["id"] for x in still_open} & {a["id"], b["id"]}
            listed = {x["id"]: x["state"] for x in c.get("/api/alerts").json()["alerts"]}
            assert (listed[a["id"]], listed[b["id"]]) == ("resolved", "cancelled")
            tl = c.get("/api/residents/r-a1/timeline").json()["alerts"]
            assert [x["state"] for x in tl if x["id"] == a["id"]] == ["resolved"]
            # the database has not caught up: the answers above came from memory
            assert stack.sql("SELECT state FROM alerts WHERE id = %s", a["id"]) == [("arrived",)]
    stack.wait_db_state(a["id"], "resolved")
    stack.wait_db_state(b["id"], "cancelled")
    assert stack.steps(a["id"])[-1] == "resolved"
    assert "note" not in stack.steps(a["id"])
    with stack.client("nurse-a") as c:  # and once it is stored, from the database
        r = _act(c, a["id"], "note", note="too late")
        assert r.status_code == 409 and r.json()["detail"] == "alert is already resolved"


def test_resolve_as_not_at_home_is_stored(stack: Stack) -> None:
    """Staff went and nobody was at home (issue 15): an outcome of its own, stored
    on the alert and in the resolved record, not a false alarm."""
    stack.publish("fall-a1", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open", rule="fall")
    with stack.client("nurse-a") as c:
        assert _act(c, a["id"], "take").status_code == 200
        assert _act(c, a["id"], "arrive").status_code == 200
        r = _act(c, a["id"], "resolve", outcome="not_at_home", note="ingen åpnet; ringte datteren")
        assert r.status_code == 200, r.text
        assert r.json()["alert"]["outcome"] == "not_at_home"
    stack.wait_db_state(a["id"], "resolved")
    assert stack.sql("SELECT outcome, cancel_reason FROM alerts WHERE id = %s", a["id"]) == [
        ("not_at_home", None)
    ]
    assert stack.sql(
        "SELECT data ->> 'outcome' FROM alert_records WHERE alert_id = %s AND step = 'resolved'",
        a["id"],
    ) == [("not_at_home",)]


def test_two_staff_take_at_once_one_wins(stack: Stack) -> None:
    stack.publish("fall-a2", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open", resident="r-a2")
    results: dict[str, httpx.Response] = {}
    barrier = threading.Barrier(2)

    def take(user: str) -> None:
        with stack.client(user) as c:
            barrier.wait()
            results[user] = _act(c, a["id"], "take", expected_version=a["version"])

    ts = [threading.Thread(target=take, args=(u,)) for u in ("nurse-a", "nurse-a2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409]
    winner = next(u for u, r in results.items() if r.status_code == 200)
    loser = next(r for r in results.values() if r.status_code == 409)
    assert loser.json()["detail"] == f"alert is taken by {winner}"
    stack.wait_db_state(a["id"], "accepted")
    assert stack.sql("SELECT assignee FROM alerts WHERE id = %s", a["id"]) == [(winner,)]


def test_refusals_conflicts_404_and_422(stack: Stack) -> None:
    stack.publish("button-a1", "button.pressed")
    a = stack.wait_alert("nurse-a", state="open", rule="button")
    aid = a["id"]
    with stack.client("nurse-a") as c:
        r = _act(c, aid, "resolve")
        assert r.status_code == 409
        assert r.json()["detail"].startswith("alert must be acknowledged before it can be resolved")
        r = _act(c, aid, "cancel")
        assert r.status_code == 409 and r.json()["detail"] == "say why the alert is cancelled"
        r = _act(c, aid, "cancel", reason="because")
        assert r.status_code == 422 and "reason" in r.text
        r = _act(c, aid, "resolve", outcome="maybe")
        assert r.status_code == 422
        assert c.post(f"/api/alerts/{aid}/levitate", json={}).status_code == 422
        assert _act(c, "00000000-0000-0000-0000-000000000000", "take").status_code == 404
        assert c.get("/api/alerts/00000000-0000-0000-0000-000000000000").status_code == 404
        # a stale version: someone acknowledged since
        assert _act(c, aid, "acknowledge").status_code == 200
        r = _act(c, aid, "acknowledge", expected_version=a["version"])
        assert r.status_code == 409 and "already acknowledged by nurse-a" in r.json()["detail"]
        r = _act(c, aid, "assign", assignee="x", expected_version=a["version"])
        assert r.status_code == 409 and "look again" in r.json()["detail"]
        r = _act(c, aid, "cancel", reason="false_alarm", note="pressed by accident")
        assert r.status_code == 200
        assert r.json()["alert"]["state"] == "cancelled"
    stack.wait_db_state(aid, "cancelled")
    assert stack.sql("SELECT cancel_reason, outcome FROM alerts WHERE id = %s", aid) == [
        ("false_alarm", "false_alarm")
    ]


def test_dedup_repeats_count_and_do_not_renotify(stack: Stack, hook: WebhookReceiver) -> None:
    stack.publish("fall-a1", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open", rule="fall")
    wait_until(lambda: len(hook.received) == 1)
    stack.publish("fall-a1", "fall.detected")
    stack.publish("fall-a1", "fall.detected")
    wait_until(
        lambda: stack.sql("SELECT repeat_count FROM alerts WHERE id = %s", a["id"]) == [(2,)]
    )
    time.sleep(0.3)
    assert len(hook.received) == 1
    assert stack.sql("SELECT count(*) FROM alerts WHERE rule = 'fall'") == [(1,)]
    assert stack.steps(a["id"]) == ["raised", "notified", "repeated", "repeated"]
    with stack.client("nurse-a") as c:
        detail = c.get(f"/api/alerts/{a['id']}").json()
    assert detail["alert"]["repeat_count"] == 2 and len(detail["alert"]["events"]) == 3


def test_alarm_reset_cancels_an_unanswered_alarm(stack: Stack) -> None:
    stack.publish("fall-a1", "fall.detected")
    a = stack.wait_alert("nurse-a", state="open", rule="fall")
    stack.publish("fall-a1", "alarm.reset")
    stack.wait_db_state(a["id"], "cancelled")
    assert stack.sql("SELECT cancel_reason FROM alerts WHERE id = %s", a["id"]) == [
        ("device_reset",)
    ]
    # once answered, a reset only notes that the condition cleared
    stack.publish("fall-a1", "fall.detected")
    b = stack.wait_alert("nurse-a", state="open", rule="fall")
    with stack.client("nurse-a") as c:
        assert _act(c, b["id"], "take").status_code == 200
    stack.publish("fall-a1", "alarm.reset")
    wait_until(lambda: "cleared" in stack.steps(b["id"]))
    stack.wait_db_state(b["id"], "accepted")


def test_rule_clear_auto_resolves_a_technical_alert(stack: Stack) -> None:
    stack.publish("door-a1", "door.opened")  # scripted: device-offline for motion-a1
    a = stack.wait_alert("nurse-a", state="open", rule="device-offline")
    stack.publish("door-a1", "door.closed")  # scripted: clear
    stack.wait_db_state(a["id"], "cancelled")
    assert stack.sql("SELECT cancel_reason FROM alerts WHERE id = %s", a["id"]) == [
        ("auto_resolved",)
    ]


def test_silence_suppresses_then_releases(stack: Stack, hook: WebhookReceiver) -> None:
    now = datetime.now(UTC)
    with stack.client("nurse-a") as c:
        r = c.post(
            "/api/silences",
            json={
                "scope": "resident",
                "target": "r-a2",
                "end": (now + timedelta(hours=2)).isoformat(),
                "reason": "in hospital",
            },
        )
        assert r.status_code == 201, r.text
        sil = r.json()["silence"]
        assert sil["created_by"] == "nurse-a" and sil["active"]
        # a silence needs a reason, and an end after its start
        bad = c.post(
            "/api/silences",
            json={"scope": "resident", "target": "r-a2", "end": now.isoformat(), "reason": "x"},
        )
        assert bad.status_code == 422
        stack.publish("fall-a2", "fall.detected")
        a = stack.wait_alert("nurse-a", state="open", resident="r-a2")
        assert a["suppressed"] and "in hospital" in a["suppressed_reason"]
        # The API answers from memory; the records reach the database after (the
        # spool, the drainer): wait for them rather than for a fixed time.
        wait_until(lambda: stack.steps(a["id"]), timeout=10)
        assert not hook.received  # stored, not routed
        assert stack.steps(a["id"]) == ["raised"]
        assert [s["id"] for s in c.get("/api/silences?active=true").json()["silences"]] == [
            sil["id"]
        ]
        r = c.post(f"/api/silences/{sil['id']}/end", json={})
        assert r.status_code == 200 and r.json()["silence"]["ended_by"] == "nurse-a"
    wait_until(lambda: hook.received, timeout=5)  # released and routed
    wait_until(lambda: stack.steps(a["id"]) == ["raised", "released", "notified"])
    rows = stack.sql("SELECT ended_by, ends_at <= now() FROM silences WHERE id = %s", sil["id"])
    assert rows == [("nurse-a", True)]


def test_offline_device_inhibits_inactivity(stack: Stack, hook: WebhookReceiver) -> None:
    stack.publish("door-a1", "door.opened")  # device-offline for motion-a1
    off = stack.wait_alert("nurse-a", state="open", rule="device-offline")
    stack.publish("motion-a1", "motion.detected")  # scripted inactivity
    inact = stack.wait_alert("nurse-a", state="open", rule="inactivity")
    assert inact["suppressed"]
    assert inact["suppressed_reason"] == (
        f"inhibited: device motion-a1 is offline (alert {off['id']})"
    )
    time.sleep(0.3)
    assert [b["rule"] for _, _, b in hook.received] == ["device-offline"]


def test_red_alert_holds_back_yellow_until_closed(stack: Stack, hook: WebhookReceiver) -> None:
    stack.publish("fall-a1", "fall.detected")
    red = stack.wait_alert("nurse-a", state="open", rule="fall")
    stack.publish("water-a1", "water.detected")
    yellow = stack.wait_alert("nurse-a", state="open", rule="water")
    assert yellow["held_until"] is not None and yellow["held_by"] == red["id"]
    time.sleep(0.3)
    assert [b["rule"] for _, _, b in hook.received] == ["fall"]
    with stack.client("nurse-a") as c:
        assert _act(c, red["id"], "take").status_code == 200
        assert _act(c, red["id"], "resolve", outcome="helped").status_code == 200
    wait_until(lambda: [b["rule"] for _, _, b in hook.received] == ["fall", "water"])
    wait_until(lambda: stack.steps(yellow["id"]) == ["raised", "released", "notified"])


def test_flapping_folds_into_one_flagged_alert(stack: Stack, hook: WebhookReceiver) -> None:
    for _ in range(5):  # max_fires 3 in the test routing
        stack.publish("button-a2", "button.pressed")
    wait_until(
        lambda: (
            stack.sql("SELECT repeat_count, flapping FROM alerts WHERE rule = 'button'")
            == [(4, True)]
        )
    )
    a = stack.wait_alert("specialist", flapping="true")
    assert a["rule"] == "button"
    assert "flapping" in stack.steps(a["id"])
    time.sleep(0.2)
    assert len(hook.received) == 1


def test_roles_and_the_access_log(stack: Stack) -> None:
    stack.publish("fall-b1", "fall.detected")
    b = stack.wait_alert("nurse-b", state="open")
    assert b["team"] == "team-b"
    assert b["district"] == "default"  # a registry without districts: all in the default one
    stack.publish("bed-b1", "bed.vacant", room="bedroom")
    # no token, a bad token
    assert httpx.get(f"{stack.base}/api/alerts").status_code == 401
    r = httpx.get(f"{stack.base}/api/alerts", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with stack.client("nurse-a") as a:
        # team A does not see team B's alerts, cannot read or act on them
        assert a.get("/api/alerts", params={"state": "open"}).json()["alerts"] == []
        r = a.get(f"/api/alerts/{b['id']}")
        assert r.status_code == 403 and "team team-b" in r.json()["detail"]
        assert _act(a, b["id"], "take").status_code == 403
        assert a.get("/api/alerts", params={"team": "team-b"}).status_code == 403
        assert a.get("/api/residents/r-b1/timeline").status_code == 403
        assert a.get("/api/access-log").status_code == 403
    with stack.client("auditor") as aud:
        assert aud.get(f"/api/alerts/{b['id']}").status_code == 200
        me = aud.get("/api/me").json()
        assert "districts" not in me and "district_names" not in me  # no header to show
        assert _act(aud, b["id"], "acknowledge").status_code == 403
    with stack.client("nurse-b") as nb:
        wait_until(
            lambda: stack.sql("SELECT count(*) FROM events WHERE resident = 'r-b1'")[0][0] == 2
        )
        t = nb.get("/api/residents/r-b1/timeline").json()
        assert [e["words"]["en"] for e in t["events"]] == [
            "Got out of bed (the bedroom)",
            "Fall detected (the bathroom)",
        ]
        assert t["events"][0]["words"]["nb"] == "Sto opp av sengen (soverommet)"
        assert [x["id"] for x in t["alerts"]] == [b["id"]]
        assert nb.get(f"/api/alerts/{b['id']}").status_code == 200
    with stack.client("auditor") as aud:

        def logged() -> list[tuple[str, str | None]]:
            rows = aud.get("/api/access-log", params={"resident": "r-b1"}).json()["entries"]
            return [(e["actor"], e["action"]) for e in rows]

        # through the spool and the drainer: wait for the last one read
        wait_until(lambda: ("nurse-b", "alert.read") in logged())
        got = logged()
        assert ("nurse-b", "resident.timeline") in got and ("auditor", "alert.read") in got
    rows = stack.sql(
        "SELECT actor, role, action, resident FROM access_log WHERE action <> 'alerts.list'"
        " ORDER BY id"
    )
    assert ("nurse-b", "care_staff", "resident.timeline", "r-b1") in rows
    assert all(r[3] == "r-b1" for r in rows)
    # nurse-a's refused reads are not resident reads
    assert not [r for r in rows if r[0] == "nurse-a"]


def test_health_readiness_metrics_and_openapi(stack: Stack) -> None:
    assert httpx.get(f"{stack.base}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{stack.base}/readyz").json()
    assert r["ready"] and r["mqtt"] and r["database"] and r["spool"]
    stack.publish("fall-a1", "fall.detected")
    stack.wait_alert("admin", state="open")
    wait_until(
        lambda: (
            'trygg_notifications_total{channel="webhook",outcome="ok"}'
            in httpx.get(f"{stack.base}/metrics").text
        )
    )
    m = httpx.get(f"{stack.base}/metrics").text
    assert 'trygg_alert_decisions_total{kind="raised",rule="fall",severity="red"} 1.0' in m
    assert "trygg_events_received_total" in m and "trygg_spool_bytes" in m
    spec = httpx.get(f"{stack.base}/openapi.json").json()
    assert "/api/alerts/{alert_id}/{action}" in spec["paths"]
