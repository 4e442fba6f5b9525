"""Response-time KPIs, in SQL, from the alert lifecycle records.

For each alert raised in ``[start, end)`` (``alerts.raised_at``; shadow alerts
are excluded everywhere), the interval figures are taken from its records:

- answer   = first ``acknowledged`` record - the ``raised`` record
- arrival  = first ``arrived`` record - ``raised``
- resolve  = first ``resolved`` record - ``raised``

Populations (docs/auditing.md):

- *suppressed* alerts (stored, never routed) and *cancelled* alerts are counted
  on their own and never enter the answer-time figures;
- every other alert is *answerable*; one without an ``acknowledged`` record is
  unanswered and counts as a breach of both answer targets;
- arrival figures are over answerable alerts with an ``arrived`` record,
  resolve figures over answerable alerts with a ``resolved`` record;
- false alarms are closed alerts with the outcome ``false_alarm`` or
  ``no_help_needed`` (over all closed ones); ``not_at_home`` (staff went and
  nobody was there: a real alarm or an unknown one) is never false, and is
  counted on its own (docs/alerts.md "Outcomes").

Groups: the whole period, team, rule, severity, local hour of day, local week
and local month (``AT TIME ZONE``, so daylight-saving days are right). A week
or month the period covers only in part is marked ``partial`` with the
``days`` it covers, so a one-day week is not read as a full one. Weeks
and months use ``time_bucket(..., timezone)`` on TimescaleDB and
``date_trunc(..., timezone)`` on plain PostgreSQL; both give the local
Monday/first-of-month midnight.

The queries that group and report these figures are in trygg.store.kpi_queries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import sql

DIMENSIONS = ("all", "team", "rule", "severity", "hour", "week", "month")
_KPI_STEPS = "('raised', 'acknowledged', 'arrived', 'resolved', 'cancelled')"


@dataclass(frozen=True)
class KpiParams:
    start: datetime
    end: datetime
    team: str | None = None
    timezone: str = "Europe/Oslo"
    rule: str | None = None
    answer_targets: tuple[tuple[int, float], ...] = ((60, 0.975), (180, 0.99))
    arrival_limits_min: tuple[int, ...] = (30, 45, 60)


@dataclass
class KpiRow:
    """The figures for one group; times in seconds, shares 0..1 (None: no data)."""

    dimension: str
    key: str
    alerts: int
    suppressed: int
    cancelled: int
    answerable: int
    answered: int
    unanswered: int
    answer_p50: float | None
    answer_p90: float | None
    answer_p99: float | None
    answered_within: dict[int, int]
    share_within: dict[int, float | None]
    meets_target: dict[int, bool | None]
    arrived: int
    arrival_p50: float | None
    arrival_p90: float | None
    arrival_p99: float | None
    arrival_within: dict[int, int]
    arrival_share_within: dict[int, float | None]
    resolved: int
    resolve_p50: float | None
    resolve_p90: float | None
    resolve_p99: float | None
    closed: int
    false_alarms: int
    false_alarm_share: float | None
    not_at_home: int
    extra: dict[str, Any] = field(default_factory=dict)
    days: float | None = None
    """Weeks and months: the days of the group's calendar period inside the report
    period (local wall-clock days, so a week with a daylight-saving night is 7)."""
    partial: bool = False
    """Weeks and months: the report period covers only part of it."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("answered_within", "share_within", "meets_target"):
            d[k] = {f"{s}s": v for s, v in d[k].items()}
        for k in ("arrival_within", "arrival_share_within"):
            d[k] = {f"{m}min": v for m, v in d[k].items()}
        d.pop("extra")
        return d


def _bucket(unit: str, tsdb: bool) -> sql.Composable:
    if tsdb:
        return sql.SQL("time_bucket({}, raised, %(tz)s)").format(sql.Literal(f"1 {unit}"))
    return sql.SQL("date_trunc({}, raised, %(tz)s)").format(sql.Literal(unit))


