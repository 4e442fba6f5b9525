"""The response-time report: build it from the database, write CSV, JSON or HTML.

Every figure comes from :mod:`trygg.store.kpi`; the renderers only format.
The HTML page speaks ``options.lang`` (Bokmål by default, English on
request) with the words of the message catalogue (:mod:`trygg.locale`),
prints on A4 without cutting a table, floors every share within a limit
(never rounded up into compliance) and gives every time with its UTC
offset; CSV and JSON are the same in every language (docs/auditing.md).
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

from trygg.registry import DEFAULT_DISTRICT
from trygg.store import kpi as kpi_sql
from trygg.store.kpi import KpiParams, KpiRow
from trygg.store.registry import district_map

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


PLOT_STAGES = (
    "plot: answer times",
    "plot: weekly",
    "plot: teams",
    "plot: night",
    "plot: residents",
    "plot: false alarms",
)


def add_plots(report: Report, progress: Progress | None = None) -> None:
    """The plots of the HTML report, in the report's language."""
    from trygg.audit import plots
    from trygg.locale import Words

    tick = progress or (lambda _s: None)
    o = report.options
    w = Words(o.lang)
    report.plots["answers"] = plots.answer_distribution(report.answer_times, w)
    tick(PLOT_STAGES[0])
    report.plots["weekly"] = plots.weekly_compliance(
        report.group("week"), o.target60, o.target180, w
    )
    tick(PLOT_STAGES[1])
    report.plots["teams"] = plots.team_compliance(report.group("team"), o.target60, o.target180, w)
    tick(PLOT_STAGES[2])
    report.plots["night"] = plots.night_hours(report.group("hour"), o.target60, w)
    tick(PLOT_STAGES[3])
    report.plots["residents"] = plots.top_residents(report.top_residents, w)
    tick(PLOT_STAGES[4])
    rules = sorted(report.group("rule"), key=lambda r: -(r.false_alarm_share or 0))
    report.plots["false"] = plots.false_alarm_share(
        [rule_name(r.key, o.lang) for r in rules], [r.false_alarm_share for r in rules], w
    )
    tick(PLOT_STAGES[5])


def rule_name(rule: str, lang: str) -> str:
    """A rule in words (the console's words for it, trygg.api.words), else its id."""
    from trygg.api.words import rule_words

    return rule_words(rule).get(lang, rule)


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


# ------------------------------------------------------------------ JSON / CSV


def _jsonable(v: Any, zone: ZoneInfo | None = None) -> Any:
    """JSON values; times in ``zone`` (the report's), with their offset."""
    if isinstance(v, datetime):
        return (v.astimezone(zone) if zone is not None and v.tzinfo else v).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _jsonable(x, zone) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x, zone) for x in v]
    return v


def to_dict(report: Report) -> dict[str, Any]:
    o = report.options
    out: dict[str, Any] = _jsonable(
        {
            "report": "trygg response times",
            "period": {"from": o.start, "to": o.end, "timezone": o.timezone},
            "team": o.team,
            "district": report.district_of(o.team) if o.team else None,
            "per": o.per,
            "site": o.site,
            "team_districts": {k.key: report.district_of(k.key) for k in report.group("team")},
            "district_names": report.district_names,
            "generated_at": report.generated_at,
            "targets": {"answered_within_60s": o.target60, "answered_within_180s": o.target180},
            "exception_limits": {
                "answer_s": o.exception_answer_s,
                "arrival_min": o.exception_arrival_min,
            },
            "kpis": [{**k.to_dict(), "district": row_district(report, k)} for k in report.kpis],
            "top_residents": report.top_residents,
            "exceptions": report.exceptions,
        },
        ZoneInfo(o.timezone),
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
    "days",
    "partial",
    "district",
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
        "days": k.days,
        "partial": k.partial if k.days is not None else None,
    }


def row_district(report: Report, k: KpiRow) -> str | None:
    """The district a row is about: a team's, a district's own, a district and
    rule's; None for the other groups."""
    if k.dimension == "team":
        return report.district_of(k.key)
    if k.dimension == "district":
        return k.key
    if k.dimension == "district_rule":
        return str(k.extra.get("district"))
    return None


