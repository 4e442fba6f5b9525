"""Latency histograms present and moving (issue 18, item 4), on ``trygg run`` as its
own process with a real broker, database and webhook receiver:

- /metrics is scraped before and after a fall that staff take and arrive at
  through the API; each histogram's ``_count`` rose and what it observed is
  plausible for what the test did (the event 2 s old when sent, 1 s before the
  take, 1 s before the arrival);
- the latency dashboard's PromQL (dashboards/latency.json) is checked against
  that real scrape: its syntax, and that every metric, label and bucket it names
  is in /metrics. No Prometheus server runs here, so no expression is evaluated:
  when ``promtool`` is installed (Debian's package ``prometheus``) it parses the
  expressions (``promtool check rules``) and lints the scrape (``promtool check
  metrics``), else only the checks in Python below run.

The panels' SQL runs against a real database in tests/test_dashboards.py (as the
owner) and tests/test_compose_stack.py (as grafana_reader).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from tests.test_dashboards import promql
from tests.test_outbox import Flaky, _service, _settle
from trygg.api.exposition import render
from trygg.api.metrics import Histogram
from trygg.devenv import PrivateMosquitto, free_port
from trygg.model import Severity, Signal, SignalAction
from trygg.runner.alerting import AlertService
from trygg.runner.drain_lag import LAG_BUCKETS, receipt_lags
from trygg.runner.drainer import DrainerProcess
from trygg.runner.spool import Position, Spool

SITE = "oslo"
REGISTRY = """
residents:
  - {id: r-0001, team: stovner-nord}
devices:
  - {id: fall-0001, resident: r-0001, kind: fall}
  - {id: bed-0001, resident: r-0001, kind: bed, room: bedroom}
"""
HISTOGRAMS = {
    "trygg_alert_receipt_to_raised_seconds": ("severity",),
    "trygg_alert_event_to_raised_seconds": ("severity", "trigger"),
    "trygg_alert_raised_to_notified_seconds": ("channel",),
    "trygg_alert_notified_to_acknowledged_seconds": ("severity",),
    "trygg_alert_acknowledged_to_arrived_seconds": ("severity",),
    "trygg_drainer_lag_seconds": (),
}
AGE = 2.0  # the fall's event time is this much before it is sent
WAIT = 1.0  # before the take, and again before the arrival

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Scrape:
    """One /metrics answer, parsed with prometheus_client's text parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: Samples = {}
        for f in self.families.values():
            for s in f.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]


def _scrape(port: int) -> Scrape:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    return Scrape(r.text)


@pytest.fixture
def setup(tmp_path, db):  # type: ignore[no-untyped-def]
    (tmp_path / "registry.yaml").write_text(REGISTRY)
    trygg_cli("registry", "load", str(tmp_path / "registry.yaml"), "--database-url", db)
    out = trygg_cli(
        "users", "add", "nurse-1", "--role", "care_staff", "--team", "stovner-nord",
        "--database-url", db,
    )  # fmt: skip
    return out.stdout.strip()


def _env(broker: PrivateMosquitto, db: str, hook: WebhookReceiver, port: int) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": f"trygg-latency-{time.monotonic_ns()}",
        "TRYGG_WEBHOOK_URL": hook.url,
        "TRYGG_HTTP_PORT": str(port),
    }


def _act(port: int, token: str, alert_id: str, action: str) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/alerts/{alert_id}/{action}",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _moved(before: Scrape, after: Scrape, name: str, **labels: str) -> tuple[float, float]:
    """(observations, seconds) added between the two scrapes."""
    return (
        after.value(f"{name}_count", **labels) - before.value(f"{name}_count", **labels),
        after.value(f"{name}_sum", **labels) - before.value(f"{name}_sum", **labels),
    )


