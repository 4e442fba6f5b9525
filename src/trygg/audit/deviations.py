"""The deviation report (issue 19, item 3): how far each district is from the standard, and why.

For every rule of the catalogue: the city standard's value of each parameter
a district may adjust, each district's value and the reason its overlay
gives; the number of residents per district whose care plan overrides the
rule (and, by pseudonym, the care plans outside the standard's bounds with
their reasons); and, per district side by side, the rule's alert volume,
false-alarm share and answer times over a period.

Marked:

- *unexplained*: an overlay change without a reason;
- *outlier*: a district's value far from the others' - more than half the
  width of the standard's bounds away from the median of the city value and
  the other districts' values (numbers and durations with both bounds only).

``build`` reads the database (registry with districts, alerts); the overlays
come from files (trygg.rules.overlays). HTML (Bokmål or English), CSV, JSON.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from trygg.registry import DEFAULT_DISTRICT, Registry
from trygg.rules.catalogue import REASON, Catalogue, format_value, param_value
from trygg.rules.overlays import Overlays
from trygg.store.kpi import KpiParams, KpiRow
from trygg.store.kpi_queries import district_kpis

OUTLIER_SHARE = 0.5  # of the bounds' width away from the others' median


@dataclass
class Cell:
    """One district's setting of one rule."""

    district: str
    values: dict[str, str]  # parameter -> value (the city's where unchanged)
    changed: dict[str, str]  # parameter -> value, those the overlay changes
    reason: str | None = None
    file: str | None = None
    line: int | None = None
    outliers: list[str] = field(default_factory=list)  # parameters
    care_plans: int = 0  # residents whose care plan overrides the rule
    outside: list[dict[str, Any]] = field(default_factory=list)  # care plans outside bounds
    kpi: KpiRow | None = None

    @property
    def unexplained(self) -> bool:
        return bool(self.changed) and not self.reason

    @property
    def marked(self) -> bool:
        return self.unexplained or bool(self.outliers)


@dataclass
class RuleRow:
    rule: str
    title: str
    adjustable: dict[str, str]  # parameter -> bounds text
    city: dict[str, str]  # parameter -> value
    cells: list[Cell]


@dataclass
class Deviations:
    start: datetime
    end: datetime
    timezone: str
    version: str
    districts: list[str]
    names: dict[str, str]
    rules: list[RuleRow]
    lang: str = "nb"
    generated_at: datetime | None = None

    @property
    def marked(self) -> list[tuple[RuleRow, Cell]]:
        return [(r, c) for r in self.rules for c in r.cells if c.marked]

    @property
    def residents(self) -> list[str]:
        return sorted({o["resident"] for r in self.rules for c in r.cells for o in c.outside})


def _numeric(v: Any) -> float | None:
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return None


def build(
    conn: psycopg.Connection[Any],
    cat: Catalogue,
    overlays: Overlays,
    registry: Registry,
    start: datetime,
    end: datetime,
    timezone: str = "Europe/Oslo",
    district: str | None = None,
    lang: str = "nb",
) -> Deviations:
    """The report's figures: settings from the catalogue, overlays and registry;
    alerts per district from the database."""
    res_district = registry.resident_districts()
    used = set(registry.team_districts().values())
    districts = [d for d in registry.district_ids() if d != DEFAULT_DISTRICT or d in used] + [
        d for d in overlays.by_district if d not in registry.district_ids()
    ]
    if district is not None:
        districts = [d for d in districts if d == district]
    names = {d.id: d.name or d.id for d in registry.districts}
    kpis = {
        (k.extra["district"], k.extra["rule"]): k
        for k in district_kpis(conn, KpiParams(start=start, end=end, timezone=timezone))
        if k.dimension == "district_rule"
    }
    rows: list[RuleRow] = []
    for spec in cat.specs:
        rid = spec.rule
        bounds = cat.adjustable.get(rid, {})
        city_v = {p: param_value(spec, p) for p in bounds}
        city = {p: format_value(v) for p, v in city_v.items()}
        cells: list[Cell] = []
        values: dict[str, dict[str, Any]] = {}  # district -> param -> parsed value
        for d in districts:
            o = overlays.by_district.get(d)
            ch = o.change(rid) if o else None
            parsed = dict(city_v)
            changed: dict[str, str] = {}
            if ch is not None:
                eff = cat.override_spec(rid, ch.params)
                for p in ch.params:
                    parsed[p] = param_value(eff, p)
                    changed[p] = format_value(parsed[p])
            values[d] = parsed
            cells.append(
                Cell(
                    district=d,
                    values={p: format_value(v) for p, v in parsed.items()},
                    changed=changed,
                    reason=ch.reason if ch else None,
                    file=ch.file if ch else None,
                    line=ch.line if ch else None,
                    kpi=kpis.get((d, rid)),
                )
            )
        _mark_outliers(cells, values, city_v, bounds)
        by_d = {c.district: c for c in cells}
        for r in registry.residents:
            plan = r.overrides.get(rid)
            c = by_d.get(res_district[r.id])
            if plan is None or c is None:
                continue
            c.care_plans += 1
            try:
                out = cat.out_of_bounds(rid, plan)
            except ValueError:
                continue
            for p, msg in out:
                reason = plan.get(REASON) if isinstance(plan, dict) else None
                c.outside.append(
                    {"resident": r.id, "parameter": p, "value": str(plan.get(p)),
                     "message": msg, "reason": str(reason).strip() if reason else None}
                )  # fmt: skip
        rows.append(
            RuleRow(
                rule=rid,
                title=spec.title,
                adjustable={p: cat.bounds_text(rid, p) for p in bounds},
                city=city,
                cells=cells,
            )
        )
    return Deviations(start, end, timezone, cat.version, districts, names, rows, lang)


