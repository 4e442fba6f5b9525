"""The response-time report: its options and its figures, built from the database.

Every figure comes from :mod:`trygg.store.kpi`; the renderers only format
(CSV and JSON: trygg.audit.report_csv_json; HTML with plots:
trygg.audit.report_html).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from trygg.registry import DEFAULT_DISTRICT
from trygg.store import kpi_queries as kpi_sql
from trygg.store.kpi import KpiParams, KpiRow
from trygg.store.registry import district_map

if TYPE_CHECKING:
    from trygg.audit.a3 import A3Options

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
    lang: str = "nb"
    per: str | None = None
    """``district``: the figures per district side by side (``trygg report --per
    district``), as rows of dimension ``district`` (and ``district_rule``)."""

    def params(self) -> KpiParams:
        return kpi_params(self)


def kpi_params(o: ReportOptions | A3Options, rule: str | None = None) -> KpiParams:
    """The figures' parameters for the options' period, team and zone, with their
    answer targets (within 60 s and 180 s); the A3 page's also name its rule."""
    return KpiParams(
        start=o.start,
        end=o.end,
        team=o.team,
        timezone=o.timezone,
        rule=rule,
        answer_targets=((60, o.target60), (180, o.target180)),
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
    # team -> district and district -> name, as stored (every report names the
    # district of its teams; a team not listed is in the default district)
    team_districts: dict[str, str] = field(default_factory=dict)
    district_names: dict[str, str] = field(default_factory=dict)

    def district_of(self, team: str) -> str:
        return self.team_districts.get(team, DEFAULT_DISTRICT)

    def district_name(self, district: str) -> str:
        return self.district_names.get(district, district)

    @property
    def several_districts(self) -> bool:
        """The report's teams are in more than one district."""
        return len({self.district_of(k.key) for k in self.group("team")}) > 1

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
    if opts.per == "district":
        rows = [*rows, *kpi_sql.district_kpis(conn, p)]
    teams, names = district_map(conn)
    return Report(opts, now, rows, times, top, exc, team_districts=teams, district_names=names)


NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5, 6)


def summed(dimension: str, key: str, rows: list[KpiRow], opts: ReportOptions) -> KpiRow:
    """One row for several groups (the night's hours, the day's): counts and shares
    added up exactly; percentiles cannot be, and are left out."""

    def total(f: str) -> int:
        return sum(int(getattr(k, f)) for k in rows)

    targets = opts.params().answer_targets
    answerable, closed, arrived = total("answerable"), total("closed"), total("arrived")
    within = {s: sum(k.answered_within[s] for k in rows) for s, _ in targets}
    share = {s: (within[s] / answerable if answerable else None) for s, _ in targets}
    arr = {m: sum(k.arrival_within[m] for k in rows) for m in (30, 45, 60)}
    return KpiRow(
        dimension=dimension,
        key=key,
        alerts=total("alerts"),
        suppressed=total("suppressed"),
        cancelled=total("cancelled"),
        answerable=answerable,
        answered=total("answered"),
        unanswered=total("unanswered"),
        answer_p50=None,
        answer_p90=None,
        answer_p99=None,
        answered_within=within,
        share_within=share,
        meets_target={s: (None if share[s] is None else share[s] >= t) for s, t in targets},  # type: ignore[operator]
        arrived=arrived,
        arrival_p50=None,
        arrival_p90=None,
        arrival_p99=None,
        arrival_within=arr,
        arrival_share_within={m: (arr[m] / arrived if arrived else None) for m in arr},
        resolved=total("resolved"),
        resolve_p50=None,
        resolve_p90=None,
        resolve_p99=None,
        closed=closed,
        false_alarms=total("false_alarms"),
        false_alarm_share=total("false_alarms") / closed if closed else None,
        not_at_home=total("not_at_home"),
    )