def test_histograms_present_and_moving(setup, db, broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = setup
    port = free_port()
    with WebhookReceiver() as hook, TryggProcess(_env(broker, db, hook, port)) as trygg:
        trygg.wait_connected()
        wait_until(lambda: _ready(port), timeout=30)
        before = _scrape(port)
        for name, labels in HISTOGRAMS.items():
            f = before.families.get(name)
            assert f is not None and f.type == "histogram", f"{name} not in /metrics"
            assert len(f.documentation) > 30, f"{name}: HELP says too little"
            for s in before.series(f"{name}_bucket"):
                assert set(s) == {*labels, "le"}, (name, s)
        # zero before the first observation, so rate() sees the first one
        assert before.value("trygg_alert_receipt_to_raised_seconds_count", severity="red") == 0
        assert before.families["trygg_spool_backlog_age_seconds"].type == "gauge"

        event_time = datetime.now(UTC) - timedelta(seconds=AGE)
        publish(
            broker.port,
            [
                (
                    f"trygg/{SITE}/devices/bed-0001/events",
                    event_json("b-1", "bed.occupied", event_time.isoformat()),
                ),
                (
                    f"trygg/{SITE}/devices/fall-0001/events",
                    event_json("f-1", "fall.detected", event_time.isoformat(), room="bathroom"),
                ),
            ],
        )
        wait_until(lambda: hook.received, timeout=10)
        alert_id = hook.received[0][2]["id"]
        time.sleep(WAIT)
        _act(port, token, alert_id, "take")  # acknowledged, assigned to and accepted by nurse-1
        time.sleep(WAIT)
        _act(port, token, alert_id, "arrive")

        def moved() -> Scrape | None:
            s = _scrape(port)
            stored, _ = _moved(before, s, "trygg_drainer_lag_seconds")
            rose = [
                _moved(before, s, "trygg_alert_acknowledged_to_arrived_seconds", severity="red"),
                *(
                    _moved(before, s, "trygg_alert_raised_to_notified_seconds", channel=c)
                    for c in ("webhook", "mqtt", "console")
                ),
            ]
            return s if stored >= 2 and all(n >= 1 for n, _ in rose) else None

        after = wait_until(moved, timeout=15, interval=0.2)
        assert isinstance(after, Scrape)

        # event receipt -> raised: trygg's own work, well under a second
        n, s = _moved(before, after, "trygg_alert_receipt_to_raised_seconds", severity="red")
        assert n == 1 and 0 <= s < 1.0, (n, s)
        # the event's own time -> raised: the AGE it had when sent, and a little more
        n, s = _moved(
            before, after, "trygg_alert_event_to_raised_seconds", severity="red", trigger="event"
        )
        assert n == 1 and AGE <= s < AGE + 10, (n, s)
        # raised -> notified, on each channel of the built-in routing
        for channel in ("webhook", "mqtt", "console"):
            n, s = _moved(before, after, "trygg_alert_raised_to_notified_seconds", channel=channel)
            assert n == 1 and 0 <= s < 5, (channel, n, s)
        # staff: 1 s before the take, 1 s before the arrival
        n, ack = _moved(
            before, after, "trygg_alert_notified_to_acknowledged_seconds", severity="red"
        )
        assert n == 1 and WAIT <= ack < WAIT + 10, (n, ack)
        n, arrive = _moved(
            before, after, "trygg_alert_acknowledged_to_arrived_seconds", severity="red"
        )
        assert n == 1 and WAIT <= arrive < WAIT + 10, (n, arrive)
        # the drainer: both events stored, each within seconds of its receipt
        n, s = _moved(before, after, "trygg_drainer_lag_seconds")
        assert n >= 2 and 0 <= s / n < 10, (n, s)
        assert 0 <= after.value("trygg_spool_backlog_age_seconds") < 60

        for name in HISTOGRAMS:
            _check_buckets(after, name)
        _check_promql(after, tmp_path)
        # the same staff steps as the alert records (the SQL panels) have them
        wait_until(lambda: "arrived" in _steps(db, alert_id), timeout=10)
        steps = _steps(db, alert_id)
        assert abs((steps["acknowledged"] - steps["notified"]).total_seconds() - ack) < 0.001
        assert abs((steps["arrived"] - steps["acknowledged"]).total_seconds() - arrive) < 0.001
    assert "Traceback" not in trygg.output()


def _steps(db: str, alert_id: str) -> dict[str, datetime]:
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT step, min(at) FROM alert_records WHERE alert_id = %s GROUP BY step",
            [alert_id],
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _check_buckets(scrape: Scrape, name: str) -> None:
    """Cumulative buckets, +Inf equal to _count, for every series."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (n, labels), v in scrape.samples.items():
        if n == f"{name}_bucket":
            d = dict(labels)
            le = float(d.pop("le"))
            series.setdefault(tuple(sorted(d.items())), []).append((le, v))
    assert series, name
    for labels, buckets in series.items():
        counts = [v for _, v in sorted(buckets)]
        assert counts == sorted(counts), (name, labels)
        assert sorted(buckets)[-1][0] == float("inf")
        assert counts[-1] == scrape.value(f"{name}_count", **dict(labels))


# ------------------------------------------------------------------ the dashboard's PromQL

FUNCTIONS = {"histogram_quantile", "sum", "rate", "increase", "max"}
GRAFANA = {"$__rate_interval": "5m"}  # Grafana's variables, as it would fill them in


# The embedded runner's spool: the distributed runner has none (its sink reads Kafka).
SPOOL_ONLY = {"trygg_spool_backlog_age_seconds"}


def _check_promql(scrape: Scrape, tmp: Path, *, spool: bool = True) -> None:
    """``spool=False``: the distributed stack's scrape (the workers' and the API's
    /metrics together), which has every latency histogram but no spool panel."""
    exprs = promql()
    if not spool:
        exprs = [
            (d, p, e) for d, p, e in exprs if not SPOOL_ONLY & set(re.findall(r"trygg_\w+", e))
        ]
    assert len(exprs) >= 8
    names = {n for n, _ in scrape.samples}
    checked: set[str] = set()
    for dash, pid, raw in exprs:
        where = f"{dash} panel {pid}: {raw}"
        expr = raw
        for var, value in GRAFANA.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {where}"
        _balanced(expr, where)
        for fn in re.findall(r"([a-z_]+)\s*\(", expr):
            assert fn in FUNCTIONS | {"by"}, f"{fn}() in {where}"
        for d in re.findall(r"\[([^\]]*)\]", expr):
            assert re.fullmatch(r"\d+[smhd]", d), f"range [{d}] in {where}"
        metrics = re.findall(r"\b(trygg_[a-z_]+)\b", expr)
        assert metrics, where
        for m in metrics:
            assert m in names, f"{m} is not in /metrics ({where})"
            checked.add(m)
            labels = set().union(*(set(s) for s in scrape.series(m)))
            for by in re.findall(r"by \(([^)]*)\)", expr):
                for label in (x.strip() for x in by.split(",")):
                    assert label in labels, f"{m} has no label {label} ({where})"
            for sel in re.findall(rf"{m}\{{([^}}]*)\}}", expr):
                for label, value in re.findall(r'(\w+)="([^"]*)"', sel):
                    values = {s.get(label) for s in scrape.series(m)}
                    assert value in values, f'{m}{{{label}="{value}"}} matches nothing ({where})'
    # every latency histogram and the backlog gauge has a panel
    assert {f"{h}_bucket" for h in HISTOGRAMS} <= checked
    assert not spool or "trygg_spool_backlog_age_seconds" in checked
    _promtool(exprs, scrape, tmp / "panels.yml")


def _balanced(expr: str, where: str) -> None:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], f"unbalanced {ch} in {where}"
    assert not stack, f"unclosed {stack} in {where}"


def _promtool(exprs: list[tuple[str, int, str]], scrape: Scrape, path: Path) -> None:
    """Prometheus's own parser and linter, when installed (not a server)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "latency-dashboard",
                "rules": [
                    {"record": f"panel:{Path(d).stem.replace('-', '_')}:{pid}_{i}", "expr": e}
                    for i, (d, pid, e) in enumerate(exprs)
                ],
            }
        ]
    }
    text = yaml.safe_dump(rules)
    for var, value in GRAFANA.items():
        text = text.replace(var, value)
    path.write_text(text)
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=scrape.text.encode(), capture_output=True
    )
    mine = ("trygg_alert_", "trygg_drainer_lag", "trygg_spool_backlog_age")
    problems = [
        line
        for line in (lint.stdout + lint.stderr).decode().splitlines()
        if line.strip().startswith(mine)
    ]
    assert not problems, problems


