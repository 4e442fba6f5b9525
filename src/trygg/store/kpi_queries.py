"""The KPI queries: the figures of trygg.store.kpi grouped and reported.

All groups of a period in one pass (GROUPING SETS), per district, the answer
times for the distribution plot, the residents with the most alerts, the alerts
that breached a target, and the A3 page's breakdown and stored alerts. Each
starts from the per-alert ``base`` of :func:`trygg.store.kpi.base_cte`; shadow
alerts are excluded everywhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from trygg.store.kpi import DIMENSIONS, KpiParams, KpiRow, aggregates, base_cte, coverage, kpi_row
from trygg.store.migrate import has_timescaledb


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
    ).format(cte=cte, aggs=aggregates(p))
    rows: list[KpiRow] = []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q, params)
        for r in cur.fetchall():
            g = int(r["g"])
            # grouping() bits, leftmost argument = most significant: 0 marks the grouped column
            dims = ("team", "rule", "severity", "hour", "week", "month")
            grouped = [d for i, d in enumerate(dims) if not (g >> (len(dims) - 1 - i)) & 1]
            if not grouped:
                rows.append(kpi_row(p, "all", "all", r))
            else:
                d = grouped[0]
                rows.append(kpi_row(p, d, str(r[d]), r))
    order = {d: i for i, d in enumerate(DIMENSIONS)}

    def sort_key(k: KpiRow) -> tuple[int, Any]:
        return (order[k.dimension], int(k.key) if k.dimension == "hour" else k.key)

    rows.sort(key=sort_key)
    for k in rows:
        if k.dimension in ("week", "month"):
            k.days, full = coverage(p, k.dimension, k.key)
            k.partial = k.days < full
    return rows


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
    ).format(cte=cte, aggs=aggregates(p))
    rows: list[KpiRow] = []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q, params)
        for r in cur.fetchall():
            if int(r["g"]) == 1:  # rule not grouped: the district as a whole
                rows.append(kpi_row(p, "district", str(r["district"]), r))
            else:
                k = kpi_row(p, "district_rule", f"{r['district']}/{r['rule']}", r)
                k.extra = {"district": str(r["district"]), "rule": str(r["rule"])}
                rows.append(k)
    return rows
