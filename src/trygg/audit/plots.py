"""The report's plots, as inline SVG (matplotlib, Agg backend, no display).

Every text on a plot comes from the message catalogue (``trygg.locale``), in
the report's language. Categories are drawn at numeric positions with their
labels as tick labels, never as strings matplotlib has to guess about (it
logs "Using categorical units ..." for labels such as ``"00"``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from trygg.audit.report import NIGHT_HOURS

if TYPE_CHECKING:
    from trygg.locale import Words
    from trygg.store.kpi import KpiRow

plt.rcParams.update(
    {
        "svg.fonttype": "none",  # text stays text: small, searchable, printable
        "svg.hashsalt": "trygg",  # stable ids: the same data gives the same SVG
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

BLUE, RED, GREY, AMBER, GREEN = "#1f5fa8", "#c0392b", "#7f8c8d", "#d68910", "#1e8449"


def _svg(fig: Any, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    svg = re.sub(r"<svg ", f'<svg role="img" aria-label="{label}" class="plot" ', svg, count=1)
    return svg


def _pct(v: float | None) -> float:
    return 100 * v if v is not None else float("nan")


def answer_distribution(times: Sequence[float], w: Words, limits: Sequence[int] = (60, 180)) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    cap = 300.0
    data = [min(t, cap) for t in times]
    if data:
        ax.hist(data, bins=60, range=(0, cap), color=BLUE, alpha=0.85)
    for lim, col in zip(limits, (AMBER, RED), strict=False):
        ax.axvline(lim, color=col, linestyle="--", linewidth=1.2)
        ax.text(lim, ax.get_ylim()[1] * 0.95, f" {lim} s", color=col, va="top")
    ax.set_xlabel(w("plot.answers.x"))
    ax.set_ylabel(w("plot.alerts"))
    ax.set_title(w("plot.answers.title"))
    return _svg(fig, w("plot.answers.label"))


def weekly_compliance(weeks: Sequence[KpiRow], target60: float, target180: float, w: Words) -> str:
    """The share answered within 60 and 180 s per week; a week the period covers
    only in part is drawn hollow and labelled with its days."""
    fig, ax = plt.subplots(figsize=(7.0, 2.8))
    x = list(range(len(weeks)))
    s60 = [_pct(k.share_within[60]) for k in weeks]
    s180 = [_pct(k.share_within[180]) for k in weeks]
    ax.plot(x, s60, marker="o", color=BLUE, label=w("plot.within60"))
    ax.plot(x, s180, marker="s", color=GREY, label=w("plot.within180"))
    part = [i for i, k in enumerate(weeks) if k.partial]
    if part:
        for series, m in ((s60, "o"), (s180, "s")):
            ax.plot(
                part,
                [series[i] for i in part],
                linestyle="none",
                marker=m,
                markersize=9,
                markerfacecolor="white",
                markeredgecolor=RED,
                zorder=5,
            )
        ax.plot([], [], linestyle="none", marker="o", markerfacecolor="white",
                markeredgecolor=RED, label=w("plot.partial_week"))  # fmt: skip
    ax.axhline(100 * target60, color=AMBER, linestyle="--", linewidth=1, label=w("plot.target60"))
    ax.axhline(100 * target180, color=RED, linestyle="--", linewidth=1, label=w("plot.target180"))
    labels = []
    for k in weeks:
        lab = k.key.replace("-W", "\nW") if len(weeks) > 8 else k.key
        if k.partial:
            lab += "\n" + w.n("plot.days", round(k.days or 0))
        labels.append(lab)
    ax.set_xticks(x, labels, fontsize=7 if len(weeks) > 8 else 8)
    for i in part:
        ax.get_xticklabels()[i].set_color(RED)
    lows = [v for v in s60 + s180 if v == v]
    ax.set_ylim(min([90.0, *lows]) - 1, 100.5)
    ax.set_ylabel(w("plot.share_answerable"))
    ax.set_title(w("plot.weekly.title"))
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    return _svg(fig, w("plot.weekly.label"))


def team_compliance(teams: Sequence[KpiRow], target60: float, target180: float, w: Words) -> str:
    """Per team: the share answered within 60 s (a bar, red below the target, its
    floored figure beside it) and within 180 s (a dot)."""
    fig, ax = plt.subplots(figsize=(7.0, 0.34 * max(len(teams), 3) + 1.0))
    y = list(range(len(teams)))[::-1]
    s60 = [_pct(k.share_within[60]) for k in teams]
    s180 = [_pct(k.share_within[180]) for k in teams]
    lows = [v for v in s60 + s180 if v == v]
    lo = min([90.0, *lows]) - 1
    colours = [GREEN if k.meets_target[60] else RED for k in teams]
    ax.barh(y, [v - lo if v == v else 0 for v in s60], left=lo, color=colours, height=0.6,
            label=w("plot.within60"))  # fmt: skip
    ax.plot(s180, y, linestyle="none", marker="s", color=GREY, label=w("plot.within180"))
    for yi, k in zip(y, teams, strict=True):
        ax.annotate(
            w.pct(k.share_within[60], floor=True),
            xy=(1.0, yi),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=GREEN if k.meets_target[60] else RED,
        )
    ax.axvline(100 * target60, color=AMBER, linestyle="--", linewidth=1, label=w("plot.target60"))
    ax.axvline(100 * target180, color=RED, linestyle="--", linewidth=1, label=w("plot.target180"))
    ax.set_yticks(y, [k.key for k in teams])
    ax.set_xlim(lo, 100)
    ax.set_xlabel(w("plot.share_answerable"))
    ax.set_title(w("plot.teams.title"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, ncol=4, frameon=False)
    return _svg(fig, w("plot.teams.label"))


def night_hours(hours: Sequence[KpiRow], target60: float, w: Words) -> str:
    """Per local night hour (22-07): the alerts, and the share answered within 60 s."""
    by = {int(k.key): k for k in hours}
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.0, 3.6), sharex=True, gridspec_kw={"height_ratios": [1, 1.1]}
    )
    x = list(range(len(NIGHT_HOURS)))
    labels = [f"{h:02d}" for h in NIGHT_HOURS]
    top.bar(x, [by[h].alerts if h in by else 0 for h in NIGHT_HOURS], color=BLUE)
    top.set_ylabel(w("plot.alerts"))
    top.set_title(w("plot.night.title"))
    shares = [_pct(by[h].share_within[60]) if h in by else float("nan") for h in NIGHT_HOURS]
    colours = [
        GREEN if h in by and by[h].meets_target[60] else RED if h in by else GREY
        for h in NIGHT_HOURS
    ]
    bottom.scatter(x, shares, color=colours, zorder=3)
    bottom.plot(x, shares, color=GREY, linewidth=0.8)
    bottom.axhline(100 * target60, color=AMBER, linestyle="--", linewidth=1,
                   label=w("plot.target60"))  # fmt: skip
    lows = [v for v in shares if v == v]
    bottom.set_ylim(min([90.0, *lows]) - 1, 100.5)
    bottom.set_ylabel(w("plot.within60_short"))
    bottom.set_xticks(x, labels)
    bottom.set_xlabel(w("plot.night.x"))
    bottom.legend(loc="lower left", fontsize=7)
    return _svg(fig, w("plot.night.label"))


def top_residents(rows: Sequence[dict[str, Any]], w: Words) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * max(len(rows), 3) + 0.8))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [int(r["alerts"]) for r in rows], color=BLUE, label=w("plot.alerts"))
    ax.barh(y, [int(r["false_alarms"]) for r in rows], color=AMBER, label=w("plot.false_of"))
    ax.set_yticks(y, [str(r["resident"]) for r in rows])
    ax.set_xlabel(w("plot.residents.x"))
    ax.set_title(w("plot.residents.title"))
    ax.legend(loc="lower right", fontsize=7)
    return _svg(fig, w("plot.residents.label"))


def false_alarm_share(rules: Sequence[str], shares: Sequence[float | None], w: Words) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * max(len(rules), 3) + 0.8))
    y = list(range(len(rules)))[::-1]
    ax.barh(y, [100 * (s or 0.0) for s in shares], color=AMBER)
    ax.set_yticks(y, list(rules))
    ax.set_xlim(0, 100)
    ax.set_xlabel(w("plot.false.x"))
    ax.set_title(w("plot.false.title"))
    return _svg(fig, w("plot.false.label"))