# ------------------------------------------------------------------ the parts alone


def test_histogram_buckets_counts_and_exposition() -> None:
    h = Histogram("trygg_test_seconds", "a test histogram", (0.5, 1.0, 60.0), ("severity",))
    h.observe(0.5, "red")  # on a bound: in that bucket (le)
    h.observe(-3, "red")  # a device clock ahead of trygg's: 0
    h.observe(61, "red", n=3)
    h.observe(float("nan"), "red")  # ignored
    assert h.add([1, 0, 0, 1], 100.25, "green") and not h.add([1, 2], 1.0, "green")
    assert h.count("red") == 5 and h.count() == 7
    text = generate_latest(_Only(h)).decode()
    s = Scrape(text)
    assert s.families["trygg_test_seconds"].documentation == "a test histogram"
    assert s.value("trygg_test_seconds_bucket", severity="red", le="0.5") == 2
    assert s.value("trygg_test_seconds_bucket", severity="red", le="60.0") == 2
    assert s.value("trygg_test_seconds_bucket", severity="red", le="+Inf") == 5
    assert s.value("trygg_test_seconds_sum", severity="red") == 0.5 + 183
    assert s.value("trygg_test_seconds_count", severity="green") == 2
    assert s.value("trygg_test_seconds_sum", severity="green") == 100.25


