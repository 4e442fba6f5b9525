"""The report's plots, as inline SVG (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams.update(
    {
        "svg.fonttype": "none",  # text stays text: small, searchable, printable
        "svg.hashsalt": "trygg",  # stable ids: the same data gives the same SVG
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)

BLUE, RED, GREY, AMBER = "#1f5fa8", "#c0392b", "#7f8c8d", "#d68910"
NIGHT_HOURS = (22, 23, 0, 1, 2, 3, 4, 5, 6)


def _svg(fig: Any, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<svg ", f'<svg role="img" aria-label="{label}" class="plot" ', svg, count=1)
    return svg


def answer_distribution(times: Sequence[float], limits: Sequence[int] = (60, 180)) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    cap = 300.0
    data = [min(t, cap) for t in times]
    if data:
        ax.hist(data, bins=60, range=(0, cap), color=BLUE, alpha=0.85)
    for lim, col in zip(limits, (AMBER, RED), strict=False):
        ax.axvline(lim, color=col, linestyle="--", linewidth=1.2)
        ax.text(lim, ax.get_ylim()[1] * 0.95, f" {lim} s", color=col, va="top")
    ax.set_xlabel("time to answer (s); the last bar holds everything over 300 s")
    ax.set_ylabel("alerts")
    ax.set_title("Distribution of answer times")
    return _svg(fig, "answer time distribution")


def weekly_compliance(
    weeks: Sequence[str],
    share60: Sequence[float | None],
    share180: Sequence[float | None],
    target60: float,
    target180: float,
) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    x = list(range(len(weeks)))
    s60 = [100 * v if v is not None else float("nan") for v in share60]
    s180 = [100 * v if v is not None else float("nan") for v in share180]
    ax.plot(x, s60, marker="o", color=BLUE, label="answered within 60 s")
    ax.plot(x, s180, marker="s", color=GREY, label="answered within 180 s")
    ax.axhline(100 * target60, color=AMBER, linestyle="--", linewidth=1, label="60 s target")
    ax.axhline(100 * target180, color=RED, linestyle="--", linewidth=1, label="180 s target")
    ax.set_xticks(
        x, weeks, rotation=45 if len(weeks) > 8 else 0, ha="right" if len(weeks) > 8 else "center"
    )
    lows = [v for v in s60 + s180 if v == v]
    ax.set_ylim(min([90.0, *lows]) - 1, 100.5)
    ax.set_ylabel("% of answerable alerts")
    ax.set_title("Weekly compliance with the answer targets")
    ax.legend(loc="lower left", fontsize=7, ncol=2)
    return _svg(fig, "weekly compliance")


def night_hours(counts: dict[int, int]) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 2.4))
    labels = [f"{h:02d}" for h in NIGHT_HOURS]
    vals = [counts.get(h, 0) for h in NIGHT_HOURS]
    ax.bar(labels, vals, color=BLUE)
    ax.set_xlabel("local hour of the night (22:00-07:00)")
    ax.set_ylabel("alerts")
    ax.set_title("Alerts per night hour")
    return _svg(fig, "alerts per night hour")


def top_residents(rows: Sequence[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * max(len(rows), 3) + 0.8))
    names = [str(r["resident"]) for r in rows][::-1]
    total = [int(r["alerts"]) for r in rows][::-1]
    false = [int(r["false_alarms"]) for r in rows][::-1]
    ax.barh(names, total, color=BLUE, label="alerts")
    ax.barh(names, false, color=AMBER, label="of which false / no help needed")
    ax.set_xlabel("alerts in the period")
    ax.set_title("Residents with the most alerts (pseudonyms)")
    ax.legend(loc="lower right", fontsize=7)
    return _svg(fig, "top residents")


def false_alarm_share(rules: Sequence[str], shares: Sequence[float | None]) -> str:
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * max(len(rules), 3) + 0.8))
    vals = [100 * (s or 0.0) for s in shares][::-1]
    ax.barh(list(rules)[::-1], vals, color=AMBER)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of closed alerts cancelled as false or resolved with no help needed")
    ax.set_title("False-alarm share by rule")
    return _svg(fig, "false alarm share by rule")
