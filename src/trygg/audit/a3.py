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
holds the page's data, trygg.audit.a3_build gathers it (the back-test in
trygg.audit.a3_countermeasure, the follow-up in trygg.audit.a3_plan), and
trygg.audit.a3_render lays it out (the template, the plots, the PDF).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.audit.report import NIGHT_HOURS, kpi_params
from trygg.store.kpi import KpiParams, KpiRow
from trygg.tuning.backtest import BacktestResult, IncidentImpact, RuleDiff


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
        return kpi_params(self, self.rule)

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