class _Only:
    def __init__(self, h: Histogram) -> None:
        self.h = h

    def collect(self) -> Any:
        yield self.h.family()


def test_the_drainer_counts_its_lag_per_bucket_and_the_backlog_has_an_age(tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    rx = [(now - timedelta(seconds=s)).isoformat() for s in (0.2, 0.2, 0.2, 45, 90_000)]
    records: list[dict[str, Any]] = [{"op": "ev", "rx": r} for r in rx]
    records.append({"op": "dl", "rx": rx[0]})  # a dead letter is no event
    lag = receipt_lags(records, now.timestamp())
    assert lag is not None and sum(lag["n"]) == 5
    i = LAG_BUCKETS.index
    assert lag["n"][i(0.25)] == 3 and lag["n"][i(60.0)] == 1 and lag["n"][-1] == 1
    assert abs(lag["sum"] - (0.6 + 45 + 90_000)) < 0.01
    assert receipt_lags([{"op": "achg", "snap": {}, "recs": []}], now.timestamp()) is None

    spool = Spool(tmp_path / "spool")
    d = DrainerProcess(spool.dir, "test", "postgresql://unused", "json", "INFO")
    assert d.backlog_age(now) == 0.0  # an empty spool
    spool.append([{"op": "ev", "rx": (now - timedelta(seconds=30)).isoformat()}])
    spool.append([{"op": "acc", "at": now.isoformat()}])
    assert 29.9 < d.backlog_age(now) < 30.1  # the oldest line not yet stored
    first = spool.append([])  # the end of the first two lines
    d.position = Position(first.segment, first.offset)
    assert d.backlog_age(now) == 0.0  # all stored
    d.lag.add(lag["n"], lag["sum"])
    assert d.lag.count() == 5
    spool.close()


def _fall(at: datetime, resident: str = "r-1") -> Signal:
    return Signal(SignalAction.FIRE, "fall", resident, at, "4.1", Severity.RED, "test-1", ("e-1",))


def test_the_alert_service_observes_each_step_at_its_moment() -> None:
    t0 = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
    clock = [t0]

    async def go() -> AlertService:
        svc = _service(Flaky(fail=0), clock=lambda: clock[0])
        svc.cause = ("e-1", t0 - timedelta(seconds=0.004))  # the runner, before the signal
        svc.on_signal(_fall(t0 - timedelta(seconds=2)))
        clock[0] = t0 + timedelta(seconds=0.5)  # the delivery's moment
        await _settle(svc)
        aid = svc.open_alerts()[0].id
        clock[0] = t0 + timedelta(seconds=40)
        await svc.act(aid, "take", "nurse-1")
        clock[0] = t0 + timedelta(seconds=640)
        await svc.act(aid, "arrive", "nurse-1")
        # a timer rule's alert, fired as an event's time passed its deadline: the
        # event is not among the alert's; the timer fell due 90 s before
        svc.cause = ("e-2", clock[0])
        svc.on_signal(_fall(clock[0] - timedelta(seconds=90), resident="r-2"))
        await _settle(svc)
        await svc.stop()
        return svc

    svc = asyncio.run(go())
    lat = svc.latency
    red = ("red",)
    assert lat.receipt_to_raised.count(*red) == 1
    assert lat.event_to_raised.count("red", "event") == 1
    assert lat.event_to_raised.count("red", "timer") == 1
    assert lat.raised_to_notified.count("webhook") == 2
    assert lat.notified_to_acknowledged.count(*red) == 1
    assert lat.acknowledged_to_arrived.count(*red) == 1
    s = Scrape(render(None, svc))
    assert abs(s.value("trygg_alert_receipt_to_raised_seconds_sum", severity="red") - 0.004) < 1e-9
    assert s.value("trygg_alert_event_to_raised_seconds_sum", severity="red", trigger="event") == 2
    assert s.value("trygg_alert_event_to_raised_seconds_sum", severity="red", trigger="timer") == 90
    assert s.value("trygg_alert_raised_to_notified_seconds_sum", channel="webhook") == 0.5 + 0
    assert s.value("trygg_alert_notified_to_acknowledged_seconds_sum", severity="red") == 40
    assert s.value("trygg_alert_acknowledged_to_arrived_seconds_sum", severity="red") == 600
