"""The A3 improvement page (``trygg report a3``): one printable A3 landscape sheet
for one rule, laid out as a Lean A3 problem-solving sheet, from trygg's own
records (docs/auditing.md, "The A3 page").

1. **Background**: the rule, its code and severity, and what the catalogue
   says it is for (its description and reason, in the page's language:
   ``RuleSpec.texts``, English for a rule with no ``nb:`` texts).
2. **Current condition**: the rule's alerts in the period (per week, partial
   weeks marked), what they turned out to be (outcomes), answer times against
   the targets, and the night hours.
3. **Analysis**: where the false alarms come from, by local hour, team,
   device kind and resident (a Pareto list).
4. **Countermeasure**: a candidate catalogue back-tested on the stored
   events of the same period (``trygg.tuning.backtest``, the engine of
   ``trygg rules backtest``): the rule's alerts removed, added and moved, and
   what would have become of each *stored* alert of the rule, by what it
   turned out to be (a removed false alarm is the point; a missed or
   delayed real incident is the price).
5. **Follow-up**: shadow-mode dates and the figures to check, with the
   expected values from the back-test.

Every figure comes from ``trygg.store.kpi`` or the back-test; this module
gathers them, the template lays them out.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.registry import DEFAULT_DISTRICT
from trygg.rules.catalogue import Catalogue
from trygg.store import kpi as kpi_sql
from trygg.store.kpi import KpiParams, KpiRow
from trygg.store.registry import district_map
from trygg.tuning.backtest import (
    ADDED,
    DELAYED,
    EARLIER,
    KEPT,
    MISSED,
    REMOVED,
    BacktestResult,
    IncidentImpact,
    RecordedIncident,
    RuleDiff,
    RuleRecord,
    backtest,
)

Progress = Callable[[str], None]
NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5, 6)
STATUSES = (MISSED, DELAYED, KEPT, EARLIER)


@dataclass
class A3Options:
    rule: str
    start: datetime
    end: datetime
    team: str | None = None
    timezone: str = "Europe/Oslo"
    target60: float = 0.975
    target180: float = 0.99
    lang: str = "nb"
    shadow_from: date | None = None
    shadow_weeks: int = 4
    warmup: timedelta = timedelta(days=1)
    match_window: timedelta = timedelta(hours=1)
    candidate_paths: Sequence[Path] = ()

    def params(self) -> KpiParams:
        return KpiParams(
            start=self.start,
            end=self.end,
            team=self.team,
            timezone=self.timezone,
            rule=self.rule,
            answer_targets=((60, self.target60), (180, self.target180)),
        )

    @property
    def weeks(self) -> float:
        return (self.end - self.start).total_seconds() / (7 * 86400)


@dataclass
class OutcomeImpact:
    """The stored alerts of one outcome group and what the candidate makes of them."""

    outcome: str
    stored: int = 0
    missed: int = 0  # the candidate raises no alert for it
    delayed: int = 0
    kept: int = 0
    earlier: int = 0
    delay_total_s: float = 0.0

    @property
    def false(self) -> bool:
        return self.outcome in FALSE_OUTCOMES

    @property
    def mean_delay_s(self) -> float | None:
        return self.delay_total_s / self.delayed if self.delayed else None


@dataclass
class Countermeasure:
    current_version: str
    candidate_version: str
    candidate_paths: list[str]
    changes: list[tuple[str, Any, Any]]  # (field, current, candidate) of the rule
    result: BacktestResult
    diff: RuleDiff
    impacts: list[OutcomeImpact]
    missed_real: list[tuple[IncidentImpact, str]]  # real incidents the candidate misses
    delayed_real: list[tuple[IncidentImpact, str]]
    other_rules: list[RuleDiff]
    callouts_per_week: float
    weeks: float

    @property
    def current_per_week(self) -> float:
        return self.diff.current / self.weeks if self.weeks else 0.0

    @property
    def candidate_per_week(self) -> float:
        return self.diff.candidate / self.weeks if self.weeks else 0.0

    @property
    def false_removed(self) -> int:
        return sum(i.missed for i in self.impacts if i.false)

    @property
    def stored_false(self) -> int:
        return sum(i.stored for i in self.impacts if i.false)

    @property
    def median_real_delay_s(self) -> float | None:
        d = [i.delay_s or 0.0 for i, _ in self.delayed_real]
        return statistics.median(d) if d else None


@dataclass
class PlanStep:
    """One step of the follow-up: a date, what to do (a catalogue key, plan.*), the
    command, and the figures to check, each a catalogue key (check.*) with its
    values (a name ending in ``_share`` is a share, ``_week`` per week, ``_signed``
    a signed figure, ``target`` a target share, ``n`` a count)."""

    when: date
    what: str
    command: str
    checks: list[tuple[str, dict[str, float | int | None]]] = field(default_factory=list)


@dataclass
class A3Page:
    options: A3Options
    generated_at: datetime
    title: str
    description: str
    reason: str
    code: str
    severity: str
    kpis: list[KpiRow]
    breakdown: dict[str, list[dict[str, Any]]]
    # the language of description and reason: the page's, else English
    texts_lang: str = "en"
    countermeasure: Countermeasure | None = None
    shadow_started: datetime | None = None
    plan: list[PlanStep] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)
    # The reference: the rule's figures in each district over the same period
    # (every team of it, whatever the page's team); the page's own district (its
    # team's) is ``district``, the others are what it is compared with.
    reference: list[KpiRow] = field(default_factory=list)
    district: str | None = None
    district_names: dict[str, str] = field(default_factory=dict)

    def group(self, dimension: str) -> list[KpiRow]:
        return [k for k in self.kpis if k.dimension == dimension]

    @property
    def overall(self) -> KpiRow:
        return self.group("all")[0]

    @property
    def night_alerts(self) -> int:
        return sum(k.alerts for k in self.group("hour") if int(k.key) in NIGHT_HOURS)

    def outcomes(self) -> list[dict[str, Any]]:
        return self.breakdown["outcome"]

    def false_by(self, dimension: str) -> list[dict[str, Any]]:
        """The rows of a breakdown dimension that have alerts, most false alarms first."""
        rows = [r for r in self.breakdown[dimension] if r["alerts"]]
        return sorted(
            rows, key=lambda r: (-int(r["false_alarms"]), -int(r["alerts"]), str(r["key"]))
        )

    def pareto(self, top: int = 8) -> tuple[list[dict[str, Any]], int]:
        """The residents with the most false alarms, each with the running share of
        all false alarms; and the number of residents with any."""
        rows = [r for r in self.false_by("resident") if r["false_alarms"]]
        total = sum(int(r["false_alarms"]) for r in rows)
        out, run = [], 0
        for r in rows[:top]:
            run += int(r["false_alarms"])
            out.append({**r, "cumulative": run / total if total else None})
        return out, len(rows)


# --------------------------------------------------------------- building --


def rule_changes(current: Catalogue, candidate: Catalogue, rule: str) -> list[tuple[str, Any, Any]]:
    """The fields of ``rule`` that differ between the catalogues (its merged spec)."""
    a = current.raw.get(rule) or {}
    b = candidate.raw.get(rule) or {}
    skip = {"rule", "description", "reason", "nb", "title", "override"}
    out = []
    for k in sorted(set(a) | set(b)):
        if k in skip:
            continue
        if a.get(k) != b.get(k):
            out.append((k, a.get(k), b.get(k)))
    if rule in current.raw and rule not in candidate.raw:
        out.append(("rule", rule, None))
    return out


def build_a3(
    conn: psycopg.Connection[Any],
    opts: A3Options,
    current: Catalogue,
    *,
    now: datetime,
    candidate: Catalogue | None = None,
    progress: Progress | None = None,
) -> A3Page:
    """Gather the page's figures; with ``candidate``, back-test it on the stored
    events of the period (read with a server-side cursor, a warm-up before and
    the match window after, as ``trygg rules backtest`` does)."""
    tick = progress or (lambda _s: None)
    try:
        spec = current.spec(opts.rule)
    except KeyError:
        if candidate is None or opts.rule not in candidate.rule_ids:
            raise
        spec = candidate.spec(opts.rule)  # a rule the candidate adds
    # the description and reason in the page's language (English when the
    # catalogue has none in it: a site's own rule)
    description, reason = spec.texts(opts.lang)
    title, code, severity = spec.title, spec.code, str(spec.severity.value)
    texts_in = opts.lang if opts.lang == "en" or spec.translated(opts.lang) else "en"
    p = opts.params()
    rows = kpi_sql.compute_kpis(conn, p)
    tick("KPIs")
    bd = kpi_sql.breakdown(conn, p)
    tick("breakdown")
    page = A3Page(
        options=opts,
        generated_at=now,
        title=title,
        description=description,
        reason=reason,
        texts_lang=texts_in,
        code=code,
        severity=severity,
        kpis=rows,
        breakdown=bd,
    )
    add_reference(conn, page)
    if candidate is not None:
        page.countermeasure = countermeasure(conn, opts, current, candidate)
        tick("back-test")
        page.shadow_started = _shadow_started(conn, candidate.version)
    page.plan = plan(page, now)
    return page


def add_reference(conn: psycopg.Connection[Any], page: A3Page) -> None:
    """The other districts as the reference: the rule's figures per district over
    the page's period (``kpi.district_kpis``, all teams), when the site has more
    than one district; the page's district is its team's (none for the site)."""
    o = page.options
    p = KpiParams(
        start=o.start,
        end=o.end,
        timezone=o.timezone,
        rule=o.rule,
        answer_targets=((60, o.target60), (180, o.target180)),
    )
    teams, names = district_map(conn)
    rows = [k for k in kpi_sql.district_kpis(conn, p) if k.dimension == "district"]
    own = teams.get(o.team, DEFAULT_DISTRICT) if o.team else None
    if len({*teams.values(), *(k.key for k in rows)} - {DEFAULT_DISTRICT}) < 2:
        return  # one district (or none named): nothing to compare with
    page.reference = sorted(rows, key=lambda k: (k.key != own, k.key))
    page.district = own
    page.district_names = names


def countermeasure(
    conn: psycopg.Connection[Any],
    opts: A3Options,
    current: Catalogue,
    candidate: Catalogue,
) -> Countermeasure:
    from trygg.store import history
    from trygg.store.registry import load_registry

    registry = load_registry(conn)
    residents = None
    teams = [opts.team] if opts.team else None
    if opts.team:
        residents = [r.id for r in registry.residents if r.team == opts.team]
    stored = [a for a in kpi_sql.stored_alerts(conn, opts.params()) if not a["suppressed"]]
    outcome_of = {a["alert_id"]: a["outcome_group"] for a in stored}
    incidents = [
        RecordedIncident(
            alert_id=a["alert_id"],
            rule=a["rule"],
            resident=a["resident"],
            team=a["team"],
            raised_at=a["raised_at"],
            events=tuple(a["events"] or ()),
            arrived_at=a["arrived_at"],
            device=a["device"],
        )
        for a in stored
    ]
    real = {a["alert_id"] for a in stored if a["resolved"] and a["arrived_at"] is not None}
    records = [RuleRecord(**r) for r in history.alert_outcomes(conn, opts.start, opts.end, teams)]
    stream = history.EventStream(
        conn,
        registry,
        opts.start - opts.warmup,
        opts.end + opts.match_window,
        residents=residents,
        name="trygg_a3_history",
    )
    res = backtest(
        stream,
        registry,
        current,
        candidate,
        start=opts.start,
        end=opts.end,
        until=opts.end + opts.match_window,
        incidents=incidents,
        records=records,
        teams=teams,
        match_window=opts.match_window,
    )
    diff = res.rules.get(opts.rule) or RuleDiff(opts.rule)
    impacts: dict[str, OutcomeImpact] = {}
    missed_real: list[tuple[IncidentImpact, str]] = []
    delayed_real: list[tuple[IncidentImpact, str]] = []
    for imp in res.incidents:
        group = outcome_of[imp.incident.alert_id]
        oi = impacts.setdefault(group, OutcomeImpact(group))
        oi.stored += 1
        if imp.status == MISSED:
            oi.missed += 1
        elif imp.status == DELAYED:
            oi.delayed += 1
            oi.delay_total_s += imp.delay_s or 0.0
        elif imp.status == EARLIER:
            oi.earlier += 1
        else:
            oi.kept += 1
        if imp.incident.alert_id in real and group not in FALSE_OUTCOMES:
            if imp.status == MISSED:
                missed_real.append((imp, group))
            elif imp.status == DELAYED:
                delayed_real.append((imp, group))
    order = {o: i for i, o in enumerate(("helped", "not_at_home", "no_help_needed", "false_alarm"))}
    others = [
        d for r, d in res.rules.items() if r != opts.rule and (d.added or d.removed or d.shifted)
    ]
    return Countermeasure(
        current_version=current.version,
        candidate_version=candidate.version,
        candidate_paths=[str(x) for x in opts.candidate_paths],
        changes=rule_changes(current, candidate, opts.rule),
        result=res,
        diff=diff,
        impacts=sorted(impacts.values(), key=lambda i: (order.get(i.outcome, 9), i.outcome)),
        missed_real=missed_real,
        delayed_real=delayed_real,
        other_rules=others,
        callouts_per_week=sum(t.callouts_per_week for t in res.by_team.values()),
        weeks=res.weeks,
    )


def _shadow_started(conn: psycopg.Connection[Any], version: str) -> datetime | None:
    from trygg.store import versions

    try:
        with conn.transaction():
            return versions.shadow_started(conn, version)
    except psycopg.errors.UndefinedTable:
        return None


def next_monday(now: datetime, timezone: str) -> date:
    d = now.astimezone(ZoneInfo(timezone)).date() + timedelta(days=1)
    return d + timedelta(days=(7 - d.weekday()) % 7)


def plan(page: A3Page, now: datetime) -> list[PlanStep]:
    """The follow-up plan: a shadow run of the candidate, weekly checks against
    the back-test's expectations, the decision, and a follow-up A3 a month on."""
    o = page.options
    cm = page.countermeasure
    tz = o.timezone
    if page.shadow_started is not None:
        d0 = page.shadow_started.astimezone(ZoneInfo(tz)).date()
    else:
        d0 = o.shadow_from or next_monday(now, tz)
    rule = o.rule
    team = f" --team {o.team}" if o.team else ""
    zone = ZoneInfo(tz)
    period = f"--from {o.start.astimezone(zone).date()} --to {o.end.astimezone(zone).date()}"
    if cm is None:
        return [
            PlanStep(
                d0, "plan.backtest", f"trygg report a3 --rule {rule}{team} {period} --candidate DIR"
            )
        ]
    paths = " ".join(cm.candidate_paths) or "DIR"
    steps = [
        PlanStep(
            d0,
            "plan.shadow_start",
            f'trygg rules shadow {paths} --reason "A3 {rule}"',
            [("check.missed_backtest", {"n": len(cm.missed_real)})],
        )
    ]
    for k in range(1, o.shadow_weeks + 1):
        steps.append(
            PlanStep(
                d0 + timedelta(days=7 * k),
                "plan.shadow_check",
                f"trygg rules shadow-report --from {d0.isoformat()}",
                [
                    (
                        "check.alerts_per_week",
                        {"now_week": cm.current_per_week, "expected_week": cm.candidate_per_week},
                    ),
                    ("check.only_active", {}),
                ],
            )
        )
    decide = d0 + timedelta(days=7 * o.shadow_weeks)
    steps.append(
        PlanStep(
            decide,
            "plan.decide",
            f'trygg rules promote --reason "A3 {rule}: shadow run from {d0.isoformat()}"',
            [("check.decide", {})],
        )
    )
    follow = decide + timedelta(days=28)
    steps.append(
        PlanStep(
            follow,
            "plan.follow_up",
            f"trygg report a3 --rule {rule}{team} --from {decide.isoformat()}"
            f" --to {follow.isoformat()}",
            [
                (
                    "check.false_share",
                    {
                        "now_share": page.overall.false_alarm_share,
                        "expected_share": _expected_false_share(page),
                    },
                ),
                ("check.within60", {"target": o.target60}),
                ("check.callouts", {"callouts_week_signed": cm.callouts_per_week}),
            ],
        )
    )
    return steps


