"""The A3 page's follow-up plan: a shadow run of the candidate, weekly checks
against the back-test's expectations, the decision, and a follow-up A3 a
month on.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from trygg.audit.a3 import A3Page, PlanStep


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
