"""Output of ``trygg rules backtest``: a terminal table, JSON, or a
self-contained HTML page with inline SVG plots (the audit report's approach:
matplotlib's Agg backend through ``trygg.audit.plots``, Jinja2 templates)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from trygg.audit.report import NIGHT_HOURS
from trygg.locale import Words
from trygg.tuning.backtest import (
    ADDED,
    DELAYED,
    EARLIER,
    KEPT,
    MISSED,
    REMOVED,
    SHIFTED,
    BacktestResult,
    Change,
    IncidentImpact,
)


def _iso(t: datetime | None, zone: ZoneInfo) -> str | None:
    return None if t is None else t.astimezone(zone).isoformat()


def _change(c: Change, zone: ZoneInfo) -> dict[str, Any]:
    sig = c.signal
    return {
        "kind": c.kind,
        "rule": c.rule,
        "resident": c.resident,
        "team": c.team,
        "device": sig.device,
        "current_at": _iso(c.current.at if c.current else None, zone),
        "candidate_at": _iso(c.candidate.at if c.candidate else None, zone),
        "shift_s": c.shift_s,
        "events": list(sig.events),
    }


def _impact(i: IncidentImpact, zone: ZoneInfo) -> dict[str, Any]:
    inc = i.incident
    return {
        "alert_id": inc.alert_id,
        "rule": inc.rule,
        "resident": inc.resident,
        "team": inc.team,
        "raised_at": _iso(inc.raised_at, zone),
        "arrived_at": _iso(inc.arrived_at, zone),
        "status": i.status,
        "candidate_at": _iso(i.candidate_at, zone),
        "delay_s": i.delay_s,
    }


def to_dict(r: BacktestResult, timezone: str = "Europe/Oslo") -> dict[str, Any]:
    zone = ZoneInfo(timezone)
    return {
        "period": {
            "from": _iso(r.start, zone),
            "to": _iso(r.end, zone),
            "weeks": round(r.weeks, 4),
            "teams": r.teams,
        },
        "catalogues": {"current": r.current_version, "candidate": r.candidate_version},
        "events": r.events,
        "late_events": r.late,
        "elapsed_s": round(r.elapsed_s, 3),
        "events_per_s": round(r.events_per_s, 1) if r.events_per_s else None,
        "alerts": {
            "current": r.current_alerts,
            "candidate": r.candidate_alerts,
            "added": r.count(ADDED),
            "removed": r.count(REMOVED),
            "shifted": r.count(SHIFTED),
        },
        "rules": [
            {
                "rule": d.rule,
                "current": d.current,
                "candidate": d.candidate,
                "added": d.added,
                "removed": d.removed,
                "shifted": d.shifted,
                "mean_shift_s": d.mean_shift_s,
                "recorded_alerts": d.recorded_alerts,
                "recorded_closed": d.recorded_closed,
                "recorded_false_alarms": d.recorded_false_alarms,
                "recorded_false_share": d.recorded_false_share,
                "recorded_callouts": d.recorded_callouts,
            }
            for d in r.rules.values()
        ],
        "teams": [
            {
                "team": t.team,
                "added": t.added,
                "removed": t.removed,
                "alerts_per_week": round(t.alerts_per_week, 3),
                "callouts_per_week": round(t.callouts_per_week, 3),
                "assumed_one_callout": t.assumed,
            }
            for t in r.by_team.values()
        ],
        "residents": [
            {"resident": k, "added": v.added, "removed": v.removed, "shifted": v.shifted}
            for k, v in sorted(r.residents.items())
        ],
        "hours": [
            {"hour": h, "added": v.added, "removed": v.removed, "shifted": v.shifted}
            for h, v in sorted(r.hours.items())
        ],
        "incidents": {
            "recorded": len(r.incidents),
            "missed": [_impact(i, zone) for i in r.impacts(MISSED)],
            "delayed": [_impact(i, zone) for i in r.impacts(DELAYED)],
            "earlier": len(r.impacts(EARLIER)),
            "kept": len(r.impacts(KEPT)),
        },
        "changes": [_change(c, zone) for c in r.changes],
    }


def to_json(r: BacktestResult, timezone: str = "Europe/Oslo") -> str:
    return json.dumps(to_dict(r, timezone), ensure_ascii=False, indent=1) + "\n"


# ------------------------------------------------------------------- table --


def fmt_s(v: float | None) -> str:
    """Seconds as a short duration: 45 s, 10 min, 1 h 05 min; signed."""
    if v is None:
        return "-"
    sign = "-" if v < 0 else "+"
    a = abs(v)
    if a < 60:
        return f"{sign}{a:.0f} s"
    if a < 3600:
        m, s = divmod(round(a), 60)
        return f"{sign}{m} min" if not s else f"{sign}{m} min {s:02d} s"
    h, m = divmod(round(a / 60), 60)
    return f"{sign}{h} h {m:02d} min"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def _local(zone: ZoneInfo) -> Callable[[datetime | None], str]:
    """Local time with its UTC offset (2026-03-29 03:00 +02:00): a DST night's
    hours are otherwise ambiguous, as in every other report."""

    def f(t: datetime | None) -> str:
        return Words.when(t, zone.key)

    return f


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals: list[str]) -> str:
        first = vals[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(vals[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def to_table(
    r: BacktestResult, timezone: str = "Europe/Oslo", top: int = 10, top_incidents: int = 20
) -> str:
    zone = ZoneInfo(timezone)
    loc = _local(zone)
    out: list[str] = []
    teams = ", ".join(r.teams) if r.teams else "all"
    out.append(f"Back-test {loc(r.start)} - {loc(r.end)} ({timezone}), teams: {teams}")
    out.append(f"current catalogue {r.current_version}, candidate {r.candidate_version}")
    rate = f"{r.events_per_s:,.0f} events/s" if r.events_per_s else "-"
    out.append(f"{r.events:,} events ({r.late} late, not evaluated) in {r.elapsed_s:.1f} s: {rate}")
    out.append(
        f"alerts: current {r.current_alerts:,}, candidate {r.candidate_alerts:,}: "
        f"{r.count(ADDED):,} added, {r.count(REMOVED):,} removed, "
        f"{r.count(SHIFTED):,} at another time"
    )
    out.append("")
    rows = [
        [
            d.rule,
            d.current,
            d.candidate,
            d.added,
            d.removed,
            d.shifted,
            fmt_s(d.mean_shift_s),
            d.recorded_alerts,
            f"{d.recorded_false_alarms} ({_pct(d.recorded_false_share)})",
        ]
        for d in r.rules.values()
        if d.current or d.candidate or d.recorded_alerts
    ]
    out.append("Per rule (stored: alerts stored for the period; false: of the closed ones)")
    out.extend(
        _table(
            [
                "rule",
                "current",
                "candidate",
                "added",
                "removed",
                "moved",
                "mean move",
                "stored",
                "false",
            ],
            rows,
        )
    )
    out.append("")
    out.append("Per team, per week (call-outs: estimated from the stored arrival share)")
    out.extend(
        _table(
            ["team", "added", "removed", "alerts/week", "call-outs/week"],
            [
                [
                    t.team,
                    t.added,
                    t.removed,
                    f"{t.alerts_per_week:+.2f}",
                    f"{t.callouts_per_week:+.2f}" + (" *" if t.assumed else ""),
                ]
                for t in r.by_team.values()
            ],
        )
    )
    if any(t.assumed for t in r.by_team.values()):
        out.append("* some differences counted as one call-out each (no stored alerts of the rule)")
    out.append("")
    out.append("Per night hour (local time of the alert): added / removed")
    out.append(
        "  ".join(f"{h:02d}: {r.hours[h].added}/{r.hours[h].removed}" for h in NIGHT_HOURS)
        + "   (day: "
        + f"{sum(v.added for h, v in r.hours.items() if h not in NIGHT_HOURS)}/"
        + f"{sum(v.removed for h, v in r.hours.items() if h not in NIGHT_HOURS)})"
    )
    if r.residents:
        out.append("")
        ranked = sorted(
            r.residents.items(), key=lambda kv: (-(kv[1].added + kv[1].removed), kv[0])
        )[:top]
        out.append(
            f"Residents with the most added or removed alerts (top {top} of {len(r.residents)})"
        )
        out.extend(
            _table(
                ["resident", "added", "removed", "moved"],
                [[k, v.added, v.removed, v.shifted] for k, v in ranked],
            )
        )
    out.append("")
    missed, delayed = r.impacts(MISSED), r.impacts(DELAYED)
    out.append(
        f"Recorded real incidents (resolved after an arrival): {len(r.incidents)}; "
        f"the candidate would miss {len(missed)} and delay {len(delayed)}"
        + (
            f" (median delay {fmt_s(statistics.median(i.delay_s or 0.0 for i in delayed))})"
            if delayed
            else ""
        )
    )
    for i in missed[:top_incidents]:
        inc = i.incident
        out.append(f"  MISSED   {loc(inc.raised_at)}  {inc.rule}  {inc.resident}  ({inc.team})")
    if len(missed) > top_incidents:
        out.append(f"  ... and {len(missed) - top_incidents} more missed (all in --format json)")
    for i in delayed[:top_incidents]:
        inc = i.incident
        out.append(
            f"  DELAYED  {loc(inc.raised_at)}  {inc.rule}  {inc.resident}  ({inc.team})"
            f"  by {fmt_s(i.delay_s)}"
        )
    if len(delayed) > top_incidents:
        out.append(f"  ... and {len(delayed) - top_incidents} more delayed (all in --format json)")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- HTML --


def plots(r: BacktestResult) -> dict[str, str]:
    """Inline SVG plots: differences per rule, per local hour, per team."""
    import matplotlib.pyplot as plt

    from trygg.audit import plots as ap  # the Agg backend and the report's plot style

    out: dict[str, str] = {}
    rules = [d for d in r.rules.values() if d.added or d.removed or d.shifted]
    if rules:
        fig, ax = plt.subplots(figsize=(7.0, 0.32 * max(len(rules), 3) + 0.9))
        names = [d.rule for d in rules][::-1]
        ax.barh(names, [d.added for d in rules][::-1], color=ap.RED, label="added")
        ax.barh(names, [-d.removed for d in rules][::-1], color=ap.BLUE, label="removed")
        ax.barh(
            names,
            [d.shifted for d in rules][::-1],
            left=[d.added for d in rules][::-1],
            color=ap.GREY,
            alpha=0.6,
            label="at another time",
        )
        ax.axvline(0, color="#333", linewidth=0.8)
        ax.set_xlabel("alerts (removed to the left, added and moved to the right)")
        ax.set_title("Differences per rule")
        ax.legend(loc="lower right", fontsize=7)
        out["rules"] = ap._svg(fig, "differences per rule")
    fig, ax = plt.subplots(figsize=(7.0, 2.6))
    hours = list(range(12, 24)) + list(range(12))
    x = list(range(len(hours)))
    for k, h in enumerate(hours):
        if h in NIGHT_HOURS:
            ax.axvspan(k - 0.5, k + 0.5, color="#eef", zorder=0)
    ax.bar(x, [r.hours[h].added for h in hours], color=ap.RED, label="added")
    ax.bar(x, [-r.hours[h].removed for h in hours], color=ap.BLUE, label="removed")
    ax.set_xticks(x, [f"{h:02d}" for h in hours])
    ax.axhline(0, color="#333", linewidth=0.8)
    ax.set_xlabel("local hour of the alert (noon to noon; night 22-07 shaded)")
    ax.set_ylabel("alerts")
    ax.set_title("Added and removed alerts per hour")
    ax.legend(loc="upper right", fontsize=7)
    out["hours"] = ap._svg(fig, "added and removed alerts per hour")
    teams = list(r.by_team.values())
    if teams:
        fig, ax = plt.subplots(figsize=(7.0, 0.32 * max(len(teams), 3) + 0.9))
        vals = [t.callouts_per_week for t in teams][::-1]
        ax.barh(
            [t.team for t in teams][::-1],
            vals,
            color=[ap.RED if v > 0 else ap.BLUE for v in vals],
        )
        ax.axvline(0, color="#333", linewidth=0.8)
        ax.set_xlabel("estimated call-outs per week (+ extra, - saved)")
        ax.set_title("Call-outs per week by team")
        out["teams"] = ap._svg(fig, "call-outs per week by team")
    shifts = [c.shift_s / 60 for c in r.changes if c.kind == SHIFTED and c.shift_s is not None]
    if shifts:
        fig, ax = plt.subplots(figsize=(7.0, 2.4))
        ax.hist(shifts, bins=40, color=ap.GREY)
        ax.set_xlabel("candidate time minus current time (min)")
        ax.set_ylabel("alerts")
        ax.set_title("Alerts raised at another time")
        out["shifts"] = ap._svg(fig, "alerts raised at another time")
    return out


def to_html(
    r: BacktestResult,
    timezone: str = "Europe/Oslo",
    top: int = 25,
    generated_at: datetime | None = None,
) -> str:
    import markupsafe

    from trygg.audit.templating import html_env

    env = html_env("trygg.rules")
    zone = ZoneInfo(timezone)
    env.filters["local"] = _local(zone)
    env.filters["dur"] = fmt_s
    env.filters["pct"] = _pct
    ranked = sorted(r.residents.items(), key=lambda kv: (-(kv[1].added + kv[1].removed), kv[0]))
    return env.get_template("backtest.html.j2").render(
        r=r,
        timezone=timezone,
        plots={k: markupsafe.Markup(v) for k, v in plots(r).items()},
        residents=ranked[:top],
        residents_hidden=max(0, len(ranked) - top),
        missed=r.impacts(MISSED),
        delayed=r.impacts(DELAYED),
        added=r.count(ADDED),
        removed=r.count(REMOVED),
        shifted=r.count(SHIFTED),
        night=NIGHT_HOURS,
        day_added=sum(v.added for h, v in r.hours.items() if h not in NIGHT_HOURS),
        day_removed=sum(v.removed for h, v in r.hours.items() if h not in NIGHT_HOURS),
        generated=generated_at,
    )