def base_cte(p: KpiParams, tsdb: bool) -> tuple[sql.Composable, dict[str, Any]]:
    """``base``: one row per (non-shadow) alert in the period with its step times."""
    params: dict[str, Any] = {"start": p.start, "end": p.end, "tz": p.timezone}
    team: sql.Composable = sql.SQL("")
    if p.team:
        team = sql.SQL(" AND a.team = %(team)s")
        params["team"] = p.team
    if p.rule:
        team = team + sql.SQL(" AND a.rule = %(rule)s")
        params["rule"] = p.rule
    q = sql.SQL(
        """
        steps AS (
            SELECT a.id, a.team, a.rule, a.severity, a.resident, a.code, a.suppressed, a.device,
                   a.outcome AS alert_outcome, a.raised_at, a.events[1] AS first_event,
                   coalesce(r.raised, a.raised_at) AS raised,
                   r.ack, r.arrived, r.resolved, r.cancelled
              FROM alerts a
              LEFT JOIN LATERAL (
                    SELECT min(at) FILTER (WHERE step = 'raised') AS raised,
                           min(at) FILTER (WHERE step = 'acknowledged') AS ack,
                           min(at) FILTER (WHERE step = 'arrived') AS arrived,
                           min(at) FILTER (WHERE step = 'resolved') AS resolved,
                           min(at) FILTER (WHERE step = 'cancelled') AS cancelled
                      FROM alert_records
                     WHERE alert_id = a.id AND step IN """
        + _KPI_STEPS
        + """
              ) r ON true
             WHERE a.raised_at >= %(start)s AND a.raised_at < %(end)s AND NOT a.shadow{team}
        ),
        base AS (
            SELECT s.*,
                   (NOT s.suppressed AND s.cancelled IS NULL) AS answerable,
                   extract(epoch FROM s.ack - s.raised)::float8 AS answer_s,
                   extract(epoch FROM s.arrived - s.raised)::float8 AS arrival_s,
                   extract(epoch FROM s.resolved - s.raised)::float8 AS resolve_s,
                   CASE WHEN s.alert_outcome IS NOT NULL THEN s.alert_outcome
                        WHEN s.resolved IS NOT NULL OR s.cancelled IS NOT NULL THEN (
                            SELECT coalesce(c.data ->> 'outcome',
                                            CASE WHEN c.data ->> 'reason' IN ('false_alarm', 'test')
                                                 THEN c.data ->> 'reason' END)
                              FROM alert_records c
                             WHERE c.alert_id = s.id AND c.step IN ('resolved', 'cancelled')
                             ORDER BY c.at, c.id LIMIT 1)
                   END AS outcome,
                   extract(hour FROM s.raised AT TIME ZONE %(tz)s)::int AS hour,
                   {week} AS week,
                   {month} AS month
              FROM steps s
        )
        """
    ).format(team=team, week=_bucket("week", tsdb), month=_bucket("month", tsdb))
    return q, params


def aggregates(p: KpiParams) -> sql.Composable:
    """The figures' aggregate columns over ``base`` (read back by :func:`kpi_row`)."""
    parts = [
        "count(*) AS alerts",
        "count(*) FILTER (WHERE suppressed) AS suppressed",
        "count(*) FILTER (WHERE NOT suppressed AND cancelled IS NOT NULL) AS cancelled",
        "count(*) FILTER (WHERE answerable) AS answerable",
        "count(ack) FILTER (WHERE answerable) AS answered",
        "percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY answer_s)"
        " FILTER (WHERE answerable) AS answer_pct",
        "count(arrived) FILTER (WHERE answerable) AS arrived",
        "percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY arrival_s)"
        " FILTER (WHERE answerable) AS arrival_pct",
        "count(resolved) FILTER (WHERE answerable) AS resolved",
        "percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY resolve_s)"
        " FILTER (WHERE answerable) AS resolve_pct",
        "count(*) FILTER (WHERE NOT suppressed AND (resolved IS NOT NULL OR cancelled IS NOT NULL))"
        " AS closed",
        "count(*) FILTER (WHERE NOT suppressed AND (resolved IS NOT NULL OR cancelled IS NOT NULL)"
        " AND outcome IN ('false_alarm', 'no_help_needed')) AS false_alarms",
        "count(*) FILTER (WHERE NOT suppressed AND (resolved IS NOT NULL OR cancelled IS NOT NULL)"
        " AND outcome = 'not_at_home') AS not_at_home",
    ]
    for s, _ in p.answer_targets:
        parts.append(f"count(*) FILTER (WHERE answerable AND answer_s <= {int(s)}) AS ans_{int(s)}")
    for m in p.arrival_limits_min:
        parts.append(
            f"count(*) FILTER (WHERE answerable AND arrival_s <= {int(m) * 60}) AS arr_{int(m)}"
        )
    return sql.SQL(",\n ").join(sql.SQL(x) for x in parts)


