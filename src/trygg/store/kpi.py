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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

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


def has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    """True when the timescaledb extension is installed in this database."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
    ).fetchone()
    return bool(row and row[0])


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


def _aggregates(p: KpiParams) -> sql.Composable:
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


def _row(p: KpiParams, dimension: str, key: str, r: dict[str, Any]) -> KpiRow:
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


def compute_kpis(conn: psycopg.Connection[Any], p: KpiParams) -> list[KpiRow]:
    """All groups in one pass (GROUPING SETS); the ``all`` row comes first."""
    tsdb = has_timescaledb(conn)
    cte, params = base_cte(p, tsdb)
    q = sql.SQL(
        """
        WITH {cte}
        SELECT grouping(team, rule, severity, hour, week, month) AS g,
               team, rule, severity, hour,
               to_char(week AT TIME ZONE %(tz)s, 'IYYY-"W"IW') AS week,
               to_char(month AT TIME ZONE %(tz)s, 'YYYY-MM') AS month,
               {aggs}
          FROM base
         GROUP BY GROUPING SETS ((), (team), (rule), (severity), (hour), (week), (month))
        """
    ).format(cte=cte, aggs=_aggregates(p))
    rows: list[KpiRow] = []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q, params)
        for r in cur.fetchall():
            g = int(r["g"])
            # grouping() bits, leftmost argument = most significant: 0 marks the grouped column
            dims = ("team", "rule", "severity", "hour", "week", "month")
            grouped = [d for i, d in enumerate(dims) if not (g >> (len(dims) - 1 - i)) & 1]
            if not grouped:
                rows.append(_row(p, "all", "all", r))
            else:
                d = grouped[0]
                rows.append(_row(p, d, str(r[d]), r))
    order = {d: i for i, d in enumerate(DIMENSIONS)}

    def sort_key(k: KpiRow) -> tuple[int, Any]:
        return (order[k.dimension], int(k.key) if k.dimension == "hour" else k.key)

    rows.sort(key=sort_key)
    for k in rows:
        if k.dimension in ("week", "month"):
            k.days, full = coverage(p, k.dimension, k.key)
            k.partial = k.days < full
    return rows


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


def answer_times(conn: psycopg.Connection[Any], p: KpiParams) -> list[float]:
    """Answer times (s) of the answered answerable alerts, for the distribution plot."""
    cte, params = base_cte(p, has_timescaledb(conn))
    q = sql.SQL(
        "WITH {} SELECT answer_s FROM base WHERE answerable AND answer_s IS NOT NULL"
        " ORDER BY answer_s"
    ).format(cte)
    return [float(r[0]) for r in conn.execute(q, params).fetchall()]


def top_residents(
    conn: psycopg.Connection[Any], p: KpiParams, limit: int = 10
) -> list[dict[str, Any]]:
    """Residents (pseudonyms) with the most alerts in the period, with their false
    alarms and the alerts where staff found nobody at home."""
    cte, params = base_cte(p, has_timescaledb(conn))
    params["limit"] = limit
    q = sql.SQL(
        "WITH {} SELECT resident, min(team) AS team, count(*) AS alerts,"
        " count(*) FILTER (WHERE outcome IN ('false_alarm', 'no_help_needed')) AS false_alarms,"
        " count(*) FILTER (WHERE outcome = 'not_at_home') AS not_at_home"
        " FROM base GROUP BY resident ORDER BY alerts DESC, resident LIMIT %(limit)s"
    ).format(cte)
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(q, params).fetchall())


def exceptions(
    conn: psycopg.Connection[Any],
    p: KpiParams,
    *,
    answer_limit_s: int = 180,
    arrival_limit_min: int = 60,
    now: datetime,
) -> list[dict[str, Any]]:
    """Alerts that breached a target, each with its breaches, timeline and reports.

    Breaches: ``answer`` (answerable, not answered within ``answer_limit_s``),
    ``arrival`` (arrived later than ``arrival_limit_min``), ``completion`` (red
    or yellow, not resolved or cancelled by the end of its local day, once
    that day is over at ``now``). Suppressed and shadow alerts are not listed.
    """
    cte, params = base_cte(p, has_timescaledb(conn))
    params.update(ans=answer_limit_s, arr=arrival_limit_min * 60, now=now)
    q = sql.SQL(
        """
        WITH {cte},
        flagged AS (
            SELECT b.*,
                   (((b.raised AT TIME ZONE %(tz)s)::date + 1)::timestamp AT TIME ZONE %(tz)s)
                       AS day_end
              FROM base b WHERE NOT b.suppressed
        )
        SELECT id::text AS id, team, rule, code, severity, resident, raised, ack, arrived,
               resolved, cancelled, answer_s, arrival_s, resolve_s, outcome, day_end,
               (answerable AND (answer_s IS NULL OR answer_s > %(ans)s)) AS answer_breach,
               (arrival_s > %(arr)s) AS arrival_breach,
               (severity IN ('red', 'yellow') AND %(now)s > day_end
                AND coalesce(resolved, cancelled, %(now)s) > day_end) AS completion_breach
          FROM flagged
         WHERE (answerable AND (answer_s IS NULL OR answer_s > %(ans)s))
            OR arrival_s > %(arr)s
            OR (severity IN ('red', 'yellow') AND %(now)s > day_end
                AND coalesce(resolved, cancelled, %(now)s) > day_end)
         ORDER BY raised, id
        """
    ).format(cte=cte)
    with conn.cursor(row_factory=dict_row) as cur:
        items = list(cur.execute(q, params).fetchall())
        if not items:
            return []
        ids = [i["id"] for i in items]
        recs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for r in cur.execute(
            "SELECT alert_id::text AS alert_id, id, step, at, actor, note, data"
            " FROM alert_records WHERE alert_id = ANY(%s::uuid[]) ORDER BY alert_id, at, id",
            [ids],
        ):
            recs[r.pop("alert_id")].append(r)
        reps: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for r in cur.execute(
            "SELECT alert_id::text AS alert_id, id, kind, cause, action, outcome, recorded_by,"
            " recorded_at FROM alert_exceptions WHERE alert_id = ANY(%s::uuid[])"
            " ORDER BY alert_id, id",
            [ids],
        ):
            reps[r.pop("alert_id")].append(r)
    for it in items:
        it["breaches"] = [k for k in ("answer", "arrival", "completion") if it.pop(f"{k}_breach")]
        it["records"] = recs[it["id"]]
        it["notes"] = [r["note"] for r in recs[it["id"]] if r["note"]]
        it["reports"] = reps[it["id"]]
    return items


BREAKDOWN_DIMENSIONS = ("outcome", "hour", "team", "device_kind", "resident")


def _classified(cte: sql.Composable) -> sql.Composable:
    """``classified``: ``base`` with the device's kind and an outcome group for every
    alert: ``suppressed``, ``open``, the outcome, else ``cancelled:<reason>``.

    The device is the alert's own, else the one that sent its first causing
    event (a sequence or absence rule names no device; the event is looked up
    by resident and time, within two days before the alert)."""
    return sql.SQL(
        """
        WITH {cte},
        classified AS (
            SELECT b.*, coalesce(d.kind, '') AS device_kind,
                   (NOT b.suppressed AND (b.resolved IS NOT NULL OR b.cancelled IS NOT NULL))
                       AS closed,
                   CASE WHEN b.suppressed THEN 'suppressed'
                        WHEN b.resolved IS NULL AND b.cancelled IS NULL THEN 'open'
                        WHEN b.outcome IS NOT NULL THEN b.outcome
                        WHEN b.cancelled IS NOT NULL THEN 'cancelled:' || coalesce((
                            SELECT c.data ->> 'reason' FROM alert_records c
                             WHERE c.alert_id = b.id AND c.step = 'cancelled'
                             ORDER BY c.at, c.id LIMIT 1), '?')
                        ELSE 'unknown'
                   END AS outcome_group
              FROM base b
              LEFT JOIN devices d ON d.id = coalesce(b.device, (
                    SELECT e.device FROM events e
                     WHERE e.resident = b.resident AND e.event_id = b.first_event
                       AND e.time <= b.raised_at AND e.time > b.raised_at - interval '2 days'
                     LIMIT 1))
        )
        """
    ).format(cte=cte)


def breakdown(conn: psycopg.Connection[Any], p: KpiParams) -> dict[str, list[dict[str, Any]]]:
    """Where the alerts of the period come from and what they were, for the A3 page.

    Grouped by outcome group (``suppressed``, ``open``, an outcome, or
    ``cancelled:<reason>``), local hour, team, device kind and resident; each
    group with its alerts, closed alerts, false alarms (outcome
    ``false_alarm`` or ``no_help_needed``, as in the KPIs), ``not_at_home``,
    call-outs (answerable alerts with an ``arrived`` record), answerable
    alerts, those answered within each answer target and its residents.
    Rows of a dimension are ordered by alerts, most first (hours by hour).
    """
    cte, params = base_cte(p, has_timescaledb(conn))
    within = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE answerable AND answer_s <= {s}) AS {name}").format(
            s=sql.Literal(int(s)), name=sql.Identifier(f"within_{int(s)}")
        )
        for s, _ in p.answer_targets
    )
    q = _classified(cte) + sql.SQL(
        """
        SELECT grouping(outcome_group, hour, team, device_kind, resident) AS g,
               outcome_group, hour, team, device_kind, resident,
               count(*) AS alerts,
               count(*) FILTER (WHERE closed) AS closed,
               count(*) FILTER (WHERE closed AND outcome IN ('false_alarm', 'no_help_needed'))
                   AS false_alarms,
               count(*) FILTER (WHERE closed AND outcome = 'not_at_home') AS not_at_home,
               count(arrived) FILTER (WHERE answerable) AS callouts,
               count(*) FILTER (WHERE answerable) AS answerable,
               {within},
               count(DISTINCT resident) AS residents
          FROM classified
         GROUP BY GROUPING SETS ((outcome_group), (hour), (team), (device_kind), (resident))
        """
    ).format(within=within)
    cols = ("outcome_group", "hour", "team", "device_kind", "resident")
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in BREAKDOWN_DIMENSIONS}
    with conn.cursor(row_factory=dict_row) as cur:
        for r in cur.execute(q, params).fetchall():
            g = int(r.pop("g"))
            i = next(i for i in range(len(cols)) if not (g >> (len(cols) - 1 - i)) & 1)
            row = {k: v for k, v in r.items() if k not in cols}
            row["key"] = r[cols[i]]
            out[BREAKDOWN_DIMENSIONS[i]].append(row)
    for d, rows in out.items():
        if d == "hour":
            rows.sort(key=lambda x: int(x["key"]))
        else:
            rows.sort(key=lambda x: (-int(x["alerts"]), str(x["key"])))
    return out


def stored_alerts(conn: psycopg.Connection[Any], p: KpiParams) -> list[dict[str, Any]]:
    """The (non-shadow) alerts of the period, in raise order, with their causing
    events, device, outcome group (see :func:`breakdown`) and first arrival:
    what a candidate catalogue is compared with on the A3 page."""
    cte, params = base_cte(p, has_timescaledb(conn))
    q = _classified(cte) + sql.SQL(
        """
        SELECT c.id::text AS alert_id, c.rule, c.resident, c.team, c.raised_at, a.events,
               c.device, c.device_kind, c.outcome_group, c.suppressed, c.arrived AS arrived_at,
               c.resolved IS NOT NULL AS resolved
          FROM classified c JOIN alerts a ON a.id = c.id
         ORDER BY c.raised_at, c.id
        """
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(q, params).fetchall())


def district_kpis(conn: psycopg.Connection[Any], p: KpiParams) -> list[KpiRow]:
    """The figures per district, and per district and rule (``dimension``
    ``district`` with key the district; ``district_rule`` with ``extra`` holding
    ``district`` and ``rule``): the alerts' team's district (schema 9, table
    ``teams``); a team not listed there is in the district ``default``."""
    tsdb = has_timescaledb(conn)
    cte, params = base_cte(p, tsdb)
    q = sql.SQL(
        """
        WITH {cte},
        by_district AS (
            SELECT b.*, coalesce(t.district, 'default') AS district
              FROM base b LEFT JOIN teams t ON t.id = b.team
        )
        SELECT grouping(district, rule) AS g, district, rule, {aggs}
          FROM by_district
         GROUP BY GROUPING SETS ((district), (district, rule))
         ORDER BY district, rule NULLS FIRST
        """
    ).format(cte=cte, aggs=_aggregates(p))
    rows: list[KpiRow] = []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q, params)
        for r in cur.fetchall():
            if int(r["g"]) == 1:  # rule not grouped: the district as a whole
                rows.append(_row(p, "district", str(r["district"]), r))
            else:
                k = _row(p, "district_rule", f"{r['district']}/{r['rule']}", r)
                k.extra = {"district": str(r["district"]), "rule": str(r["rule"])}
                rows.append(k)
    return rows
