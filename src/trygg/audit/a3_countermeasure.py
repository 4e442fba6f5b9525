"""The A3 page's countermeasure: a candidate catalogue back-tested on the
stored events of the page's period (``trygg.tuning.backtest``, the engine of
``trygg rules backtest``), and what would have become of each stored alert of
the rule, by what it turned out to be.
"""

from __future__ import annotations

from typing import Any

import psycopg

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.audit.a3 import A3Options, Countermeasure, OutcomeImpact
from trygg.rules.catalogue import Catalogue
from trygg.store import kpi_queries as kpi_sql
from trygg.tuning.backtest import (
    DELAYED,
    EARLIER,
    MISSED,
    IncidentImpact,
    RecordedIncident,
    RuleDiff,
    RuleRecord,
    backtest,
)


def rule_changes(current: Catalogue, candidate: Catalogue, rule: str) -> list[tuple[str, Any, Any]]:
    """The fields of ``rule`` that differ between the catalogues (its merged spec)."""
    a = current.raw.get(rule) or {}
    b = candidate.raw.get(rule) or {}
    skip = {"rule", "description", "reason", "nb", "title", "override"}
    out = []
    for k in sorted(set(a) | set(b)):
        if k in skip:
            continue
        if a.get(k) != b.get(k):
            out.append((k, a.get(k), b.get(k)))
    if rule in current.raw and rule not in candidate.raw:
        out.append(("rule", rule, None))
    return out


def countermeasure(
    conn: psycopg.Connection[Any],
    opts: A3Options,
    current: Catalogue,
    candidate: Catalogue,
) -> Countermeasure:
    from trygg.store import history
    from trygg.store.registry import load_registry

    registry = load_registry(conn)
    residents = None
    teams = [opts.team] if opts.team else None
    if opts.team:
        residents = [r.id for r in registry.residents if r.team == opts.team]
    stored = [a for a in kpi_sql.stored_alerts(conn, opts.params()) if not a["suppressed"]]
    outcome_of = {a["alert_id"]: a["outcome_group"] for a in stored}
    incidents = [
        RecordedIncident(
            alert_id=a["alert_id"],
            rule=a["rule"],
            resident=a["resident"],
            team=a["team"],
            raised_at=a["raised_at"],
            events=tuple(a["events"] or ()),
            arrived_at=a["arrived_at"],
            device=a["device"],
        )
        for a in stored
    ]
    real = {a["alert_id"] for a in stored if a["resolved"] and a["arrived_at"] is not None}
    records = [RuleRecord(**r) for r in history.alert_outcomes(conn, opts.start, opts.end, teams)]
    stream = history.EventStream(
        conn,
        registry,
        opts.start - opts.warmup,
        opts.end + opts.match_window,
        residents=residents,
        name="trygg_a3_history",
    )
    res = backtest(
        stream,
        registry,
        current,
        candidate,
        start=opts.start,
        end=opts.end,
        until=opts.end + opts.match_window,
        incidents=incidents,
        records=records,
        teams=teams,
        match_window=opts.match_window,
    )
    diff = res.rules.get(opts.rule) or RuleDiff(opts.rule)
    impacts: dict[str, OutcomeImpact] = {}
    missed_real: list[tuple[IncidentImpact, str]] = []
    delayed_real: list[tuple[IncidentImpact, str]] = []
    for imp in res.incidents:
        group = outcome_of[imp.incident.alert_id]
        oi = impacts.setdefault(group, OutcomeImpact(group))
        oi.stored += 1
        if imp.status == MISSED:
            oi.missed += 1
        elif imp.status == DELAYED:
            oi.delayed += 1
            oi.delay_total_s += imp.delay_s or 0.0
        elif imp.status == EARLIER:
            oi.earlier += 1
        else:
            oi.kept += 1
        if imp.incident.alert_id in real and group not in FALSE_OUTCOMES:
            if imp.status == MISSED:
                missed_real.append((imp, group))
            elif imp.status == DELAYED:
                delayed_real.append((imp, group))
    order = {o: i for i, o in enumerate(("helped", "not_at_home", "no_help_needed", "false_alarm"))}
    others = [
        d for r, d in res.rules.items() if r != opts.rule and (d.added or d.removed or d.shifted)
    ]
    return Countermeasure(
        current_version=current.version,
        candidate_version=candidate.version,
        candidate_paths=[str(x) for x in opts.candidate_paths],
        changes=rule_changes(current, candidate, opts.rule),
        result=res,
        diff=diff,
        impacts=sorted(impacts.values(), key=lambda i: (order.get(i.outcome, 9), i.outcome)),
        missed_real=missed_real,
        delayed_real=delayed_real,
        other_rules=others,
        callouts_per_week=sum(t.callouts_per_week for t in res.by_team.values()),
        weeks=res.weeks,
    )
