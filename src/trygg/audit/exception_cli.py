"""``trygg audit exception add`` and ``list``: the exception reports of alerts
that breached a target (the cause and action recorded, and the breaches listed).
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from trygg.audit.cli_common import FromOpt, TeamOpt, ToOpt, connect, parse_when, settings_for
from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import fail as _fail


def exception_add(
    alert_id: str = typer.Argument(..., help="the alert's id"),
    cause: str = typer.Option(..., "--cause", help="why the target was missed"),
    action: str = typer.Option(..., "--action", help="what was done about it"),
    by: str = typer.Option(..., "--by", help="who records it"),
    kind: str = typer.Option("answer", "--kind", help="answer, arrival, completion or other"),
    outcome: str | None = typer.Option(None, "--outcome", help="the outcome for the resident"),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Record the cause and action for an alert that breached a target."""
    from trygg.store.audit import EXCEPTION_KINDS, add_exception, alert_exists

    if kind not in EXCEPTION_KINDS:
        raise typer.BadParameter(f"--kind is one of {', '.join(EXCEPTION_KINDS)}")
    s = settings_for(config, database_url)
    with connect(s.database_url) as conn:
        if not alert_exists(conn, alert_id):
            _fail(f"no alert {alert_id}")
        rid = add_exception(
            conn,
            alert_id=alert_id,
            kind=kind,
            cause=cause,
            action=action,
            recorded_by=by,
            outcome=outcome,
        )
    typer.echo(f"recorded exception report {rid} for alert {alert_id}")


def exception_list(
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    missing: bool = typer.Option(False, "--missing", help="only breaches without a report"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Alerts that breached a target in the period, with their reports."""
    from trygg.store.kpi import KpiParams
    from trygg.store.kpi_queries import exceptions

    s = settings_for(config, database_url)
    p = KpiParams(
        parse_when(start, s.report_timezone),
        parse_when(end, s.report_timezone),
        team,
        s.report_timezone,
    )
    with connect(s.database_url) as conn:
        items = exceptions(
            conn,
            p,
            answer_limit_s=s.exception_answer_s,
            arrival_limit_min=s.exception_arrival_min,
            now=datetime.now(UTC),
        )
    if missing:
        items = [i for i in items if not i["reports"]]
    zone = ZoneInfo(s.report_timezone)
    rows = [
        {
            "alert": i["id"],
            "raised": i["raised"].astimezone(zone).isoformat(),
            "team": i["team"],
            "rule": i["rule"],
            "severity": i["severity"],
            "breaches": ",".join(i["breaches"]),
            "answer_s": None if i["answer_s"] is None else round(i["answer_s"], 1),
            "arrival_min": None if i["arrival_s"] is None else round(i["arrival_s"] / 60, 1),
            "reports": len(i["reports"]),
            "cause": "; ".join(r["cause"] for r in i["reports"]),
            "action": "; ".join(r["action"] for r in i["reports"]),
        }
        for i in items
    ]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=1, ensure_ascii=False))
    elif fmt == "csv":
        w = csv.DictWriter(
            sys.stdout, fieldnames=list(rows[0]) if rows else ["alert"], lineterminator="\n"
        )
        w.writeheader()
        w.writerows(rows)
    else:
        for r in rows:
            typer.echo(
                f"{_local_text(r['raised'])}  {r['alert']}  {r['team']:<16} {r['rule']:<20}"
                f" {r['breaches']:<22} reports: {r['reports']}"
            )
        typer.echo(f"{len(rows)} alerts", err=True)


def _local_text(iso: str) -> str:
    """2026-03-10T13:00:00+01:00 -> 2026-03-10 13:00:00 +01:00 (local time, its offset)."""
    t = datetime.fromisoformat(iso)
    off = t.strftime("%z")
    return t.strftime("%Y-%m-%d %H:%M:%S") + f" {off[:3]}:{off[3:]}"
