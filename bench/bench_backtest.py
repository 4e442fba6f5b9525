"""Benchmark: `trygg rules backtest` of a month for 1,000 residents from the database,
against `trygg rules replay` of the same events from a JSONL file, in the same run.

    .venv/bin/python bench/bench_backtest.py [--residents 1000] [--days 28] [--repeat 2] [--append]

Generates the events with bench_replay.py's seeded generator (hourly heartbeats,
from 2026-03-23, so the spring-forward night is in), writes them as JSONL,
loads them into a private TimescaleDB (trygg.devenv.PrivatePostgres, COPY
through trygg.store.events) with the registry, then times, each in a
fresh child process (one core, nothing else in memory):

- ``replay``: `trygg rules replay` in-process over the JSONL file (parse +
  validate + enrich + the standard catalogue + the clock run on 24 h);
- ``stream``: the stored events read in time order through the backtest's
  server-side cursor (trygg.store.history.EventStream), no engine -- what the
  database side costs;
- ``backtest``: the back-test proper over the whole period from the database:
  current = the standard catalogue, candidate = the standard catalogue with
  bed-exit-no-return waiting 30 min; both engines, the matching and the report
  data (trygg.rules.backtest.backtest).

Memory: the peak RSS (ru_maxrss) of a child that back-tests the first week
against one that back-tests the whole period: it should not grow with the
length of the period (events are streamed; only alerts are kept).
Target: back-test rate >= 0.5 x replay rate. ``--append`` adds a dated
section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_replay import START, cpu_model, generate, make_registry  # noqa: E402

OSLO = ZoneInfo("Europe/Oslo")
CANDIDATE = """- rule: bed-exit-no-return
  wait: 30m
  override: {wait: replace}