def to_csv(report: Report) -> str:
    """One row per group (dimension, key); empty cells where there is no data."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    w.writeheader()
    for k in report.kpis:
        row = {**csv_row(k), "district": row_district(report, k)}
        w.writerow({f: ("" if v is None else v) for f, v in row.items()})
    return buf.getvalue()


# ------------------------------------------------------------------ HTML


def jinja_env(w: Any, timezone: str) -> Any:
    """Jinja2 with the catalogue's words (``_``, ``ngettext``) and the formats of
    ``w`` (a ``trygg.locale.Words``) as filters; shared with the A3 page."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trygg.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(w.tr, newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(
        secs=w.secs,
        pct=w.pct,
        within=lambda v: w.pct(v, floor=True),
        num=w.num,
        target=w.target,
        days=lambda d: w.n("plot.days", round(d or 0)),
        when=lambda t: w.when(t, timezone),
        clock=lambda t, ref=None: w.clock(t, timezone, ref),
        rule=lambda r: rule_name(str(r), w.lang),
        severity=lambda s: w(f"severity.{s}"),
        step=lambda s: w(f"step.{s}") if f"step.{s}" in STEPS else str(s),
        breach=lambda b: w(f"breach.{b}"),
        outcome=lambda o: outcome_words(str(o), w),
    )
    return env


STEPS = {
    f"step.{s}"
    for s in (
        "raised",
        "notified",
        "escalated",
        "acknowledged",
        "assigned",
        "accepted",
        "arrived",
        "resolved",
        "cancelled",
        "note",
    )
}
OUTCOMES = (
    "helped",
    "no_help_needed",
    "not_at_home",
    "false_alarm",
    "technical",
    "test",
    "other",
    "auto_resolved",
)
CANCEL_REASONS = ("device_reset", "auto_resolved", "false_alarm", "duplicate", "test")


def outcome_words(group: str, w: Any) -> str:
    """An outcome group of ``trygg.store.kpi.breakdown`` in words."""
    if group in OUTCOMES:
        return str(w(f"outcome.{group}"))
    if group in ("open", "suppressed", "unknown"):
        return str(w(f"outcome_group.{group}"))
    if group.startswith("cancelled:"):
        reason = group.split(":", 1)[1]
        why = w(f"cancel.{reason}") if reason in CANCEL_REASONS else reason
        return str(w("outcome_group.cancelled", reason=why))
    return group


def to_html(report: Report) -> str:
    """The report as one self-contained, printable HTML page, in ``options.lang``."""
    import markupsafe

    from trygg.locale import Words

    o = report.options
    w = Words(o.lang)
    if not report.plots:
        add_plots(report)
    env = jinja_env(w, o.timezone)
    shown = report.exceptions[: o.html_exception_limit]
    hours = {int(k.key): k for k in report.group("hour")}
    night = [(f"{h:02d}\u2013{(h + 1) % 24:02d}", hours[h]) for h in NIGHT_HOURS if h in hours]
    night.append(
        (
            w("hours.night"),
            summed("night", "night", [hours[h] for h in NIGHT_HOURS if h in hours], o),
        )
    )
    night.append(
        (
            w("hours.day"),
            summed("day", "day", [k for h, k in hours.items() if h not in NIGHT_HOURS], o),
        )
    )
    html: str = env.get_template("report.html.j2").render(
        r=report,
        o=o,
        w=w,
        all=report.overall,
        plots={k: markupsafe.Markup(v) for k, v in report.plots.items()},
        groups=[
            (d, report.group(d))
            for d in (
                *(("district",) if o.per == "district" else ()),
                "team",
                "severity",
                "rule",
                "month",
                "week",
            )
        ],
        partial_weeks=any(k.partial for k in report.group("week")),
        night=night,
        exceptions=shown,
        exceptions_hidden=len(report.exceptions) - len(shown),
    )
    return html
