"""Benchmark: `trygg rules replay` of a simulated week for 1,000 residents.

    .venv/bin/python bench/bench_replay.py [--residents 1000] [--days 7] [--append]
    .venv/bin/python bench/bench_replay.py --jobs 1 2 [--repeat 2]

Generates (with its own small, seeded generator, so the figure does not move
when the simulator changes) a week of events for N homes in time order,
writes them as the replay contract's JSONL, then in the same run times:

- a bare loop that only ``json.loads`` every line (the baseline), and
- the replay proper, as ``trygg rules replay`` runs it: parse + validate +
  enrich + drop repeated (device, id) + evaluate the standard catalogue +
  the quality gates that need no staff (offline inhibition, device-offline
  per resident) + the clock run to the last event + the list of the timers
  still pending, in-process, on one core; and
- ``replay --raw`` (the engine's signals, no dedup and no gates), so that the
  cost of the gates shows against the same run;

and measures the engine's state per resident (deep size of the per-resident
state after the run, the snapshot size, and tracemalloc over one simulated day).
``--append`` adds a dated section to bench/RESULTS.md.

``--jobs 1 2`` times instead ``trygg rules replay --jobs N`` for each N, in
interleaved passes on the same file (1: in-process, as the command runs it;
N > 1: ``trygg.tuning.replay_shards``, N worker processes each reading the
whole file), checks that every N prints the same stdout and stderr, and gives
each N's rate and its ratio to N = 1, and the workers' CPU per event.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
import tracemalloc
from array import array
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.machine import cpu_model  # noqa: E402

from trygg.registry import parse_registry  # noqa: E402
from trygg.rules.catalogue import load_catalogue  # noqa: E402
from trygg.rules.engine import Engine  # noqa: E402
from trygg.rules.kinds import Res  # noqa: E402
from trygg.tuning.replay import replay  # noqa: E402
from trygg.tuning.replay_shards import replay_sharded  # noqa: E402

OSLO = ZoneInfo("Europe/Oslo")
START = date(2026, 3, 23)  # a week that contains the spring-forward night
HEARTBEAT_MIN = 60  # devices in the bench report hourly (hourly-supervised radio links)

DEVICES = [
    ("bed", "bed", "bedroom"),
    ("pir-bath", "motion", "bathroom"),
    ("pir-living", "motion", "livingroom"),
    ("pir-kitchen", "motion", "kitchen"),
    ("door", "door", "entrance"),
    ("button", "button", None),
    ("therm", "thermometer", "livingroom"),
    ("pills", "dispenser", "kitchen"),
]


def make_registry(n: int) -> dict[str, Any]:
    residents = [{"id": f"r-{i:04d}", "team": f"team-{i % 20}"} for i in range(n)]
    devices = []
    for i in range(n):
        for name, kind, room in DEVICES:
            d: dict[str, Any] = {
                "id": f"{name}-{i:04d}",
                "resident": f"r-{i:04d}",
                "kind": kind,
                "heartbeat": f"{HEARTBEAT_MIN}m",
            }
            if room:
                d["room"] = room
            devices.append(d)
    return {"residents": residents, "devices": devices}


def day_events(rng: random.Random, i: int, day: date) -> list[tuple[float, str, str, Any]]:
    """One resident's day: (epoch, device, type, value)."""
    out: list[tuple[float, str, str, Any]] = []
    sfx = f"-{i:04d}"

    def at(h: float) -> float:
        hh = int(h)
        mm = int((h - hh) * 60)
        d = day + timedelta(days=hh // 24)
        return datetime(
            d.year, d.month, d.day, hh % 24, mm, rng.randrange(60), tzinfo=OSLO
        ).timestamp()

    wake = rng.uniform(6.5, 8.5)
    bed = rng.uniform(22.0, 23.5)
    out.append((at(wake), "bed" + sfx, "bed.vacant", None))
    h = wake
    while h < bed:  # daytime movement every few minutes in some room
        h += rng.expovariate(1 / 0.07)
        room = rng.choice(("pir-bath", "pir-living", "pir-living", "pir-kitchen"))
        out.append((at(min(h, bed)), room + sfx, "motion.detected", None))
    for _ in range(rng.randrange(0, 3)):  # outings
        t = rng.uniform(wake + 1, bed - 2)
        out.append((at(t), "door" + sfx, "door.opened", None))
        out.append((at(t + 0.01), "door" + sfx, "door.closed", None))
    out.append((at(bed), "bed" + sfx, "bed.occupied", None))
    if rng.random() < 0.5:  # a night visit to the bathroom
        t = rng.uniform(bed + 1, 24 + 5)
        out.append((at(t), "bed" + sfx, "bed.vacant", None))
        out.append((at(t + 0.02), "pir-bath" + sfx, "motion.detected", None))
        back = 0.15 if rng.random() < 0.97 else 0.6
        out.append((at(t + back), "bed" + sfx, "bed.occupied", None))
    for q in range(96):  # temperature every 15 min
        out.append((at(q / 4), "therm" + sfx, "temperature", round(rng.gauss(21.5, 1.2), 1)))
    for dose in (8, 14, 20):
        ok = rng.random() < 0.98
        out.append((at(dose + 0.1), "pills" + sfx, "dose.taken" if ok else "dose.missed", None))
    for name, _, _ in DEVICES:  # heartbeats
        if name in ("therm",):
            continue
        off = rng.uniform(0, HEARTBEAT_MIN / 60)
        for k in range(24):
            out.append((at(off + k), name + sfx, "heartbeat", None))
    if rng.random() < 0.01:
        out.append((at(rng.uniform(8, 20)), "button" + sfx, "button.pressed", None))
    out.append((at(12), "button" + sfx, "battery", rng.choice((80, 60, 40, 14))))
    return out


def generate(path: Path, n: int, days: int, seed: int = 4) -> int:
    rng = random.Random(seed)
    count = 0
    with path.open("w") as f:
        carry: list[tuple[float, str, str, Any]] = []
        for dd in range(days):
            day = START + timedelta(days=dd)
            nxt = START + timedelta(days=dd + 1)
            cut = datetime(nxt.year, nxt.month, nxt.day, tzinfo=OSLO).timestamp()
            evs = carry
            for i in range(n):
                evs.extend(day_events(rng, i, day))
            evs.sort(key=lambda e: e[0])
            if dd < days - 1:  # what runs past midnight goes with the next day
                k = next((j for j, e in enumerate(evs) if e[0] >= cut), len(evs))
                evs, carry = evs[:k], evs[k:]
            for ts, dev, typ, val in evs:
                count += 1
                t = datetime.fromtimestamp(ts, OSLO).isoformat()
                v = "null" if val is None else repr(val)
                f.write(
                    f'{{"id":"e{count:09d}","type":"{typ}","time":"{t}",'
                    f'"value":{v},"device":"{dev}"}}\n'
                )
    return count


def deep_state_size(res: Res) -> int:
    """Bytes of the per-resident state: the Res object and what only it owns
    (not the shared compiled rules, clock or registry tuples)."""
    seen: set[int] = set()

    def size(o: Any) -> int:
        if id(o) in seen or o is None or (isinstance(o, bool | int) and -5 <= o <= 256):
            return 0
        seen.add(id(o))
        s = sys.getsizeof(o)
        if isinstance(o, dict):
            s += sum(size(k) + size(v) for k, v in o.items())
        elif isinstance(o, list | tuple):
            s += sum(size(x) for x in o)
        elif isinstance(o, array | str | float | int):
            pass
        elif hasattr(o, "__slots__"):
            s += sum(size(getattr(o, a, None)) for a in o.__slots__)
        return s

    total = sys.getsizeof(res) + size(res.states) + size(res.wm) + size(res.next)
    return total + size(res.id) + 104  # + its entry in the engine's resident dict


def bench_jobs(residents: int, days: int, jobs: list[int], repeat: int) -> None:
    """``replay --jobs N`` for each N in interleaved passes (module docstring)."""
    load0 = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    cat = load_catalogue([REPO / "rules"])
    reg = parse_registry(make_registry(residents))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        n = generate(path, residents, days)
        print(f"generated {n:,} events ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
        runs: dict[int, list[float]] = {j: [] for j in jobs}
        cpu: dict[int, list[float]] = {j: [] for j in jobs}
        outputs: dict[int, tuple[str, str]] = {}
        events = 0
        for _ in range(repeat):
            for j in jobs:
                out, err = io.StringIO(), io.StringIO()
                t0, c0 = time.perf_counter(), time.process_time()
                if j == 1:
                    with path.open("rb") as f:
                        _, stats = replay(f, reg, cat, out=out, err=err)
                    used = time.process_time() - c0
                else:
                    run = replay_sharded(path, reg, cat, jobs=j, out=out, err=err)
                    stats = run.stats
                    used = run.cpu_s + time.process_time() - c0
                runs[j].append(time.perf_counter() - t0)
                cpu[j].append(used)
                events = stats.events
                outputs.setdefault(j, (out.getvalue(), err.getvalue()))
                print(
                    f"--jobs {j}: {stats.events / runs[j][-1]:,.0f} events/s, "
                    f"CPU {1e6 * used / stats.events:.2f} us/event",
                    flush=True,
                )
    same = all(o == outputs[jobs[0]] for o in outputs.values())
    base = min(runs[jobs[0]])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: nproc {os.cpu_count()}, {cpu_model()}, load {load0} -> {load}")
    for j in jobs:
        best = min(runs[j])
        passes = ", ".join(f"{events / r:,.0f}" for r in runs[j])
        print(
            f"best --jobs {j}: {events / best:,.0f} events/s (passes: {passes}), "
            f"x{base / best:.2f} the --jobs {jobs[0]} rate, CPU per event "
            f"{1e6 * min(cpu[j]) / events:.2f} us (all processes)"
        )
    print(f"stdout and stderr the same for every --jobs: {same}")
    if not same:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=1000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2, help="timed passes (the best is kept)")
    ap.add_argument("--append", action="store_true", help="append a section to bench/RESULTS.md")
    ap.add_argument("--jobs", type=int, nargs="+", help="time `replay --jobs N` for each N instead")
    args = ap.parse_args()
    if args.jobs:
        bench_jobs(args.residents, args.days, args.jobs, args.repeat)
        return
    load0 = " / ".join(f"{x:.1f}" for x in os.getloadavg())

    cat = load_catalogue([REPO / "rules"])
    reg = parse_registry(make_registry(args.residents))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        t0 = time.perf_counter()
        n = generate(path, args.residents, args.days)
        gen_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        print(f"generated {n:,} events ({size_mb:.0f} MB) in {gen_s:.1f} s", flush=True)

        # the baseline (a bare loop that only json.loads each line) and the replay,
        # interleaved --repeat times: the machine is shared, so keep the best of each
        bare_runs: list[float] = []
        replay_runs: list[float] = []
        raw_runs: list[float] = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with path.open("rb") as f:
                for line in f:
                    json.loads(line)
            bare_runs.append(time.perf_counter() - t0)
            print(f"bare json.loads loop: {n / bare_runs[-1]:,.0f} lines/s", flush=True)

            t0 = time.perf_counter()
            with path.open("rb") as f:
                _, raw_stats = replay(f, reg, cat, out=io.StringIO(), err=io.StringIO(), raw=True)
            raw_runs.append(time.perf_counter() - t0)
            print(f"replay --raw: {raw_stats.events / raw_runs[-1]:,.0f} events/s", flush=True)

            t0 = time.perf_counter()
            engine = Engine(cat, reg)
            with path.open("rb") as f:
                fired, stats = replay(
                    f, reg, cat, out=io.StringIO(), err=io.StringIO(), engine=engine
                )
            replay_runs.append(time.perf_counter() - t0)
            print(
                f"replay: {stats.events / replay_runs[-1]:,.0f} events/s, "
                f"{stats.alerts} alerts ({stats.inhibited} inhibited, {stats.folded} "
                f"device-offline folded), {stats.pending} timers pending, {stats.bad} bad, "
                f"{stats.repeated} repeated, {stats.late} late",
                flush=True,
            )
        bare_s, replay_s = min(bare_runs), min(replay_runs)
        by_rule: dict[str, int] = {}
        for s in fired:
            by_rule[s.rule] = by_rule.get(s.rule, 0) + 1
        sizes = [deep_state_size(r) for r in engine._res.values()]
        snaps = [len(engine.snapshot(r)) for r in engine._res]
        deep_avg = sum(sizes) / len(sizes)
        snap_avg = sum(snaps) / len(snaps)
        del fired, engine

        # tracemalloc: what a fresh engine retains after one simulated day for a
        # quarter of the homes (state, timers, caches; not the signals, not the
        # registry indexes built by Engine())
        sub = max(1, args.residents // 4)
        reg2 = parse_registry(make_registry(sub))
        day_path = Path(tmp) / "day.jsonl"
        generate(day_path, sub, 1, seed=9)
        lines = day_path.read_bytes().splitlines()
        eng2 = Engine(cat, reg2)  # registry indexes are built here, before measuring
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        end = datetime(2026, 3, 23, 23, 59, tzinfo=OSLO)
        res2 = replay(lines, reg2, cat, engine=eng2, until=end)
        del res2
        gc.collect()
        traced = (tracemalloc.get_traced_memory()[0] - base) / sub
        tracemalloc.stop()
        del eng2

    eps = stats.events / replay_s
    # Ratios of the best times (each leg's least disturbed pass), and per pass for
    # the record. (The best per-pass ratio flattered a pass whose bare loop was
    # slowed by other jobs: 1.93 in a run whose passes were 1.93, 4.77 and 5.45.)
    ratio = replay_s / bare_s
    raw_eps = raw_stats.events / min(raw_runs)
    raw_ratio = min(raw_runs) / bare_s
    gates_cost = replay_s / min(raw_runs)  # the gates' cost: gated over raw

    def per_pass(a: list[float], b: list[float]) -> str:
        return ", ".join(f"{x / y:.2f}" for x, y in zip(a, b, strict=True))

    print(
        f"best: replay {eps:,.0f} events/s, bare parse {n / bare_s:,.0f} lines/s, ratio {ratio:.2f}"
        f"; --raw {raw_eps:,.0f} events/s, ratio {raw_ratio:.2f}; gated/raw {gates_cost:.2f}"
    )
    print(
        f"engine state per resident: deep size {deep_avg:,.0f} B, snapshot {snap_avg:,.0f} B, "
        f"tracemalloc (1 day, {sub} homes) {traced:,.0f} B"
    )
    print("alerts by rule:", json.dumps(dict(sorted(by_rule.items()))))
    if not args.append:
        return
    cmd = (
        f".venv/bin/python bench/bench_replay.py --residents {args.residents} "
        f"--days {args.days} --repeat {args.repeat} --append"
    )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    runs = ", ".join(f"{stats.events / r:,.0f}" for r in replay_runs)
    raws = ", ".join(f"{raw_stats.events / r:,.0f}" for r in raw_runs)
    bares = ", ".join(f"{n / b:,.0f}" for b in bare_runs)
    section = f"""
## {date.today().isoformat()} — rules replay (standard catalogue)

- Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, Python {platform.python_version()};
  shared with other jobs while it ran (load average at the start {load0}, at the end
  {load}), so the best of {args.repeat} interleaved passes; compare the ratio, not the
  absolute figures.
- Command: `{cmd}`
- Input: {n:,} events ({size_mb:.0f} MB JSONL), {args.residents} homes x {len(DEVICES)}
  devices, {args.days} days from {START} (includes the spring-forward night), hourly
  heartbeats; generated by the bench itself (seeded).
- Baseline (same run): bare `json.loads` loop **{n / bare_s:,.0f} lines/s** (passes: {bares}).
- `trygg rules replay` in-process (parse + validate + enrich + drop repeated (device, id)
  + evaluate the {len(cat.specs)} standard rules + the gates that need no staff (offline
  inhibition, one device-offline alert per resident) + the clock run to the last event +
  the list of pending timers), one core: **{eps:,.0f} events/s** (passes: {runs}),
  i.e. **{ratio:.2f}x** the time of the bare parse loop (best times; per pass
  {per_pass(replay_runs, bare_runs)}); {stats.alerts:,} alerts
  paged ({stats.inhibited:,} inhibited by an offline device, {stats.folded:,} device-offline
  folded into the resident's open one), {stats.pending:,} timers pending at the end.
- `trygg rules replay --raw` (no dedup, no gates; the engine's signals) in the same passes:
  {raw_eps:,.0f} events/s (passes: {raws}), {raw_ratio:.2f}x the bare loop (per pass
  {per_pass(raw_runs, bare_runs)}); the gated replay takes {gates_cost:.2f}x the time of
  the raw one (best times; per pass {per_pass(replay_runs, raw_runs)}).
- Engine state per resident: **{deep_avg:,.0f} B** deep size of the per-resident objects
  after the run (target <= 2048 B); {snap_avg:,.0f} B as a snapshot; tracemalloc of what
  a fresh engine retains (beyond its registry indexes) after one day for {sub} homes:
  {traced:,.0f} B per resident.
- Alerts by rule: `{json.dumps(dict(sorted(by_rule.items())))}`
"""
    with (REPO / "bench" / "RESULTS.md").open("a") as results:
        results.write(section)
    print("appended to bench/RESULTS.md")


if __name__ == "__main__":
    main()
