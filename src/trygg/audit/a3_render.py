"""The A3 page rendered: its small plots, the HTML of one printable A3
landscape sheet (the template a3.html.j2), and the PDF by headless Chromium.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.audit.a3 import A3Page
from trygg.audit.report import NIGHT_HOURS
from trygg.audit.templating import outcome_words, page_env, rule_name
from trygg.tuning.backtest import ADDED, REMOVED


def add_plots(page: A3Page) -> None:
    """The page's small plots, in its language."""
    import matplotlib.pyplot as plt

    from trygg.audit import plots as ap
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

    o = page.options
    w, env = page_env(o.lang, o.timezone)
    if not page.plots:
        add_plots(page)
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
