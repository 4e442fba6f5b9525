"""Benchmark: `trygg rules backtest` of a month for 1,000 residents from the database,
against `trygg rules replay` of the same events from a JSONL file, in the same run;
and the back-test sharded over worker processes (``--jobs``) against the single process.

    .venv/bin/python bench/bench_backtest.py [--residents 1000] [--days 28] [--repeat 2] \
        [--jobs 1 --jobs 2] [--append]

Generates the events with bench_replay.py's seeded generator (hourly heartbeats,
from 2026-03-23, so the spring-forward night is in), writes them as JSONL,
loads them into a private TimescaleDB (trygg.devenv.PrivatePostgres, COPY
through trygg.store.events) with the registry, then times, each in a
fresh child process (one core, nothing else in memory):

- ``replay``: `trygg rules replay` in-process over the JSONL file (parse +
  validate + enrich + the standard catalogue + the clock run on 24 h);
- ``stream``: the stored events read in receipt order (received_at, as the
  back-test reads them) through the backtest's server-side cursor
  (trygg.store.history.EventStream), no engine -- what the database side costs;
- ``backtest``: the back-test proper over the whole period from the database:
  current = the standard catalogue, candidate = the standard catalogue with
  bed-exit-no-return waiting 30 min; both engines, the matching and the report
  data (trygg.tuning.backtest.backtest), once per ``--jobs`` value: 1 in the
  child itself, N > 1 sharded by resident over N worker processes
  (trygg.tuning.backtest_shards, as ``trygg rules backtest --jobs N``).

CPU per event: the process time (user + system) of the back-test -- the
child's for ``--jobs 1``; the parent's plus every worker's, from its start
(interpreter and imports included) to its end, for N > 1 -- divided by the
events (``shard_cpu_s``: each worker's own share, engines and stream only).
Unlike the wall-clock rate it hardly changes when
other work shares the machine, so it is the figure to scale from. The load
average before and after the run is printed and recorded.

Memory: the peak RSS (ru_maxrss) of a child that back-tests the first week
against one that back-tests the whole period, and likewise of the largest
worker of the sharded run: it should not grow with the length of the period
(events are streamed; only alerts are kept).
Targets: back-test rate >= 0.5 x replay rate; ``--jobs 2`` >= 1.7 x the
``--jobs 1`` rate (on a quiet 2-core machine). The ``EXPLAIN`` of one shard's
query and of the unsharded one is printed (docs/rules.md shows it).
``--append`` adds a dated section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
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


def _children_cpu() -> float:
    """User + system time of the ended children of this process (the workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _backend_cpu(conn: Any) -> float:
    """User + system time of this connection's PostgreSQL backend process (the
    private server runs on this machine): the database's side of the stream."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    conn.commit()
    fields = Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        from trygg.tuning.replay import replay

        reg = parse_registry(make_registry(args.residents))
        t0 = time.perf_counter()
        with Path(args.jsonl).open("rb") as f:
            _, stats = replay(f, reg, cat, out=io.StringIO(), err=io.StringIO())
        out.update(events=stats.events, seconds=time.perf_counter() - t0, alerts=stats.alerts)
    else:
        import psycopg

        from trygg.store.history import EventStream, resident_shards
        from trygg.store.registry import load_registry
        from trygg.tuning.backtest import backtest
        from trygg.tuning.backtest_engines import run_engines
        from trygg.tuning.backtest_shards import ShardedRunner

        start, end = _period(args.window_days)
        with psycopg.connect(args.url) as conn:
            reg = load_registry(conn)
            shards = resident_shards(conn, args.child_jobs) if args.child_jobs > 1 else []
            conn.commit()
            stream = EventStream(conn, reg, start, end, itersize=args.fetch_size)
            t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
            if args.child == "stream":
                backend = _backend_cpu(conn)
                n = sum(1 for _ in stream)
                out.update(
                    events=n,
                    seconds=time.perf_counter() - t0,
                    db_cpu_s=_backend_cpu(conn) - backend,
                )
            else:
                cand_file = Path(args.candidate)
                cand = load_catalogue([REPO / "rules", cand_file])
                runner = (
                    ShardedRunner(args.url, shards, start, end, itersize=args.fetch_size)
                    if args.child_jobs > 1
                    else None
                )
                res = backtest(
                    stream, reg, cat, cand, start=start, end=end, runner=runner or run_engines
                )
                seconds = time.perf_counter() - t0
                # all of it: this process, and the workers from their start (interpreter,
                # imports) to their end -- the pool has joined them
                cpu = time.process_time() - c0 + _children_cpu() - k0
                out.update(
                    jobs=args.child_jobs,
                    events=res.events,
                    seconds=seconds,
                    cpu_s=cpu,
                    engines_seconds=res.elapsed_s,
                    current_alerts=res.current_alerts,
                    candidate_alerts=res.candidate_alerts,
                    removed=sum(d.removed for d in res.rules.values()),
                    shifted=sum(d.shifted for d in res.rules.values()),
                    shard_events=[r.events for r in runner.runs] if runner else [res.events],
                    shard_cpu_s=[round(r.cpu_s, 3) for r in runner.runs] if runner else [cpu],
                    worker_maxrss_mb=max((r.maxrss_mb for r in runner.runs), default=0.0)
                    if runner
                    else None,
                )
    out["maxrss_mb"] = _maxrss_mb()
    print(json.dumps(out), flush=True)


def run_child(mode: str, common: list[str], window_days: int, jobs: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--window-days", str(window_days), *common]
    cmd += ["--child-jobs", str(jobs)]
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
    from trygg.store.events import StoredEvent, write_events
    from trygg.store.registry import save_registry
    from trygg.tuning.replay_format import make_event
    from trygg.tuning.replay_format import validate_line as _validator

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


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def plans(url: str, days: int, shards: list[int], analyze: int) -> dict[str, str]:
    """EXPLAIN of the stream's query (as its cursor plans it): unsharded and of
    the first of n shards (the list of ids abridged); and EXPLAIN ANALYZE of the
    first of ``analyze`` shards (what the sort costs the database)."""
    import psycopg

    from trygg.store.history import event_stream_plan, resident_shards

    def abridged(plan: str, ids: list[str] | None) -> str:
        n = len(ids or [])
        return re.sub(r"'\{[^}]*\}'::text\[\]", f"'{{<{n} residents>}}'::text[]", plan)

    start, end = _period(days)
    out: dict[str, str] = {}
    with psycopg.connect(url) as conn:
        for n in shards:
            shard = resident_shards(conn, n)[0] if n > 1 else None
            conn.commit()
            what = "unsharded" if n == 1 else f"shard 1 of {n}"
            out[what] = abridged(event_stream_plan(conn, start, end, shard), shard)
        shard = resident_shards(conn, analyze)[0]
        conn.commit()
        plan = event_stream_plan(conn, start, end, shard, analyze=True)
        out[f"shard 1 of {analyze}, ANALYZE"] = abridged(plan, shard)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=1000)
    ap.add_argument("--days", type=int, default=28, help="the period (default 4 weeks)")
    ap.add_argument("--week-days", type=int, default=7, help="the short period for memory")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes (the best is kept)")
    ap.add_argument("--fetch-size", type=int, default=20_000)
    ap.add_argument(
        "--jobs",
        type=int,
        action="append",
        help="back-test with this many worker processes (repeatable; default: 1 and 2)",
    )
    ap.add_argument("--append", action="store_true", help="append a section to bench/RESULTS.md")
    # internal: one measurement in a child process
    ap.add_argument("--child", choices=["replay", "stream", "backtest"], help=argparse.SUPPRESS)
    ap.add_argument("--child-jobs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--window-days", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--jsonl", help=argparse.SUPPRESS)
    ap.add_argument("--candidate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    jobs_list: list[int] = sorted(set(args.jobs or [1, 2]))
    if 1 not in jobs_list:
        jobs_list.insert(0, 1)  # the baseline, in the same run
    most = max(jobs_list)

    from trygg.devenv import PrivatePostgres
    from trygg.store.migrate import migrate

    load_before = _load()
    print(f"load average before: {load_before} (nproc {os.cpu_count()})", flush=True)
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
        for what, plan in plans(pg.url, args.days, sorted({1, *jobs_list, 16}), most).items():
            print(f"EXPLAIN, {what}:\n{plan}")
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
        backtests: dict[int, list[dict[str, Any]]] = {j: [] for j in jobs_list}
        streams: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # interleaved: the machine is shared
            replays.append(run_child("replay", common, args.days))
            print(f"replay:   {replays[-1]['events'] / replays[-1]['seconds']:,.0f} events/s")
            for j in jobs_list:
                backtests[j].append(run_child("backtest", common, args.days, j))
                b = backtests[j][-1]
                print(
                    f"backtest --jobs {j}: {b['events'] / b['seconds']:,.0f} events/s, "
                    f"CPU {b['cpu_s'] / b['events'] * 1e6:.2f} us/event, "
                    f"peak RSS {b['maxrss_mb']:.0f} MB"
                    + (
                        f" (largest worker {b['worker_maxrss_mb']:.0f} MB)"
                        if b.get("worker_maxrss_mb")
                        else ""
                    )
                    + f" ({args.days} days); load {_load()}",
                    flush=True,
                )
            streams.append(run_child("stream", common, args.days))
            print(f"stream:   {streams[-1]['events'] / streams[-1]['seconds']:,.0f} events/s")
        week = run_child("backtest", common, args.week_days)
        print(f"backtest of {args.week_days} days: peak RSS {week['maxrss_mb']:.0f} MB", flush=True)
        week_n: dict[str, Any] | None = None
        if most > 1:
            week_n = run_child("backtest", common, args.week_days, most)
            print(
                f"backtest --jobs {most} of {args.week_days} days: largest worker's peak RSS "
                f"{week_n['worker_maxrss_mb']:.0f} MB",
                flush=True,
            )
    load_after = _load()

    def rate(d: dict[str, Any]) -> float:
        return float(d["events"]) / float(d["seconds"])

    def us(d: dict[str, Any]) -> float:
        return float(d["cpu_s"]) / float(d["events"]) * 1e6

    def us_work(d: dict[str, Any]) -> float:
        """The workers' own share: stream and engines, without start-up and merge."""
        return sum(float(x) for x in d["shard_cpu_s"]) / float(d["events"]) * 1e6

    best_r = max(replays, key=rate)
    singles = backtests[1]
    best_b = max(singles, key=rate)
    best_s = max(streams, key=rate)
    ratios = [rate(b) / rate(r) for r, b in zip(replays, singles, strict=True)]
    ratio = max(ratios)
    month_rss = max(b["maxrss_mb"] for b in singles)
    db_us = min(float(s["db_cpu_s"]) / float(s["events"]) * 1e6 for s in streams)
    print(
        f"best: replay {rate(best_r):,.0f} events/s, backtest {rate(best_b):,.0f} events/s, "
        f"ratio {ratio:.2f} (target >= 0.5); stream alone {rate(best_s):,.0f} events/s; "
        f"the database backend's CPU per event streamed {db_us:.2f} us"
    )
    scaling: dict[int, list[float]] = {}
    for j in jobs_list:
        runs = backtests[j]
        scaling[j] = [rate(b) / rate(s1) for b, s1 in zip(runs, singles, strict=True)]
        print(
            f"--jobs {j}: best {max(rate(b) for b in runs):,.0f} events/s, "
            f"x{max(scaling[j]):.2f} the --jobs 1 rate of the same pass "
            f"(passes: {', '.join(f'{x:.2f}' for x in scaling[j])}); CPU per event "
            f"{min(us(b) for b in runs):.2f} us (passes: {', '.join(f'{us(b):.2f}' for b in runs)})"
            + (
                f", of which in the workers' stream and engines "
                f"{', '.join(f'{us_work(b):.2f}' for b in runs)} us"
                if j > 1
                else ""
            )
        )
    print(
        f"peak RSS: {args.week_days} days {week['maxrss_mb']:.0f} MB, "
        f"{args.days} days {month_rss:.0f} MB"
        + (
            f"; --jobs {most}, largest worker: {args.week_days} days "
            f"{week_n['worker_maxrss_mb']:.0f} MB, {args.days} days "
            f"{max(b['worker_maxrss_mb'] for b in backtests[most]):.0f} MB"
            if week_n is not None
            else ""
        )
    )
    print(
        f"alerts: current {best_b['current_alerts']:,}, candidate {best_b['candidate_alerts']:,}, "
        f"removed {best_b['removed']:,}, moved {best_b['shifted']:,}"
    )
    same = all(
        (b["current_alerts"], b["candidate_alerts"], b["removed"], b["shifted"])
        == (
            best_b["current_alerts"],
            best_b["candidate_alerts"],
            best_b["removed"],
            best_b["shifted"],
        )
        for runs in backtests.values()
        for b in runs
    )
    print(f"the same alert counts in every run and every --jobs: {same}")
    print(f"load average before {load_before}, after {load_after}")
    if not args.append:
        return
    jobs_args = " ".join(f"--jobs {j}" for j in jobs_list)
    cmd = (
        f".venv/bin/python bench/bench_backtest.py --residents {args.residents} "
        f"--days {args.days} --repeat {args.repeat} {jobs_args} --append"
    )
    verdict = "met" if ratio >= 0.5 else "**not met**"
    shard_lines = "\n".join(
        f"  - `--jobs {j}`: **{max(rate(b) for b in backtests[j]):,.0f} events/s** "
        f"(passes: {', '.join(f'{rate(b):,.0f}' for b in backtests[j])}), "
        f"x{max(scaling[j]):.2f} the `--jobs 1` rate of the same pass "
        f"(passes: {', '.join(f'{x:.2f}' for x in scaling[j])}); CPU per event "
        f"{', '.join(f'{us(b):.2f}' for b in backtests[j])} us"
        + (
            f" (in the workers' stream and engines: "
            f"{', '.join(f'{us_work(b):.2f}' for b in backtests[j])} us)"
            if j > 1
            else ""
        )
        for j in jobs_list
    )
    week_line = (
        f"; with `--jobs {most}` the largest worker {week_n['worker_maxrss_mb']:.0f} MB for "
        f"{args.week_days} days, "
        f"{max(b['worker_maxrss_mb'] for b in backtests[most]):.0f} MB for {args.days} days"
        if week_n is not None
        else ""
    )
    busy = max(float(x) for x in (load_before + " / " + load_after).split(" / "))
    shared = (
        f"\n  **Load above `nproc` ({busy:.1f}): the machine was shared**; the wall-clock rates"
        " and ratios need a quiet re-run, the CPU per event is the figure to scale from."
        if busy > (os.cpu_count() or 1) * 0.75
        else ""
    )
    section = f"""
## {date.today().isoformat()} — rules backtest ({jobs_args}) from TimescaleDB vs replay from JSONL

- Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()};
  load average before {load_before}, after {load_after}; best of {args.repeat} interleaved
  passes, each in a fresh process.{shared}
- Command: `{cmd}`
- Input: {n:,} events ({size_mb:.0f} MB JSONL), {args.residents} homes, {args.days} days from
  {START} (bench_replay.py's generator, hourly heartbeats), loaded into a private
  TimescaleDB (COPY) in {load_s:.0f} s.
- `trygg rules replay` of the JSONL file (one catalogue): **{rate(best_r):,.0f} events/s**
  (passes: {", ".join(f"{rate(r):,.0f}" for r in replays)}).
- Back-test from the database, server-side cursor ({args.fetch_size:,} rows a fetch), two
  catalogues (standard vs bed-exit-no-return 30 min), matching and report data:
  **{rate(best_b):,.0f} events/s** (passes: {", ".join(f"{rate(b):,.0f}" for b in singles)}),
  i.e. **{ratio:.2f}x** replay's rate in the same pass (target >= 0.5: {verdict}). Reading
  the events alone: {rate(best_s):,.0f} events/s; the database backend's CPU for it
  {db_us:.2f} us per event (its process time from /proc).
- Sharded by resident (`--jobs N`, rate by wall clock; CPU per event = process time of
  parent and workers / events):
{shard_lines}
- Peak RSS of the back-test process: {week["maxrss_mb"]:.0f} MB for {args.week_days} days,
  {month_rss:.0f} MB for {args.days} days{week_line}.
- Alerts: current {best_b["current_alerts"]:,}, candidate {best_b["candidate_alerts"]:,};
  {best_b["removed"]:,} removed, {best_b["shifted"]:,} raised 10 min later; the same counts
  in every run and every `--jobs`: {same}.
"""
    with (REPO / "bench" / "RESULTS.md").open("a") as f:
        f.write(section)
    print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