def _mark_outliers(
    cells: list[Cell],
    values: dict[str, dict[str, Any]],
    city: dict[str, Any],
    bounds: dict[str, tuple[Any, Any]],
) -> None:
    for p, (lo, hi) in bounds.items():
        lo_n, hi_n = _numeric(lo), _numeric(hi)
        if lo_n is None or hi_n is None or hi_n <= lo_n:
            continue
        for c in cells:
            if p not in c.changed:
                continue
            v = _numeric(values[c.district][p])
            ref = [_numeric(city[p])] + [
                _numeric(values[o.district][p]) for o in cells if o.district != c.district
            ]
            nums = [x for x in ref if x is not None]
            if v is None or not nums:
                continue
            if abs(v - statistics.median(nums)) > OUTLIER_SHARE * (hi_n - lo_n):
                c.outliers.append(p)


# ---------------------------------------------------------------- output --


def _kpi_dict(k: KpiRow | None) -> dict[str, Any]:
    if k is None:
        return {"alerts": 0, "false_alarm_share": None, "answer_p50_s": None,
                "answer_p90_s": None, "answered_within_60s": None}  # fmt: skip
    return {
        "alerts": k.alerts,
        "false_alarm_share": k.false_alarm_share,
        "answer_p50_s": k.answer_p50,
        "answer_p90_s": k.answer_p90,
        "answered_within_60s": k.share_within.get(60),
    }


def to_dict(d: Deviations) -> dict[str, Any]:
    return {
        "from": d.start.isoformat(),
        "to": d.end.isoformat(),
        "timezone": d.timezone,
        "catalogue": d.version,
        "districts": d.districts,
        "rules": [
            {
                "rule": r.rule,
                "title": r.title,
                "adjustable": r.adjustable,
                "city": r.city,
                "districts": {
                    c.district: {
                        "values": c.values,
                        "changed": c.changed,
                        "reason": c.reason,
                        "where": f"{c.file}:{c.line}" if c.file else None,
                        "unexplained": c.unexplained,
                        "outlier": c.outliers,
                        "care_plans": c.care_plans,
                        "care_plans_outside_bounds": c.outside,
                        **_kpi_dict(c.kpi),
                    }
                    for c in r.cells
                },
            }
            for r in d.rules
        ],
        "marked": [
            {
                "rule": r.rule,
                "district": c.district,
                "unexplained": c.unexplained,
                "outlier": c.outliers,
                "changed": c.changed,
            }
            for r, c in d.marked
        ],
    }


def to_json(d: Deviations) -> str:
    return json.dumps(to_dict(d), ensure_ascii=False, indent=2) + "\n"


CSV_FIELDS = (
    "rule", "district", "city", "value", "changed", "reason", "unexplained", "outlier",
    "care_plans", "care_plans_outside_bounds", "alerts", "false_alarm_share",
    "answer_p50_s", "answer_p90_s", "answered_within_60s",
)  # fmt: skip


def to_csv(d: Deviations) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()

    def params(v: dict[str, str]) -> str:
        return "; ".join(f"{p}={x}" for p, x in v.items())

    for r in d.rules:
        for c in r.cells:
            w.writerow(
                {
                    "rule": r.rule,
                    "district": c.district,
                    "city": params(r.city),
                    "value": params(c.values),
                    "changed": params(c.changed),
                    "reason": c.reason or "",
                    "unexplained": c.unexplained,
                    "outlier": " ".join(c.outliers),
                    "care_plans": c.care_plans,
                    "care_plans_outside_bounds": len(c.outside),
                    **{k: ("" if v is None else v) for k, v in _kpi_dict(c.kpi).items()},
                }
            )
    return buf.getvalue()


def to_html(d: Deviations) -> str:
    from trygg.audit.templating import page_env, rule_name

    w, env = page_env(d.lang, d.timezone)
    html: str = env.get_template("deviations.html.j2").render(
        d=d, w=w, name=lambda r: rule_name(r, d.lang)
    )
    return html
