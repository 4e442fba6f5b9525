"""`trygg rules backtest --jobs N` (issue 22): the back-test sharded by resident
across worker processes gives the single process's report byte for byte, and
a shard that dies fails the whole run -- on a real TimescaleDB, real worker
processes and the simulator's month across the spring-forward night."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import new_database, trygg_cli
from tests.helpers import wait_until
from tests.shard_kill import assert_failed_whole, kill_a_worker, workers
from tests.test_backtest import (
    BED_EXIT,
    END,
    START,
    candidate_dir,
    current,
    store,
    to_events,
)
from trygg.devenv import PrivatePostgres
from trygg.registry import Registry
from trygg.rules.catalogue import load_catalogue
from trygg.simulate import build_homes, generate, make_rates
from trygg.store import history
from trygg.store.migrate import migrate
from trygg.store.registry import load_registry
from trygg.tuning.backtest import SHIFTED
from trygg.tuning.backtest_engines import alert_order, run_engines
from trygg.tuning.backtest_shards import ShardedRunner

HOMES = 10
CARE_PLANS = {  # care plans that move alerts, so they must travel to the shards
    "r-0002": {"bed-exit-no-return": {"wait": "25m", "reason": "slow to get back to bed"}},
    "r-0005": {"inactivity": {"for": "3h"}},
    "r-0007": {"bed-exit-no-return": {"wait": "15m"}},
}


@dataclass
class City:
    url: str
    registry: Registry
    events: int


@pytest.fixture(scope="module")
def city(pg_server: PrivatePostgres) -> City:
    """March 2026 (spring forward on the 29th) for 10 simulated homes, three of
    them with care plans, in a fresh database."""
    url = new_database(pg_server)
    migrate(url)
    registry, homes = build_homes(HOMES, seed=22, heartbeat=timedelta(hours=1))
    residents = [
        r.model_copy(update={"overrides": CARE_PLANS.get(r.id, {})}) for r in registry.residents
    ]
    registry = registry.model_copy(update={"residents": residents})
    rates = make_rates({"night-exit-no-return": 0.4, "duplicate": 0.0, "malformed": 0.0})
    events = list(to_events(generate(homes, START, END, 22, rates, []), registry))
    store(url, registry, events)
    return City(url, registry, len(events))


def backtest_cli(
    city: City, cand: Path, jobs: int, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {"TRYGG_DATABASE_URL": city.url, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    args = ["rules", "backtest", "--candidate", str(cand), "--from", "2026-03-01"]
    args += ["--to", "2026-04-01", "--jobs", str(jobs), *extra]
    return trygg_cli(*args, env=env, check=check)


TIMINGS = [
    (re.compile(r'"elapsed_s": [0-9.]+'), '"elapsed_s": T'),
    (re.compile(r'"events_per_s": [0-9.]+'), '"events_per_s": R'),
    (re.compile(r" in [0-9.,]+ s: [0-9,]+ events/s"), " in T s: R events/s"),
]


def untimed(report: str) -> str:
    """The report without the run's own duration and rate (which differ between
    any two runs); everything else must be the same byte for byte."""
    for pattern, repl in TIMINGS:
        report, n = pattern.subn(repl, report)
        assert n <= 1
    return report


def test_sharded_and_single_process_reports_are_byte_identical(city: City, tmp_path: Path) -> None:
    cand = candidate_dir(tmp_path)
    with psycopg.connect(city.url) as conn:
        shards = history.resident_shards(conn, 3)
        stored = load_registry(conn)
    # the shards split the residents (every one in exactly one), none is empty,
    # and the care plans are the stored ones
    assert sorted(r for s in shards for r in s) == sorted(r.id for r in city.registry.residents)
    assert all(shards)
    assert {r.id: r.overrides for r in stored.residents if r.overrides} == CARE_PLANS

    reports: dict[tuple[int, str], str] = {}
    for jobs in (1, 3):
        for fmt in ("json", "table"):
            r = backtest_cli(city, cand, jobs, "--format", fmt, "--no-progress")
            reports[(jobs, fmt)] = r.stdout
            assert f"back-tested {city.events:,} events" in r.stderr
            assert ("(3 shards)" in r.stderr) == (jobs == 3)
    assert untimed(reports[(3, "json")]) == untimed(reports[(1, "json")])
    assert untimed(reports[(3, "table")]) == untimed(reports[(1, "table")])
    # not a vacuous comparison: the candidate changes alerts of residents in every shard
    doc = json.loads(reports[(1, "json")])
    changed = {c["resident"] for c in doc["changes"]}
    assert len(doc["changes"]) > 10
    assert all(changed & set(s) for s in shards)
    # the care plans of r-0002 and r-0007 set their bed-exit wait in both catalogues:
    # their bed exits alert (below), and the candidate's 30 min changes none of them
    assert changed and not changed & {"r-0002", "r-0007"}

    # The alert lists themselves, in the same order (alert_order), not only the report.
    cat, cand_cat = current(), load_catalogue([cand])
    with psycopg.connect(city.url) as conn:
        conn.commit()
        stream = history.EventStream(conn, stored, START - timedelta(days=1), END)
        one = run_engines(stream, stored, cat, cand_cat, until=END)
    runner = ShardedRunner(city.url, shards, START - timedelta(days=1), END, itersize=3_000)
    sharded = runner([], stored, cat, cand_cat, until=END)
    assert sharded == one
    assert {"r-0002", "r-0007"} <= {s.resident for s in one[0] if s.rule == BED_EXIT}
    assert [alert_order(s) for s in one[0]] == sorted(alert_order(s) for s in one[0])
    assert len(runner.runs) == 3 and all(r.events > 0 for r in runner.runs)
    assert sum(r.events for r in runner.runs) == one[2]


def _streaming_shards(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
            " 'trygg backtest shard %' AND state IN ('active', 'idle in transaction')"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_killed_shard_fails_the_whole_run_and_writes_no_report(
    city: City, tmp_path: Path
) -> None:
    cand = candidate_dir(tmp_path)
    out = tmp_path / "report.json"
    env = {**os.environ, "TRYGG_DATABASE_URL": city.url, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    args = ["rules", "backtest", "--candidate", str(cand), "--from", "2026-03-01"]
    args += ["--to", "2026-04-01", "--jobs", "2", "--fetch-size", "50", "--format", "json"]

    def mid_run(pid: int) -> list[int]:
        # mid-run: both shards hold their cursor open (reading 50 rows a fetch)
        wait_until(lambda: _streaming_shards(city.url) == 2, timeout=60)
        return wait_until(lambda: workers(pid), timeout=10)

    run = kill_a_worker([*args, "--out", str(out)], mid_run, env)
    assert_failed_whole(run, "back-test", "no report was written")
    assert not out.exists()


ONLY_BUTTON = """- rule: button
  kind: event
  code: "4.13"
  severity: red
  title: Alarm button pressed
  description: The resident has pressed the alarm button.
  reason: A call for help is always answered.
  when: button.pressed