def _expected_false_share(page: A3Page) -> float | None:
    """The rule's false-alarm share if the candidate had run: the stored closed
    alerts less those it would not raise, and the false ones among them."""
    cm = page.countermeasure
    if cm is None:
        return None
    a = page.overall
    closed = a.closed - sum(i.missed for i in cm.impacts)
    false = a.false_alarms - cm.false_removed
    return false / closed if closed > 0 else None


# -------------------------------------------------------------- rendering --


def add_plots(page: A3Page) -> None:
    """The page's small plots, in its language."""
    import matplotlib.pyplot as plt

    from trygg.audit import plots as ap
    from trygg.audit.templating import outcome_words
    from trygg.locale import Words

    w = Words(page.options.lang)
    # alerts per week, false alarms apart; a partial week hatched, with its days
    weeks = page.group("week")
    fig, ax = plt.subplots(figsize=(4.6, 2.1))
    x = list(range(len(weeks)))
    false = [k.false_alarms for k in weeks]
    rest = [k.alerts - k.false_alarms for k in weeks]
    hatch = ["//" if k.partial else "" for k in weeks]
    ax.bar(x, rest, color=ap.BLUE, hatch=hatch, edgecolor="white", label=w("a3.plot.other"))
    ax.bar(x, false, bottom=rest, color=ap.AMBER, hatch=hatch, edgecolor="white",
           label=w("a3.plot.false"))  # fmt: skip
    labels = [
        k.key.split("-")[1] + ("\n" + w.n("plot.days", round(k.days or 0)) if k.partial else "")
        for k in weeks
    ]
    ax.set_xticks(x, labels, fontsize=7)
    for i, k in enumerate(weeks):
        if k.partial:
            ax.get_xticklabels()[i].set_color(ap.RED)
    ax.set_ylabel(w("plot.alerts"))
    ax.set_title(w("a3.plot.weekly"), fontsize=9)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    page.plots["weekly"] = ap._svg(fig, w("a3.plot.weekly"))
    # what the alerts turned out to be
    outs = page.outcomes()
    fig, ax = plt.subplots(figsize=(4.6, 0.26 * max(len(outs), 3) + 0.7))
    y = list(range(len(outs)))[::-1]
    ax.barh(
        y,
        [int(r["alerts"]) for r in outs],
        color=[ap.AMBER if r["key"] in FALSE_OUTCOMES else ap.BLUE for r in outs],
    )
    ax.set_yticks(y, [outcome_words(str(r["key"]), w) for r in outs], fontsize=7.5)
    ax.set_xlabel(w("plot.alerts"))
    ax.set_title(w("a3.plot.outcomes"), fontsize=9)
    page.plots["outcomes"] = ap._svg(fig, w("a3.plot.outcomes"))
    # by local hour, noon to noon, night shaded
    by = {int(r["key"]): r for r in page.breakdown["hour"]}
    hours = list(range(12, 24)) + list(range(12))
    # (lower when the districts' reference table needs the room on the sheet)
    fig, ax = plt.subplots(figsize=(9.4, 1.45 if page.reference else 2.0))
    x = list(range(24))
    for i, h in enumerate(hours):
        if h in NIGHT_HOURS:
            ax.axvspan(i - 0.5, i + 0.5, color="#eef", zorder=0)
    f = [int(by[h]["false_alarms"]) if h in by else 0 for h in hours]
    o = [int(by[h]["alerts"]) - f[i] if h in by else 0 for i, h in enumerate(hours)]
    ax.bar(x, o, color=ap.BLUE, label=w("a3.plot.other"))
    ax.bar(x, f, bottom=o, color=ap.AMBER, label=w("a3.plot.false"))
    ax.set_xticks(x, [f"{h:02d}" for h in hours], fontsize=7)
    ax.set_xlabel(w("a3.plot.hours.x"))
    ax.set_ylabel(w("plot.alerts"))
    ax.set_title(w("a3.plot.hours"), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    page.plots["hours"] = ap._svg(fig, w("a3.plot.hours"))
    cm = page.countermeasure
    if cm is not None:
        zone = ZoneInfo(page.options.timezone)
        rem = [0] * 24
        add = [0] * 24
        for c in cm.result.changes:
            if c.rule != page.options.rule or c.kind not in (REMOVED, ADDED):
                continue
            i = hours.index(c.at.astimezone(zone).hour)
            if c.kind == REMOVED:
                rem[i] += 1
            else:
                add[i] += 1
        fig, ax = plt.subplots(figsize=(9.4, 1.7))
        for i, h in enumerate(hours):
            if h in NIGHT_HOURS:
                ax.axvspan(i - 0.5, i + 0.5, color="#eef", zorder=0)
        ax.bar(x, [-v for v in rem], color=ap.BLUE, label=w("a3.plot.removed"))
        ax.bar(x, add, color=ap.RED, label=w("a3.plot.added"))
        ax.axhline(0, color="#333", linewidth=0.8)
        ax.set_xticks(x, [f"{h:02d}" for h in hours], fontsize=7)
        ax.set_ylabel(w("plot.alerts"))
        ax.set_title(w("a3.plot.changes"), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        page.plots["changes"] = ap._svg(fig, w("a3.plot.changes"))


def _fmt_check(w: Any, key: str, params: dict[str, float | int | None]) -> str:
    out: dict[str, str] = {}
    for name, v in params.items():
        if v is None:
            out[name] = "-"
        elif name.endswith("_share"):
            out[name] = w.pct(float(v))
        elif name.endswith("_signed"):
            out[name] = ("+" if v > 0 else "") + w.num(round(float(v), 1), 1)
        elif name.endswith("_week"):
            out[name] = w.num(round(float(v), 1), 1)
        elif name == "target":
            out[name] = w.target(float(v))
        else:
            out[name] = w.num(int(v))
    return str(w(key, **out))


def to_html(page: A3Page) -> str:
    """The page as one self-contained HTML file, printable on one A3 landscape sheet."""
    import markupsafe

    from trygg.audit.templating import jinja_env, rule_name
    from trygg.locale import Words

    o = page.options
    w = Words(o.lang)
    if not page.plots:
        add_plots(page)
    env = jinja_env(w, o.timezone)
    env.filters["share1"] = lambda v: w.pct(v, 1)
    env.filters["week"] = lambda v: w.num(round(v, 1), 1)
    hours = {int(k.key): k for k in page.group("hour")}
    cm = page.countermeasure
    pareto, pareto_n = page.pareto()
    name = rule_name(o.rule, o.lang)
    # The catalogue's title is English: beside the name in words on an English
    # page, or where there are no words for the rule (a site's own rule).
    subtitle = page.title if (o.lang == "en" or name == o.rule) else None
    html: str = env.get_template("a3.html.j2").render(
        p=page,
        o=o,
        w=w,
        a=page.overall,
        name=name,
        subtitle=subtitle,
        plots={k: markupsafe.Markup(v) for k, v in page.plots.items()},
        night=[(h, hours.get(h)) for h in NIGHT_HOURS],
        night_share=(page.night_alerts / page.overall.alerts) if page.overall.alerts else None,
        per_week=page.overall.alerts / o.weeks if o.weeks else None,
        teams=page.false_by("team"),
        kinds=page.false_by("device_kind"),
        pareto=pareto,
        pareto_n=pareto_n,
        cm=cm,
        shifted=(cm.diff.shifted if cm else 0),
        plan=[
            (s.when, w(s.what), s.command, [_fmt_check(w, k, v) for k, v in s.checks])
            for s in page.plan
        ],
    )
    return html


def chromium_pdf(html_file: Path, pdf_file: Path, chromium: str | None = None) -> None:
    """Print ``html_file`` to ``pdf_file`` with headless Chromium (its own print
    engine: the page's ``@page`` size, A3 landscape). Raises RuntimeError when no
    Chromium is found or it fails."""
    import os
    import shutil
    import subprocess
    import tempfile

    exe = chromium or next(
        (x for x in ("chromium", "chromium-browser", "google-chrome") if shutil.which(x)), None
    )
    if exe is None or shutil.which(exe) is None:
        raise RuntimeError("no Chromium found (give its path with --chromium)")
    with tempfile.TemporaryDirectory(prefix="trygg-a3-") as profile:
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf_file.resolve()}",
        ]
        if os.geteuid() == 0:
            cmd.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        cmd.append(html_file.resolve().as_uri())
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not pdf_file.exists() or pdf_file.stat().st_size == 0:
        raise RuntimeError(f"Chromium could not print {html_file}: {r.stderr.strip()[-500:]}")
