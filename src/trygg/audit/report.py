"""The response-time report: build it from the database, write CSV, JSON or HTML.

Every figure comes from :mod:`trygg.store.kpi`; the renderers only format.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from trygg.store import kpi as kpi_sql
from trygg.store.kpi import KpiParams, KpiRow

Progress = Callable[[str], None]


@dataclass
class ReportOptions:
    start: datetime
    end: datetime
    team: str | None = None
    site: str | None = None
    timezone: str = "Europe/Oslo"
    target60: float = 0.975
    target180: float = 0.99
    exception_answer_s: int = 180
    exception_arrival_min: int = 60
    top: int = 10
    html_exception_limit: int = 300

    def params(self) -> KpiParams:
        return KpiParams(
            start=self.start,
            end=self.end,
            team=self.team,
            timezone=self.timezone,
            answer_targets=((60, self.target60), (180, self.target180)),
        )


@dataclass
class Report:
    options: ReportOptions
    generated_at: datetime
    kpis: list[KpiRow]
    answer_times: list[float]
    top_residents: list[dict[str, Any]]
    exceptions: list[dict[str, Any]]
    plots: dict[str, str] = field(default_factory=dict)

    def group(self, dimension: str) -> list[KpiRow]:
        return [k for k in self.kpis if k.dimension == dimension]

    @property
    def overall(self) -> KpiRow:
        return self.group("all")[0]


STAGES = ("KPIs", "answer times", "top residents", "exceptions")


def build_report(
    conn: psycopg.Connection[Any],
    opts: ReportOptions,
    *,
    now: datetime,
    progress: Progress | None = None,
) -> Report:
    tick = progress or (lambda _s: None)
    p = opts.params()
    rows = kpi_sql.compute_kpis(conn, p)
    tick("KPIs")
    times = kpi_sql.answer_times(conn, p)
    tick("answer times")
    top = kpi_sql.top_residents(conn, p, opts.top)
    tick("top residents")
    exc = kpi_sql.exceptions(
        conn,
        p,
        answer_limit_s=opts.exception_answer_s,
        arrival_limit_min=opts.exception_arrival_min,
        now=now,
    )
    tick("exceptions")
    return Report(opts, now, rows, times, top, exc)


PLOT_STAGES = (
    "plot: answer times",
    "plot: weekly",
    "plot: night",
    "plot: residents",
    "plot: false alarms",
)


def add_plots(report: Report, progress: Progress | None = None) -> None:
    from trygg.audit import plots

    tick = progress or (lambda _s: None)
    o = report.options
    report.plots["answers"] = plots.answer_distribution(report.answer_times)
    tick(PLOT_STAGES[0])
    weeks = report.group("week")
    report.plots["weekly"] = plots.weekly_compliance(
        [w.key for w in weeks],
        [w.share_within[60] for w in weeks],
        [w.share_within[180] for w in weeks],
        o.target60,
        o.target180,
    )
    tick(PLOT_STAGES[1])
    report.plots["night"] = plots.night_hours({int(h.key): h.alerts for h in report.group("hour")})
    tick(PLOT_STAGES[2])
    report.plots["residents"] = plots.top_residents(report.top_residents)
    tick(PLOT_STAGES[3])
    rules = sorted(report.group("rule"), key=lambda r: -(r.false_alarm_share or 0))
    report.plots["false"] = plots.false_alarm_share(
        [r.key for r in rules], [r.false_alarm_share for r in rules]
    )
    tick(PLOT_STAGES[4])


# ------------------------------------------------------------------ JSON / CSV


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def to_dict(report: Report) -> dict[str, Any]:
    o = report.options
    out: dict[str, Any] = _jsonable(
        {
            "report": "trygg response times",
            "period": {"from": o.start, "to": o.end, "timezone": o.timezone},
            "team": o.team,
            "site": o.site,
            "generated_at": report.generated_at,
            "targets": {"answered_within_60s": o.target60, "answered_within_180s": o.target180},
            "exception_limits": {
                "answer_s": o.exception_answer_s,
                "arrival_min": o.exception_arrival_min,
            },
            "kpis": [k.to_dict() for k in report.kpis],
            "top_residents": report.top_residents,
            "exceptions": report.exceptions,
        }
    )
    return out


def to_json(report: Report) -> str:
    return json.dumps(to_dict(report), indent=2, ensure_ascii=False, default=str) + "\n"


CSV_FIELDS = (
    "dimension",
    "key",
    "alerts",
    "suppressed",
    "cancelled",
    "answerable",
    "answered",
    "unanswered",
    "answer_p50_s",
    "answer_p90_s",
    "answer_p99_s",
    "answered_within_60s",
    "answered_within_180s",
    "share_within_60s",
    "share_within_180s",
    "meets_target_60s",
    "meets_target_180s",
    "arrived",
    "arrival_p50_s",
    "arrival_p90_s",
    "arrival_p99_s",
    "arrival_share_within_30min",
    "arrival_share_within_45min",
    "arrival_share_within_60min",
    "resolved",
    "resolve_p50_s",
    "resolve_p90_s",
    "resolve_p99_s",
    "closed",
    "false_alarms",
    "false_alarm_share",
    "not_at_home",
)


def csv_row(k: KpiRow) -> dict[str, Any]:
    return {
        "dimension": k.dimension,
        "key": k.key,
        "alerts": k.alerts,
        "suppressed": k.suppressed,
        "cancelled": k.cancelled,
        "answerable": k.answerable,
        "answered": k.answered,
        "unanswered": k.unanswered,
        "answer_p50_s": k.answer_p50,
        "answer_p90_s": k.answer_p90,
        "answer_p99_s": k.answer_p99,
        "answered_within_60s": k.answered_within[60],
        "answered_within_180s": k.answered_within[180],
        "share_within_60s": k.share_within[60],
        "share_within_180s": k.share_within[180],
        "meets_target_60s": k.meets_target[60],
        "meets_target_180s": k.meets_target[180],
        "arrived": k.arrived,
        "arrival_p50_s": k.arrival_p50,
        "arrival_p90_s": k.arrival_p90,
        "arrival_p99_s": k.arrival_p99,
        "arrival_share_within_30min": k.arrival_share_within[30],
        "arrival_share_within_45min": k.arrival_share_within[45],
        "arrival_share_within_60min": k.arrival_share_within[60],
        "resolved": k.resolved,
        "resolve_p50_s": k.resolve_p50,
        "resolve_p90_s": k.resolve_p90,
        "resolve_p99_s": k.resolve_p99,
        "closed": k.closed,
        "false_alarms": k.false_alarms,
        "false_alarm_share": k.false_alarm_share,
        "not_at_home": k.not_at_home,
    }


def to_csv(report: Report) -> str:
    """One row per group (dimension, key); empty cells where there is no data."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for k in report.kpis:
        w.writerow({f: ("" if v is None else v) for f, v in csv_row(k).items()})
    return buf.getvalue()


# ------------------------------------------------------------------ HTML


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 120:
        return f"{v:.0f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def _local(tz: str) -> Callable[[Any], str]:
    zone = ZoneInfo(tz)

    def f(t: Any) -> str:
        if not isinstance(t, datetime):
            return "-" if t is None else str(t)
        return t.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    return f


def to_html(report: Report) -> str:
    import jinja2

    if not report.plots:
        add_plots(report)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trygg.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["secs"] = _fmt_s
    env.filters["pct"] = _fmt_pct
    env.filters["local"] = _local(report.options.timezone)
    o = report.options
    shown = report.exceptions[: o.html_exception_limit]
    return env.get_template("report.html.j2").render(
        r=report,
        o=o,
        all=report.overall,
        plots=report.plots,
        groups=[(d, report.group(d)) for d in ("team", "severity", "rule", "month", "week")],
        exceptions=shown,
        exceptions_hidden=len(report.exceptions) - len(shown),
        markup=jinja2.Markup if hasattr(jinja2, "Markup") else __import__("markupsafe").Markup,
    )