def _share(n: int, d: int) -> float | None:
    return n / d if d else None


def _pct(v: list[float] | None, i: int) -> float | None:
    if not v or v[i] is None:
        return None
    return float(v[i])


def kpi_row(p: KpiParams, dimension: str, key: str, r: dict[str, Any]) -> KpiRow:
    """The figures of one group, from a row of :func:`aggregates`."""
    answerable, answered = int(r["answerable"]), int(r["answered"])
    within = {s: int(r[f"ans_{s}"]) for s, _ in p.answer_targets}
    share = {s: _share(within[s], answerable) for s, _ in p.answer_targets}
    meets: dict[int, bool | None] = {}
    for s, t in p.answer_targets:
        v = share[s]
        meets[s] = None if v is None else v >= t
    arrived = int(r["arrived"])
    arr_within = {m: int(r[f"arr_{m}"]) for m in p.arrival_limits_min}
    return KpiRow(
        dimension=dimension,
        key=key,
        alerts=int(r["alerts"]),
        suppressed=int(r["suppressed"]),
        cancelled=int(r["cancelled"]),
        answerable=answerable,
        answered=answered,
        unanswered=answerable - answered,
        answer_p50=_pct(r["answer_pct"], 0),
        answer_p90=_pct(r["answer_pct"], 1),
        answer_p99=_pct(r["answer_pct"], 2),
        answered_within=within,
        share_within=share,
        meets_target=meets,
        arrived=arrived,
        arrival_p50=_pct(r["arrival_pct"], 0),
        arrival_p90=_pct(r["arrival_pct"], 1),
        arrival_p99=_pct(r["arrival_pct"], 2),
        arrival_within=arr_within,
        arrival_share_within={m: _share(arr_within[m], arrived) for m in p.arrival_limits_min},
        resolved=int(r["resolved"]),
        resolve_p50=_pct(r["resolve_pct"], 0),
        resolve_p90=_pct(r["resolve_pct"], 1),
        resolve_p99=_pct(r["resolve_pct"], 2),
        closed=int(r["closed"]),
        false_alarms=int(r["false_alarms"]),
        false_alarm_share=_share(int(r["false_alarms"]), int(r["closed"])),
        not_at_home=int(r["not_at_home"]),
    )


def calendar_period(dimension: str, key: str, timezone: str) -> tuple[datetime, datetime]:
    """The local start and end of a ``week`` (2026-W05) or ``month`` (2026-02) key."""
    zone = ZoneInfo(timezone)
    if dimension == "week":
        y, w = key.split("-W")
        d0 = date.fromisocalendar(int(y), int(w), 1)
        d1 = d0 + timedelta(days=7)
    elif dimension == "month":
        y, m = key.split("-")
        d0 = date(int(y), int(m), 1)
        d1 = date(d0.year + d0.month // 12, d0.month % 12 + 1, 1)
    else:
        raise ValueError(f"{dimension} is not a calendar period")
    return (
        datetime(d0.year, d0.month, d0.day, tzinfo=zone),
        datetime(d1.year, d1.month, d1.day, tzinfo=zone),
    )


def coverage(p: KpiParams, dimension: str, key: str) -> tuple[float, float]:
    """(days of the week or month inside ``[p.start, p.end)``, days it has), counted
    on the local wall clock."""
    zone = ZoneInfo(p.timezone)
    t0, t1 = calendar_period(dimension, key, p.timezone)

    def wall(t: datetime) -> datetime:
        return t.astimezone(zone).replace(tzinfo=None)

    full = (wall(t1) - wall(t0)).total_seconds() / 86400
    lo = max(wall(t0), wall(p.start))
    hi = min(wall(t1), wall(p.end))
    return max((hi - lo).total_seconds() / 86400, 0.0), full