"""


def test_a_care_plan_that_does_not_fit_is_reported_from_the_shards(
    city: City, tmp_path: Path
) -> None:
    """The workers' CarePlanError reaches the user whole, as from one process."""
    cand = tmp_path / "only-button.yaml"
    cand.write_text(ONLY_BUTTON)
    outputs = []
    for jobs in (1, 2):
        r = backtest_cli(city, cand, jobs, "--no-progress", "--format", "json", check=False)
        assert r.returncode == 1
        outputs.append(r.stderr)
    assert outputs[0] == outputs[1]
    assert "the stored care plans do not fit a catalogue:" in outputs[1]
    for rid in CARE_PLANS:
        assert f"  resident {rid!r}: care plan: " in outputs[1]


def test_progress_sums_the_shards(city: City) -> None:
    with psycopg.connect(city.url) as conn:
        shards = history.resident_shards(conn, 2)
        stored = load_registry(conn)
    seen: list[tuple[int, float]] = []
    start = START - timedelta(days=1)

    def tick(n: int, last: Any) -> None:
        seen.append((n, (last - start).total_seconds()))

    runner = ShardedRunner(city.url, shards, start, END, itersize=2_000, progress=tick)
    _, _, n, _ = runner([], stored, current(), current(), until=END)
    assert n == city.events
    counts = [c for c, _ in seen]
    assert counts == sorted(counts) and counts[-1] == n  # one count for all shards
    assert counts[-1] > max(r.events for r in runner.runs)
    span = (END - start).total_seconds()
    assert 0 < seen[-1][1] <= span and seen[-1][1] > 0.9 * span


DISTRICT_CANDIDATE = """- rule: bed-exit-no-return
  wait: 30m
  reason: our residents take longer to get back to bed
"""


def test_a_districts_overlay_backtest_is_the_same_sharded(city: City, tmp_path: Path) -> None:
    """`--district`: the engines run on two registries (the overlay in force and the
    candidate's); the shards get both and give the single process's report."""
    cand = tmp_path / "default.yaml"
    cand.write_text(DISTRICT_CANDIDATE)
    reports = {}
    for jobs in (1, 3):
        r = backtest_cli(city, cand, jobs, "--district", "default", "--format", "json")
        assert ("(3 shards)" in r.stderr) == (jobs == 3)
        reports[jobs] = r.stdout
    assert untimed(reports[3]) == untimed(reports[1])
    doc = json.loads(reports[1])
    assert doc["catalogues"]["candidate"].startswith("overlay-default+")
    shifted = {c["resident"] for c in doc["changes"] if c["kind"] == SHIFTED}
    # the overlay moves the bed exits of residents without a care plan for them
    assert len(shifted) >= 5 and not shifted & {"r-0002", "r-0007"}


def test_a_shards_cursor_reads_only_the_periods_chunks_and_its_residents(city: City) -> None:
    """The plan of a shard's query (as its cursor runs it): only the chunks of the
    period (one a day), filtered to the shard's residents; no parallel workers."""
    with psycopg.connect(city.url) as conn:
        chunks = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'events'"
        ).fetchone()
        shard = history.resident_shards(conn, 3)[1]
        conn.commit()
        start = START + timedelta(days=10)
        plan = history.event_stream_plan(conn, start, start + timedelta(days=2), shard)
    assert chunks is not None and chunks[0] >= 31
    scanned = set(re.findall(r" on (_hyper_\w+_chunk)", plan))
    assert 2 <= len(scanned) <= 3  # two local days touch two or three UTC-day chunks
    assert "resident = ANY" in plan and "Gather" not in plan
