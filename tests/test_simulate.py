"""Tests for the home simulator (`trygg simulate`)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from trygg.model import Event, EventPayload, EventType, Room, Signal, SignalAction
from trygg.registry import Registry, parse_registry
from trygg.rules.catalogue import load_catalogue
from trygg.rules.engine import Engine
from trygg.simulate import (
    SimEvent,
    Truth,
    build_homes,
    generate,
    make_rates,
    parse_mqtt_url,
    registry_yaml,
    write_jsonl,
)

OSLO = ZoneInfo("Europe/Oslo")
ACTIVITY = {"motion.detected", "door.opened", "door.closed", "bed.occupied", "bed.vacant"}


def _run(n: int, start: datetime, days: float, seed: int = 1, scale: float = 1.0):
    _, homes = build_homes(n, seed)
    truth: list[Truth] = []
    evs = list(
        generate(homes, start, start + timedelta(days=days), seed, make_rates(scale=scale), truth)
    )
    return homes, evs, truth


@pytest.fixture(scope="module")
def incident_run():
    """20 homes over 4 days (across the spring DST change) with many incidents."""
    return _run(20, datetime(2026, 3, 27, tzinfo=OSLO), 4, seed=3, scale=15.0)


def test_same_seed_same_output_and_other_seed_differs():
    start = datetime(2026, 5, 4, tzinfo=OSLO)

    def text(seed: int) -> str:
        _, homes = build_homes(4, seed)
        out = io.StringIO()
        write_jsonl(generate(homes, start, start + timedelta(hours=30), seed), out)
        return out.getvalue()

    a, b = text(5), text(5)
    assert a == b and len(a.splitlines()) > 1000
    assert text(6) != a


def test_registry_is_valid_and_matches_homes():
    reg, homes = build_homes(40, 2)
    data = yaml.safe_load(registry_yaml(homes))
    again = parse_registry(data)
    assert again == reg
    assert [r.id for r in reg.residents][:2] == ["r-0001", "r-0002"]
    ids = {d.id for d in reg.devices}
    for n in ("0001", "0040"):
        assert {f"bed-{n}", f"door-{n}", f"button-{n}", f"motion-bathroom-{n}"} <= ids
    fronts = [d for d in reg.devices if d.kind == "door"]
    assert len(fronts) == 40 and all(d.room == "entrance" for d in fronts)
    assert 0 < sum(d.kind == "dispenser" for d in reg.devices) < 40
    assert len({r.team for r in reg.residents}) == 4
    assert all(r.timezone == "Europe/Oslo" for r in reg.residents)


def test_events_validate_are_known_and_time_ordered(incident_run):
    homes, evs, _ = incident_run
    reg = parse_registry(yaml.safe_load(registry_yaml(homes)))
    devices = reg.device_by_id()
    last = 0
    seen: set[tuple[str, str]] = set()
    malformed = 0
    for ev in evs:
        assert ev.ts >= last
        last = ev.ts
        if ev.raw is not None:
            malformed += 1
            continue
        line = json.loads(ev.jsonl())
        assert line.pop("device") == ev.device
        assert line == ev.payload() == json.loads(ev.payload_json())
        if ev.type != "heartbeat" or ev.ts % 7 == 0:
            p = EventPayload.model_validate(line)
            assert p.time.timestamp() == ev.ts
        assert ev.device in devices
        if ev.room is not None:
            assert devices[ev.device].room == ev.room
        key = (ev.device, ev.id)
        assert (key in seen) == ev.duplicate
        seen.add(key)
    assert malformed > 0


def test_malformed_payloads_are_really_invalid(incident_run):
    homes, evs, _ = incident_run
    devices = {d.id for h in homes for d in h.devices}
    bad = [ev for ev in evs if ev.raw is not None]
    assert len({ev.malformed for ev in bad}) >= 4
    for ev in bad:
        assert ev.raw is not None
        if ev.device not in devices:
            assert ev.malformed == "unknown-device"
            continue
        with pytest.raises((ValueError, ValidationError)):
            EventPayload.model_validate_json(ev.raw)


def test_routine_has_heartbeats_motion_batteries_and_meals():
    homes, evs, _ = _run(3, datetime(2026, 6, 1, tzinfo=OSLO), 2, scale=0.0)
    by_dev: dict[str, list[SimEvent]] = defaultdict(list)
    for ev in evs:
        by_dev[ev.device].append(ev)
    for h in homes:
        for d in h.devices:
            hbs = [e.ts for e in by_dev[d.id] if e.type == "heartbeat"]
            assert {b - a for a, b in pairwise(hbs)} == {300}
            if d.battery:
                levels = [e.value for e in by_dev[d.id] if e.type == "battery"]
                assert 6 <= len(levels) <= 10 and levels == sorted(levels, reverse=True)
        kitchen = [e for e in by_dev[h.motion("kitchen")] if e.type == "motion.detected"]
        noon = [e for e in kitchen if 11 <= datetime.fromisoformat(e.time).hour <= 14]
        assert noon, "a lunch in the kitchen"
        motions = [
            e.ts for e in evs if e.type == "motion.detected" and e.device.endswith(h.resident[2:])
        ]
        # PIR hold-off: never a flood
        assert len(motions) < 2 * 24 * 30
    assert all(e.raw is None and not e.duplicate for e in evs)


def _local(ev: SimEvent) -> datetime:
    return datetime.fromisoformat(ev.time)


def _night(ev: SimEvent) -> bool:
    h = _local(ev).hour
    return h >= 22 or h < 7


def test_bed_exits_at_night_match_truth(incident_run):
    """Every night-time bed exit lasting over 20 min is an injected incident, and vice versa."""
    homes, evs, truth = incident_run
    bed_of = {h.device("bed"): h.resident for h in homes}
    long_exits: set[str] = set()
    exits: dict[str, SimEvent] = {}
    for ev in evs:
        if ev.device not in bed_of or ev.duplicate or ev.raw is not None:
            continue
        if ev.type == "bed.vacant":
            exits[ev.device] = ev
        elif ev.type == "bed.occupied" and ev.device in exits:
            v = exits.pop(ev.device)
            if _night(v) and ev.ts - v.ts > 1200:
                long_exits.add(v.id)
    end = evs[-1].ts
    long_exits |= {v.id for v in exits.values() if _night(v) and end - v.ts > 1200}
    expected = {
        t.events[0]
        for t in truth
        if t.incident in ("night-exit-no-return", "left-home-at-night") and t.events
    }
    assert expected and long_exits == expected
    by_id = {(e.id): e for e in evs if e.raw is None}
    returned = [t for t in truth if t.incident == "night-exit-no-return" and t.returned_after_s]
    stayed = [t for t in truth if t.incident == "night-exit-no-return" and not t.returned_after_s]
    assert returned and stayed
    for t in returned:
        assert 1200 < t.returned_after_s < 1800
        vac, occ = by_id[t.events[0]], by_id[t.events[1]]
        assert (vac.type, occ.type) == ("bed.vacant", "bed.occupied")
        assert occ.ts - vac.ts == t.returned_after_s
        assert t.expected_rule == "bed-exit-no-return"


def test_left_home_at_night_has_door_and_silence(incident_run):
    _homes, evs, truth = incident_run
    by_id = {e.id: e for e in evs if e.raw is None}
    cases = [t for t in truth if t.incident == "left-home-at-night"]
    assert cases
    for t in cases:
        opened = next(by_id[i] for i in t.events if by_id[i].type == "door.opened")
        closed = next(by_id[i] for i in t.events if by_id[i].type == "door.closed")
        assert _local(opened).hour >= 23 or _local(opened).hour < 6
        num = t.resident[2:]
        inside = [
            e
            for e in evs
            if e.type == "motion.detected"
            and e.device.endswith(num)
            and closed.ts < e.ts <= closed.ts + 600
        ]
        assert not inside
        assert t.returned_after_s and t.returned_after_s >= 1800
        assert set(t.expected_rules) == {"left-home-at-night", "bed-exit-no-return"}


def test_day_incidents_have_their_events(incident_run):
    _homes, evs, truth = incident_run
    by_id = {e.id: e for e in evs if e.raw is None}
    kinds = {t.incident for t in truth}
    assert {
        "fall",
        "inactivity",
        "long-bathroom-stay",
        "dose-missed",
        "button",
        "device-offline",
        "battery-low",
        "duplicate",
        "malformed",
    } <= kinds
    activity: dict[str, list[SimEvent]] = defaultdict(list)
    by_dev: dict[str, list[SimEvent]] = defaultdict(list)
    id_count: Counter[str] = Counter(e.id for e in evs if e.raw is None)
    for e in evs:
        by_dev[e.device].append(e)
        if e.raw is None and e.type in ACTIVITY:
            activity[e.device.rsplit("-", 1)[1]].append(e)
    for t in truth:
        if t.detail.get("carried_over"):  # see test_truth_is_what_the_rule_engine_alerts
            continue
        num = t.resident[2:]
        first = by_id[t.events[0]] if t.events else None
        if t.incident == "fall":
            assert first and first.type == "fall.detected" and first.device == f"fall-{num}"
        elif t.incident == "inactivity":
            nxt = [e for e in activity[num] if e.ts > first.ts]
            assert nxt[0].ts - first.ts >= 4 * 3600
            assert _local(first).hour >= 7 and _local(first).hour + 4 < 22
        elif t.incident == "long-bathroom-stay":
            assert first.device == f"motion-bathroom-{num}"
            elsewhere = [
                e
                for e in activity[num]
                if first.ts < e.ts <= first.ts + 3600 and e.device != first.device
            ]
            assert not elsewhere
        elif t.incident == "dose-missed":
            assert first.type == "dose.missed"
        elif t.incident == "button":
            assert first.type == "button.pressed"
        elif t.incident == "battery-low":
            assert first.type == "battery" and first.value < 15
        elif t.incident == "duplicate":
            assert id_count[first.id] == 2
        elif t.incident == "device-offline":
            until = datetime.fromisoformat(t.detail["until"]).timestamp()
            assert not [e for e in by_dev[t.device] if t.start_ts <= e.ts < until]
            assert any(e.ts >= until for e in by_dev[t.device])
            assert until - t.start_ts >= 2 * 3600


@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_dst_days(day):
    d = datetime.fromisoformat(day).replace(tzinfo=OSLO)
    homes, evs, _ = _run(8, d - timedelta(days=1), 3)
    offsets = {_local(e).utcoffset() for e in evs}
    assert offsets == {timedelta(hours=1), timedelta(hours=2)}
    for h in homes:
        bed = h.device("bed")
        wakes = [e for e in evs if e.device == bed and e.type == "bed.vacant"]
        sleeps = [e for e in evs if e.device == bed and e.type == "bed.occupied"]
        # the local routine does not move with the clock change
        mornings: dict[object, datetime] = {}
        for e in wakes:
            lt = _local(e)
            if lt.hour < 12:
                mornings[lt.date()] = max(mornings.get(lt.date(), lt), lt)
        assert len(mornings) >= 2
        for lt in mornings.values():
            assert (7, 5) <= (lt.hour, lt.minute) <= (9, 0)
        for e in sleeps:
            lt = _local(e)
            assert lt.hour >= 21 or lt.hour < 7
        hbs = [e.ts for e in evs if e.device == bed and e.type == "heartbeat"]
        assert {b - a for a, b in pairwise(hbs)} == {300}
    assert [e.ts for e in evs] == sorted(e.ts for e in evs)


# ------------------------------------------- the truth against the rule engine

RULES = Path(__file__).resolve().parents[1] / "rules"
# rates that often leave a home in a condition when a simulation starts
CARRY_RATES = {
    "battery-low": 0.3,
    "device-offline": 0.3,
    "inactivity": 0.3,
    "long-bathroom-stay": 0.3,
    "left-home-at-night": 0.3,
    "night-exit-no-return": 0.1,
}
# an incident this close to the end may alert after it: not checked
TAIL = timedelta(hours=6)


def _engine_alerts(registry: Registry, evs: list[SimEvent], end: datetime) -> list[Signal]:
    """The standard catalogue's alerts for the events, the clock run on to
    ``end`` (not further: every device would go offline after the last event).
    Repeated events are dropped, as ingest and replay do."""
    devices = registry.device_by_id()
    engine = Engine(load_catalogue([RULES]), registry)
    out: list[Signal] = []
    for ev in evs:
        if ev.raw is not None or ev.duplicate:
            continue
        d = devices[ev.device]
        room = Room(ev.room) if ev.room else d.room
        t = datetime.fromisoformat(ev.time)
        out += engine.process(
            Event(ev.device, ev.id, EventType(ev.type), t, d.resident, d.kind, room, ev.value)
        )
    out += engine.advance(end)
    return [s for s in out if s.action is SignalAction.FIRE]


def _compare(truth: list[Truth], alerts: list[Signal], end: datetime):
    """Truth entries without their alert, and alerts without a truth entry.

    An alert for a condition carried over from before the start must come at
    the truth's ``start`` exactly (from the device, with the events); a
    device-offline incident's within 20 min of the silence's start; any other
    shares a key event with its incident."""
    cutoff = (end - TAIL).timestamp()
    used: set[int] = set()
    missing = []
    for t in truth:
        for rule in t.expected_rules:
            cands = [
                i
                for i, a in enumerate(alerts)
                if i not in used and a.rule == rule and a.resident == t.resident
            ]
            if t.detail.get("carried_over"):
                hit = [
                    i
                    for i in cands
                    if alerts[i].at.timestamp() == t.start_ts
                    and alerts[i].device == (t.device if rule != "long-bathroom-stay" else None)
                    and list(alerts[i].events) == t.events
                ]
            elif rule == "device-offline":
                hit = [
                    i
                    for i in cands
                    if alerts[i].device == t.device
                    and 0 <= alerts[i].at.timestamp() - t.start_ts <= 1200
                ]
            else:
                hit = [i for i in cands if set(alerts[i].events) & set(t.events)]
            if hit:
                used.add(hit[0])
            elif t.start_ts < cutoff:
                missing.append((rule, t))
    unexpected = [a for i, a in enumerate(alerts) if i not in used and a.at.timestamp() < cutoff]
    return missing, unexpected


@pytest.mark.parametrize(
    ("start", "seed", "carried"),
    [
        # the spring-forward night; a resident out of bed before the start
        # leaves by the front door after it: the bed exit is not seen
        ("2026-03-29T00:00", 3, {"battery-low"}),
        ("2026-10-25T00:00", 1, {"battery-low"}),  # the fall-back night
        ("2026-02-02T12:30", 1, {"battery-low", "device-offline", "inactivity"}),
        ("2026-02-02T12:30", 4, {"inactivity", "long-bathroom-stay"}),
        ("2026-03-28T11:30", 2, {"battery-low", "device-offline", "long-bathroom-stay"}),
    ],
)
def test_truth_is_what_the_rule_engine_alerts(start: str, seed: int, carried: set[str]):
    """Every expected alert of the truth is raised by the standard catalogue and
    every alert raised is in the truth, including the alerts for conditions a
    home is already in at the start (a battery low before it, a device silent
    since before it, a resident silent or in the bathroom since before it):
    the engine raises those early in the simulated period, and the truth says
    when (issue 14)."""
    t0 = datetime.fromisoformat(start).replace(tzinfo=OSLO)
    end = t0 + timedelta(hours=36)
    registry, homes = build_homes(20, seed)
    truth: list[Truth] = []
    evs = list(generate(homes, t0, end, seed, make_rates(CARRY_RATES), truth))
    alerts = _engine_alerts(registry, evs, end)
    missing, unexpected = _compare(truth, alerts, end)
    assert not missing and not unexpected
    got = {t.incident for t in truth if t.detail.get("carried_over")}
    assert got == carried
    by_id = {e.id: e for e in evs if e.raw is None}
    for t in truth:
        if not t.detail.get("carried_over"):
            continue
        since = datetime.fromisoformat(t.detail["since"]).timestamp()
        assert since < t0.timestamp() <= t.start_ts < end.timestamp()
        if t.incident == "battery-low":
            # the first report from the device since the start, still low
            rep = by_id[t.events[0]]
            first = next(e for e in evs if e.device == t.device and e.type == "battery")
            assert rep is first and rep.ts == t.start_ts and rep.value < 15
    if start == "2026-03-29T00:00":
        out = [t for t in truth if t.incident == "left-home-at-night"]
        vacant = [datetime.fromisoformat(t.detail["bed_vacant"]) for t in out]
        assert any(v < t0 for v in vacant)
        for t, v in zip(out, vacant, strict=True):
            expected = ["left-home-at-night"] + ["bed-exit-no-return"] * (v >= t0)
            assert t.expected_rules == expected


def test_generation_is_lazy():
    _, homes = build_homes(300, 1)
    start = datetime(2026, 1, 1, tzinfo=OSLO)
    t0 = time.perf_counter()
    first = list(islice(generate(homes, start, start + timedelta(days=365), 1), 5000))
    assert time.perf_counter() - t0 < 5
    assert len(first) == 5000


def test_parse_mqtt_url():
    u = parse_mqtt_url("mqtt://sim%40x:p%3Ass@broker.local:1884")
    assert (u.host, u.port, u.username, u.password, u.tls) == (
        "broker.local",
        1884,
        "sim@x",
        "p:ss",
        False,
    )
    assert parse_mqtt_url("mqtts://h").port == 8883 and parse_mqtt_url("mqtts://h").tls
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883
    assert "p:ss" not in u.redacted()
    for bad in ("http://h", "mqtt://", "mqtt://h:notaport"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


def _app() -> typer.Typer:
    from trygg.simulate.cli import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """trygg"""

    register(app)
    return app


def test_cli_writes_jsonl_registry_truth_and_malformed(tmp_path: Path):
    args = [
        "simulate",
        "-n",
        "5",
        "--seed",
        "9",
        "--start",
        "2026-03-28",
        "--days",
        "2",
        "--jsonl",
        str(tmp_path / "ev.jsonl"),
        "--registry-out",
        str(tmp_path / "reg.yaml"),
        "--truth",
        str(tmp_path / "truth.jsonl"),
        "--malformed-out",
        str(tmp_path / "bad.jsonl"),
        "--incident-scale",
        "20",
        "-q",
    ]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    reg = parse_registry(yaml.safe_load((tmp_path / "reg.yaml").read_text()))
    devices = reg.device_by_id()
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert len(lines) > 10000
    for line in lines[::50]:
        obj = json.loads(line)
        assert obj["device"] in devices
        EventPayload.model_validate(obj)
    truth = [json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert truth and all(
        {"incident", "resident", "start", "events", "expected_rule"} <= t.keys() for t in truth
    )
    assert [t["start"] for t in truth] == sorted(
        (t["start"] for t in truth), key=lambda s: datetime.fromisoformat(s)
    )
    bad = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert bad and all(base64.b64decode(b["raw_b64"]) is not None for b in bad)
    # same seed, same file
    res2 = CliRunner().invoke(
        _app(),
        [*args[:-11], "--jsonl", str(tmp_path / "ev2.jsonl"), "--incident-scale", "20", "-q"],
    )
    assert res2.exit_code == 0, res2.output
    assert (tmp_path / "ev2.jsonl").read_text() == (tmp_path / "ev.jsonl").read_text()


def test_cli_needs_an_output():
    res = CliRunner().invoke(_app(), ["simulate", "-n", "2"])
    assert res.exit_code != 0
    assert "nothing to do" in res.output


# ---------------------------------------------------------------- MQTT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def mosquitto(tmp_path: Path):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        "persistence false\nmax_queued_messages 0\n"
    )
    proc = subprocess.Popen(
        [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mosquitto did not start")
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _subscriber(port: int, topic: str):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        ready.set()

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload))

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


def _wait_for(got: list, n: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_publish_to_mosquitto(mosquitto: int):
    from trygg.simulate.publisher import publish

    _, homes = build_homes(3, 4)
    start = datetime(2026, 3, 29, 6, tzinfo=OSLO)
    rates = make_rates({"malformed": 5.0, "duplicate": 5.0})
    evs = list(generate(homes, start, start + timedelta(hours=4), 4, rates))
    sub, got = _subscriber(mosquitto, "trygg/test/#")
    try:
        st = publish(iter(evs), f"mqtt://127.0.0.1:{mosquitto}", "test", None)
        assert st.messages == len(evs) and st.acked == len(evs) and st.failed == 0
        _wait_for(got, len(evs))
        assert len(got) == len(evs)
        assert [t for t, _ in got] == [f"trygg/test/devices/{e.device}/events" for e in evs]
        assert [p for _, p in got] == [e.payload_bytes() for e in evs]
        good = [json.loads(p) for (_, p), e in zip(got, evs, strict=True) if e.raw is None]
        for obj in good[::20]:
            EventPayload.model_validate(obj)
        assert st.malformed > 0 and st.duplicates > 0
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_publish_batches_and_paces(mosquitto: int):
    from trygg.simulate.publisher import publish

    _, homes = build_homes(2, 4)
    start = datetime(2026, 6, 1, 12, tzinfo=OSLO)
    evs = [e for e in generate(homes, start, start + timedelta(hours=1), 4, make_rates(scale=0))]
    sub, got = _subscriber(mosquitto, "trygg/b/#")
    try:
        t0 = time.monotonic()
        span = evs[-1].ts - evs[0].ts
        st = publish(evs, f"mqtt://127.0.0.1:{mosquitto}", "b", span / 1.5, batch=5, batch_wait=600)
        assert time.monotonic() - t0 >= 1.3  # paced by event time
        assert st.events == len(evs) and st.messages < len(evs)
        _wait_for(got, st.messages)
        items = []
        for topic, payload in got:
            arr = json.loads(payload)
            assert isinstance(arr, list) and 1 <= len(arr) <= 5
            dev = topic.split("/")[3]
            items += [(dev, o["id"]) for o in arr]
        assert sorted(items) == sorted((e.device, e.id) for e in evs)
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_publish_reports_unreachable_broker():
    from trygg.simulate.publisher import publish

    with pytest.raises(ConnectionError):
        publish(iter([]), f"mqtt://127.0.0.1:{_free_port()}", "x", None, connect_timeout=1.5)


def test_no_unplanned_inactivity_or_bathroom_alarms(incident_run):
    """Ordinary days do not look like the injected incidents to the standard rules."""
    _homes, evs, truth = incident_run
    planned_inact = {t.events[0] for t in truth if t.incident == "inactivity" and t.events}
    planned_bath = {t.events[0] for t in truth if t.incident == "long-bathroom-stay" and t.events}
    activity: dict[str, list[SimEvent]] = defaultdict(list)
    for e in evs:
        if e.raw is None and not e.duplicate and e.type in ACTIVITY:
            activity[e.device.rsplit("-", 1)[1]].append(e)
    found_inact, found_bath = set(), set()
    for acts in activity.values():
        for a, b in pairwise(acts):
            la, lb = _local(a), _local(b)
            if la.date() == lb.date() and la.hour >= 7 and lb.hour < 22 and b.ts - a.ts >= 4 * 3600:
                found_inact.add(a.id)
        bath_start = None
        for e in acts:
            if e.device.startswith("motion-bathroom"):
                if bath_start is None:
                    bath_start = e
            elif bath_start is not None:
                if e.ts - bath_start.ts >= 3600:
                    found_bath.add(bath_start.id)
                bath_start = None
    assert planned_inact and found_inact == planned_inact
    assert planned_bath and found_bath == planned_bath


def test_cli_publishes_and_tees_jsonl(mosquitto: int, tmp_path: Path):
    sub, got = _subscriber(mosquitto, "trygg/cli/#")
    try:
        res = CliRunner().invoke(
            _app(),
            [
                "simulate",
                "-n",
                "2",
                "--start",
                "2026-10-25T01:00",
                "--duration",
                "2h",
                "--mqtt-url",
                f"mqtt://127.0.0.1:{mosquitto}",
                "--site",
                "cli",
                "--as-fast-as-possible",
                "--jsonl",
                str(tmp_path / "ev.jsonl"),
                "-q",
            ],
        )
        assert res.exit_code == 0, res.output
        lines = (tmp_path / "ev.jsonl").read_text().splitlines()
        _wait_for(got, len(lines))
        assert len(got) >= len(lines) > 100
        assert all(t.startswith("trygg/cli/devices/") and t.endswith("/events") for t, _ in got)
    finally:
        sub.loop_stop()
        sub.disconnect()
