"""Benchmark: the response-time report over a year of a city's alerts.

    .venv/bin/python bench/bench_report.py [--alerts 200000] [--append]

Starts a private TimescaleDB (trygg.devenv), migrates it and writes one year
of synthetic alerts (trygg.audit.synth: 200,000 alerts for 5,000 residents in
8 teams, ~1.4 million lifecycle records) straight into it with COPY; every
record passes the hash-chain trigger, as in production. Then, in the same
run, times (median of 3):

- the baseline: one ``SELECT count(*)`` over alerts and alert_records;
- the monthly KPI report (all groups, answer times, top residents, exceptions);
- the yearly report (the same for the whole year);
- the HTML rendering of the monthly report (plots included);
- ``trygg audit verify`` of the alert_records chain.

``--append`` adds a dated section to bench/RESULTS.md. Target: the monthly KPI
report in under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from bench.machine import cpu_model  # noqa: E402

from trygg.audit.report import ReportOptions, build_report  # noqa: E402
from trygg.audit.report_html import to_html  # noqa: E402
from trygg.audit.synth import synth_history  # noqa: E402
from trygg.audit.verify import verify  # noqa: E402
from trygg.devenv import PrivatePostgres  # noqa: E402
from trygg.store.audit import copy_alert_history  # noqa: E402
from trygg.store.migrate import migrate  # noqa: E402

OSLO = ZoneInfo("Europe/Oslo")
TEAMS = [
    "stovner-nord",
    "grorud-sentrum",
    "sagene-ost",
    "nordstrand-syd",
    "frogner-vest",
    "alna-sor",
    "bjerke-nord",
    "ullern-midt",
]


def timed(fn: Callable[[], Any], n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=200_000)
    ap.add_argument("--residents", type=int, default=5000)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    start, end = datetime(2025, 1, 1, tzinfo=OSLO), datetime(2026, 1, 1, tzinfo=OSLO)
    residents = [(f"r-{i:05d}", TEAMS[i % len(TEAMS)]) for i in range(args.residents)]
    with PrivatePostgres(timescaledb=True) as pg:
        migrate(pg.url)
        t = time.perf_counter()
        items = synth_history(residents, start, end, args.alerts, seed=6)
        alerts: list[Any] = []
        records: list[Any] = []
        for a, rs in items:
            alerts.append(a)
            records.extend(rs)
        t_gen = time.perf_counter() - t
        with psycopg.connect(pg.url) as conn:
            t = time.perf_counter()
            na, nr = copy_alert_history(conn, alerts, records)
            t_load = time.perf_counter() - t
        del alerts, records
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE alerts")
            conn.execute("VACUUM ANALYZE alert_records")

            def count() -> None:
                conn.execute(
                    "SELECT (SELECT count(*) FROM alerts), (SELECT count(*) FROM alert_records)"
                ).fetchone()

            month = ReportOptions(
                datetime(2025, 3, 1, tzinfo=OSLO), datetime(2025, 4, 1, tzinfo=OSLO)
            )
            year = ReportOptions(start, end)
            now = datetime(2026, 1, 2, tzinfo=UTC)
            t_count = timed(count)
            t_month = timed(lambda: build_report(conn, month, now=now))
            t_year = timed(lambda: build_report(conn, year, now=now))
            rep = build_report(conn, month, now=now)
            t_html = timed(lambda: to_html(rep) and rep.plots.clear())
            t_verify = timed(lambda: verify(conn, ("alert_records",)), n=1)
            m_alerts = rep.overall.alerts
    lines = [
        f"alerts {na:,}, lifecycle records {nr:,} (generate {t_gen:.1f} s,"
        f" COPY through the chain trigger {t_load:.1f} s = {nr / t_load:,.0f} records/s)",
        f"baseline SELECT count(*) over alerts + alert_records: {t_count * 1000:.0f} ms",
        f"monthly KPI report (March, {m_alerts:,} alerts; all groups, answer times,"
        f" top residents, exceptions): {t_month * 1000:.0f} ms"
        f" = {t_month / t_count:.1f} x baseline (target < 2 s)",
        f"yearly KPI report: {t_year * 1000:.0f} ms = {t_year / t_count:.1f} x baseline",
        f"HTML rendering of the monthly report (5 plots): {t_html * 1000:.0f} ms",
        f"audit verify of the alert_records chain: {t_verify:.1f} s = {nr / t_verify:,.0f} rows/s",
    ]
    print("\n".join(lines))
    if args.append:
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(
                f"\n## {date.today().isoformat()} report (bench_report.py)\n\n"
                f"- machine: nproc {os.cpu_count()}, {cpu_model()}\n"
                f"- command: `.venv/bin/python bench/bench_report.py --alerts {args.alerts}"
                f" --append`\n" + "".join(f"- {x}\n" for x in lines)
            )


if __name__ == "__main__":
    main()