"""


def _period(days: int) -> tuple[datetime, datetime]:
    t0 = datetime(START.year, START.month, START.day, tzinfo=OSLO)
    end = START + timedelta(days=days)
    return t0, datetime(end.year, end.month, end.day, tzinfo=OSLO)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------- children --


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    from trygg.registry import parse_registry
    from trygg.rules.catalogue import load_catalogue

    cat = load_catalogue([REPO / "rules"])
    out: dict[str, Any] = {"mode": args.child, "days": args.window_days}
    if args.child == "replay":
        from trygg.rules.replay import replay

        reg = parse_registry(make_registry(args.residents))
        t0 = time.perf_counter()
        with Path(args.jsonl).open("rb") as f:
            _, stats = replay(f, reg, cat, out=io.StringIO(), err=io.StringIO())
        out.update(events=stats.events, seconds=time.perf_counter() - t0, alerts=stats.alerts)
    else:
        import psycopg

        from trygg.rules.backtest import backtest
        from trygg.store.history import EventStream
        from trygg.store.registry import load_registry

        start, end = _period(args.window_days)
        with psycopg.connect(args.url) as conn:
            reg = load_registry(conn)
            conn.commit()
            stream = EventStream(conn, reg, start, end, itersize=args.fetch_size)
            t0 = time.perf_counter()
            if args.child == "stream":
                n = sum(1 for _ in stream)
                out.update(events=n, seconds=time.perf_counter() - t0)
            else:
                cand_file = Path(args.candidate)
                cand = load_catalogue([REPO / "rules", cand_file])
                res = backtest(stream, reg, cat, cand, start=start, end=end)
                out.update(
                    events=res.events,
                    seconds=time.perf_counter() - t0,
                    engines_seconds=res.elapsed_s,
                    current_alerts=res.current_alerts,
                    candidate_alerts=res.candidate_alerts,
                    removed=sum(d.removed for d in res.rules.values()),
                    shifted=sum(d.shifted for d in res.rules.values()),
                )
    out["maxrss_mb"] = _maxrss_mb()
    print(json.dumps(out), flush=True)


def run_child(mode: str, common: list[str], window_days: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--window-days", str(window_days), *common]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"child {mode} failed:\n{r.stderr}")
    doc: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return doc


# -------------------------------------------------------------------- setup --


def load_database(url: str, jsonl: Path, residents: int) -> tuple[int, float]:
    """The registry and every JSONL event into the database; (rows, seconds)."""
    import psycopg

    from trygg.registry import parse_registry
    from trygg.rules.replay import _validator, make_event
    from trygg.store.events import StoredEvent, write_events
    from trygg.store.registry import save_registry

    reg = parse_registry(make_registry(residents))
    devices = {d.id: (d.resident, d.kind, d.room) for d in reg.devices}
    rx = datetime(2027, 1, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    n = 0
    with psycopg.connect(url) as conn:
        save_registry(conn, reg)
        batch: list[StoredEvent] = []
        with jsonl.open("rb") as f:
            for line in f:
                p = _validator(line)
                d = devices[p.device]
                batch.append(StoredEvent(make_event(p, *d), rx + timedelta(microseconds=n)))
                n += 1
                if len(batch) == 100_000:
                    write_events(conn, batch)
                    batch = []
        if batch:
            write_events(conn, batch)
        conn.execute("ANALYZE events")
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=1000)
    ap.add_argument("--days", type=int, default=28, help="the period (default 4 weeks)")
    ap.add_argument("--week-days", type=int, default=7, help="the short period for memory")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes (the best is kept)")
    ap.add_argument("--fetch-size", type=int, default=20_000)
    ap.add_argument("--append", action="store_true", help="append a section to bench/RESULTS.md")
    # internal: one measurement in a child process
    ap.add_argument("--child", choices=["replay", "stream", "backtest"], help=argparse.SUPPRESS)
    ap.add_argument("--window-days", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--jsonl", help=argparse.SUPPRESS)
    ap.add_argument("--candidate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from trygg.devenv import PrivatePostgres
    from trygg.store.migrate import migrate

    with tempfile.TemporaryDirectory() as tmp, PrivatePostgres(timescaledb=True) as pg:
        jsonl = Path(tmp) / "events.jsonl"
        cand = Path(tmp) / "zz-bed-exit-30m.yaml"
        cand.write_text(CANDIDATE)
        t0 = time.perf_counter()
        n = generate(jsonl, args.residents, args.days)
        size_mb = jsonl.stat().st_size / 1e6
        print(f"generated {n:,} events ({size_mb:.0f} MB) in {time.perf_counter() - t0:.1f} s")
        migrate(pg.url)
        rows, load_s = load_database(pg.url, jsonl, args.residents)
        print(f"loaded {rows:,} events into TimescaleDB in {load_s:.1f} s", flush=True)
        common = [
            "--residents",
            str(args.residents),
            "--url",
            pg.url,
            "--jsonl",
            str(jsonl),
            "--candidate",
            str(cand),
            "--fetch-size",
            str(args.fetch_size),
        ]
        replays: list[dict[str, Any]] = []
        backtests: list[dict[str, Any]] = []
        streams: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # interleaved: the machine is shared
            replays.append(run_child("replay", common, args.days))
            print(f"replay:   {replays[-1]['events'] / replays[-1]['seconds']:,.0f} events/s")
            backtests.append(run_child("backtest", common, args.days))
            b = backtests[-1]
            print(
                f"backtest: {b['events'] / b['seconds']:,.0f} events/s, "
                f"peak RSS {b['maxrss_mb']:.0f} MB ({args.days} days)",
                flush=True,
            )
            streams.append(run_child("stream", common, args.days))
            print(f"stream:   {streams[-1]['events'] / streams[-1]['seconds']:,.0f} events/s")
        week = run_child("backtest", common, args.week_days)
        print(f"backtest of {args.week_days} days: peak RSS {week['maxrss_mb']:.0f} MB", flush=True)

    def rate(d: dict[str, Any]) -> float:
        return float(d["events"]) / float(d["seconds"])

    best_r = max(replays, key=rate)
    best_b = max(backtests, key=rate)
    best_s = max(streams, key=rate)
    ratios = [rate(b) / rate(r) for r, b in zip(replays, backtests, strict=True)]
    ratio = max(ratios)
    month_rss = max(b["maxrss_mb"] for b in backtests)
    print(
        f"best: replay {rate(best_r):,.0f} events/s, backtest {rate(best_b):,.0f} events/s, "
        f"ratio {ratio:.2f} (target >= 0.5); stream alone {rate(best_s):,.0f} events/s"
    )
    print(
        f"peak RSS: {args.week_days} days {week['maxrss_mb']:.0f} MB, "
        f"{args.days} days {month_rss:.0f} MB"
    )
    print(
        f"alerts: current {best_b['current_alerts']:,}, candidate {best_b['candidate_alerts']:,}, "
        f"removed {best_b['removed']:,}, moved {best_b['shifted']:,}"
    )
    if not args.append:
        return
    cmd = (
        f".venv/bin/python bench/bench_backtest.py --residents {args.residents} "
        f"--days {args.days} --repeat {args.repeat} --append"
    )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    verdict = "met" if ratio >= 0.5 else "**not met**"
    section = f"""
## {date.today().isoformat()} — rules backtest from TimescaleDB vs replay from JSONL

- Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()};
  load average at the end {load}; best of {args.repeat} interleaved passes, each in a fresh
  process.
- Command: `{cmd}`
- Input: {n:,} events ({size_mb:.0f} MB JSONL), {args.residents} homes, {args.days} days from
  {START} (bench_replay.py's generator, hourly heartbeats), loaded into a private
  TimescaleDB (COPY) in {load_s:.0f} s.
- `trygg rules replay` of the JSONL file (one catalogue): **{rate(best_r):,.0f} events/s**
  (passes: {", ".join(f"{rate(r):,.0f}" for r in replays)}).
- Back-test from the database, server-side cursor ({args.fetch_size:,} rows a fetch), two
  catalogues (standard vs bed-exit-no-return 30 min), matching and report data:
  **{rate(best_b):,.0f} events/s** (passes: {", ".join(f"{rate(b):,.0f}" for b in backtests)}),
  i.e. **{ratio:.2f}x** replay's rate in the same pass (target >= 0.5: {verdict}). Reading
  the events alone: {rate(best_s):,.0f} events/s.
- Peak RSS of the back-test process: {week["maxrss_mb"]:.0f} MB for {args.week_days} days,
  {month_rss:.0f} MB for {args.days} days.
- Alerts: current {best_b["current_alerts"]:,}, candidate {best_b["candidate_alerts"]:,};
  {best_b["removed"]:,} removed, {best_b["shifted"]:,} raised 10 min later.
"""
    with (REPO / "bench" / "RESULTS.md").open("a") as f:
        f.write(section)
    print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
