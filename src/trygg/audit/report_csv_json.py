"""The response-time report as JSON and CSV: the same in every language
(English keys, raw figures; times in the report's zone, with their offset).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from trygg.audit.report import Report
from trygg.store.kpi import KpiRow


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


# The CSV's columns, in order, and how each is read off a row; the last column,
# district, is the report's (row_district).
_CSV_COLUMNS: dict[str, Callable[[KpiRow], Any]] = {
    "dimension": lambda k: k.dimension,
    "key": lambda k: k.key,
    "alerts": lambda k: k.alerts,
    "suppressed": lambda k: k.suppressed,
    "cancelled": lambda k: k.cancelled,
    "answerable": lambda k: k.answerable,
    "answered": lambda k: k.answered,
    "unanswered": lambda k: k.unanswered,
    "answer_p50_s": lambda k: k.answer_p50,
    "answer_p90_s": lambda k: k.answer_p90,
    "answer_p99_s": lambda k: k.answer_p99,
    "answered_within_60s": lambda k: k.answered_within[60],
    "answered_within_180s": lambda k: k.answered_within[180],
    "share_within_60s": lambda k: k.share_within[60],
    "share_within_180s": lambda k: k.share_within[180],
    "meets_target_60s": lambda k: k.meets_target[60],
    "meets_target_180s": lambda k: k.meets_target[180],
    "arrived": lambda k: k.arrived,
    "arrival_p50_s": lambda k: k.arrival_p50,
    "arrival_p90_s": lambda k: k.arrival_p90,
    "arrival_p99_s": lambda k: k.arrival_p99,
    "arrival_share_within_30min": lambda k: k.arrival_share_within[30],
    "arrival_share_within_45min": lambda k: k.arrival_share_within[45],
    "arrival_share_within_60min": lambda k: k.arrival_share_within[60],
    "resolved": lambda k: k.resolved,
    "resolve_p50_s": lambda k: k.resolve_p50,
    "resolve_p90_s": lambda k: k.resolve_p90,
    "resolve_p99_s": lambda k: k.resolve_p99,
    "closed": lambda k: k.closed,
    "false_alarms": lambda k: k.false_alarms,
    "false_alarm_share": lambda k: k.false_alarm_share,
    "not_at_home": lambda k: k.not_at_home,
    "days": lambda k: k.days,
    "partial": lambda k: k.partial if k.days is not None else None,
}
CSV_FIELDS = (*_CSV_COLUMNS, "district")


def csv_row(k: KpiRow) -> dict[str, Any]:
    return {f: value(k) for f, value in _CSV_COLUMNS.items()}


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
