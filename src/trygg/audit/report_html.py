"""The response-time report as one self-contained, printable HTML page, with its plots.

The page speaks ``options.lang`` (Bokmål by default, English on request)
with the words of the message catalogue (:mod:`trygg.locale`), prints on A4
without cutting a table, floors every share within a limit (never rounded up
into compliance) and gives every time with its UTC offset (docs/auditing.md).
"""

from __future__ import annotations

from trygg.audit.report import NIGHT_HOURS, Progress, Report, summed
from trygg.audit.templating import page_env, rule_name

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


def to_html(report: Report) -> str:
    """The report as one self-contained, printable HTML page, in ``options.lang``."""
    import markupsafe

    o = report.options
    w, env = page_env(o.lang, o.timezone)
    if not report.plots:
        add_plots(report)
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
