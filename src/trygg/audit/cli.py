"""``trygg report``, ``trygg audit ...`` and ``trygg db retention``.

Mounted by trygg.cli: ``app.command("report")(report_command)``,
``app.add_typer(audit_app, name="audit")`` and
``db_app.command("retention")(retention_command)``.
"""

from __future__ import annotations

import csv
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import typer

from trygg import times
from trygg.cli_support import ConfigOpt, settings_or_exit
from trygg.cli_support import fail as _fail
from trygg.settings import Settings

audit_app = typer.Typer(
    help="The audit trail: verify, export to VKP, exception reports.", no_args_is_help=True
)
exception_app = typer.Typer(
    help="Exception reports for alerts that breached a target.", no_args_is_help=True
)
audit_app.add_typer(exception_app, name="exception")

DbOpt = typer.Option(None, "--database-url", help="overrides TRYGG_DATABASE_URL")
FromOpt = typer.Option(..., "--from", help="start (ISO date or time; a date is local midnight)")
ToOpt = typer.Option(..., "--to", help="end, exclusive (ISO date or time)")
TeamOpt = typer.Option(None, "--team", help="only this team")
LangOpt = typer.Option("nb", "--lang", help="language of the page: nb (Bokmål) or en (English)")


def _lang(lang: str) -> str:
    from trygg.locale import check_language

    try:
        return check_language(lang)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--lang") from None


def _settings(config: Path | None, database_url: str | None) -> Settings:
    return settings_or_exit(config, database_url=database_url)


def parse_when(text: str, tz: str) -> datetime:
    """``trygg.times.parse_when``, refusing bad input as a command-line error."""
    try:
        return times.parse_when(text, tz)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    """A rich progress bar on stderr, or a no-op."""
    if not enabled:
        yield lambda _s: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)

        def tick(stage: str) -> None:
            bar.update(task, advance=1, description=f"{label}: {stage}")

        yield tick


def _connect(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        _fail(f"cannot connect to the database: {str(exc).strip()}")


def report_command(
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    site: bool = typer.Option(False, "--site", help="the whole site (all teams)"),
    fmt: str = typer.Option("html", "--format", help="csv, json or html"),
    out: Path | None = typer.Option(None, "--out", help="output file (default: stdout)"),
    progress: bool = typer.Option(False, "--progress", help="progress bar even if not a TTY"),
    by: str | None = typer.Option(None, "--by", help="who asks (for the access log)"),
    lang: str = LangOpt,
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Response-time report for a period: KPIs against the targets, plots, exceptions.

    The HTML report is in Bokmål unless --lang en; CSV and JSON are the same in
    both (English keys, raw figures)."""
    from trygg.audit.report import (
        PLOT_STAGES,
        STAGES,
        ReportOptions,
        add_plots,
        build_report,
        to_csv,
        to_html,
        to_json,
    )
    from trygg.store.audit import log_access

    if fmt not in ("csv", "json", "html"):
        raise typer.BadParameter("--format is csv, json or html")
    if team and site:
        raise typer.BadParameter("--team and --site exclude each other")
    lang = _lang(lang)
    s = _settings(config, database_url)
    opts = ReportOptions(
        start=parse_when(start, s.report_timezone),
        end=parse_when(end, s.report_timezone),
        team=team,
        site=s.site if not team else None,
        timezone=s.report_timezone,
        target60=s.target_answer_60s,
        target180=s.target_answer_180s,
        exception_answer_s=s.exception_answer_s,
        exception_arrival_min=s.exception_arrival_min,
        lang=lang,
    )
    if opts.end <= opts.start:
        raise typer.BadParameter("--to must be after --from")
    show = progress or sys.stderr.isatty()
    stages = len(STAGES) + (len(PLOT_STAGES) + 1 if fmt == "html" else 1)
    with _connect(s.database_url) as conn, _progress(show, stages, "report") as tick:
        rep = build_report(conn, opts, now=datetime.now(UTC), progress=tick)
        if fmt == "html":
            add_plots(rep, progress=tick)
            text = to_html(rep)
        else:
            text = to_csv(rep) if fmt == "csv" else to_json(rep)
        tick("written")
        log_access(
            conn,
            actor=by or getpass.getuser(),
            role="auditor",
            action="report",
            detail={
                "from": opts.start.isoformat(),
                "to": opts.end.isoformat(),
                "team": team,
                "format": fmt,
                "exceptions": len(rep.exceptions),
            },
        )
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        a = rep.overall
        typer.echo(
            f"wrote {out}: {a.alerts} alerts, {_pct(a.share_within[60])} within 60 s,"
            f" {_pct(a.share_within[180])} within 180 s, {len(rep.exceptions)} exceptions",
            err=True,
        )


def _pct(v: float | None) -> str:
    """A share within a limit: floored, never rounded up into compliance."""
    from trygg.locale import floor_share

    return "-" if v is None else f"{floor_share(v):.1f} %"


@audit_app.command("verify")
def verify_command(
    table: list[str] = typer.Option([], "--table", help="only these tables (repeatable)"),
    anchor: Path | None = typer.Option(
        None,
        "--anchor",
        help="an anchor file of `trygg audit anchor`: each chain must still reach its head",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Recompute the hash chains; report the first broken link (exit 1) if any.

    With --anchor FILE, also compare each chain with the head recorded in FILE
    outside the database: a wiped or cut-back table, or one rewritten after
    that head, is broken.
    """
    from trygg.audit.verify import AnchorFileError, check_anchor_file, read_anchor_file, verify
    from trygg.store.audit import CHAINED_TABLES

    for t in table:
        if t not in CHAINED_TABLES:
            raise typer.BadParameter(f"{t} is not chained ({', '.join(CHAINED_TABLES)})")
    doc = None
    if anchor is not None:
        try:
            doc = read_anchor_file(anchor)
        except AnchorFileError as exc:
            _fail(str(exc))
    s = _settings(config, database_url)
    with _connect(s.database_url) as conn:
        res = verify(conn, tuple(table) or CHAINED_TABLES)
        if doc is not None and anchor is not None:
            check_anchor_file(conn, res, doc, anchor.name)
            _warn_other_database(conn, doc, anchor)
    _print_verify(res)
    if not res.ok:
        raise typer.Exit(1)


def _print_verify(res: Any) -> None:
    for tr in res.tables:
        if tr.broken is None:
            typer.echo(
                f"{tr.table}: ok, {tr.rows} rows from anchor {tr.anchor};"
                f" head {tr.head_seq} {tr.head_hash[:16]}"
                + (f"; {tr.anchor_file}" if tr.anchor_file else "")
            )
        else:
            typer.echo(f"{tr.table}: BROKEN: {tr.broken}")


def _warn_other_database(conn: Any, doc: dict[str, Any], path: Path) -> None:
    row = conn.execute("SELECT current_database()").fetchone()
    if doc.get("database") and row and doc["database"] != row[0]:
        typer.echo(
            f"warning: {path.name} was written for database {doc['database']!r},"
            f" this is {row[0]!r}",
            err=True,
        )


@audit_app.command("anchor")
def anchor_command(
    out: str = typer.Option(
        ...,
        "--out",
        help="file for the heads, on another machine or medium than the database ('-': stdout)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Verify the chains and write their heads to a file outside the database.

    `trygg audit verify --anchor FILE` later checks that every chain still
    reaches the head recorded here: removing the last rows, or every row,
    leaves no gap for verify to see on its own. Refuses (exit 1) when a chain
    is broken, or when FILE exists and the database no longer reaches the
    heads it records (it is evidence: move it away first).
    """
    from trygg.audit.verify import (
        AnchorFileError,
        check_anchor_file,
        heads_document,
        read_anchor_file,
        verify,
        write_anchor_file,
    )

    s = _settings(config, database_url)
    path = None if out == "-" else Path(out)
    previous = None
    if path is not None and path.exists():
        try:
            previous = read_anchor_file(path)
        except AnchorFileError as exc:
            _fail(f"{exc}; not overwriting it")
    with _connect(s.database_url) as conn:
        res = verify(conn)
        if previous is not None and path is not None:
            check_anchor_file(conn, res, previous, path.name)
        if not res.ok:
            _print_verify(res)
            _fail("not anchoring a broken chain" + (f"; {path} left as it was" if path else ""))
        doc = heads_document(conn, res, datetime.now(UTC))
    if path is None:
        sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        return
    try:
        write_anchor_file(path, doc)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc}")
    heads = ", ".join(f"{t.table} {t.head_seq} {t.head_hash[:16]}" for t in res.tables)
    typer.echo(f"wrote the heads to {path}: {heads}")


@audit_app.command("export-fhir")
def export_fhir_command(
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    out: Path = typer.Option(..., "--out", help="a directory (one Bundle per alert) or a file"),
    validate: bool = typer.Option(False, "--validate", help="validate with fhir.resources"),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Export alerts as VKP FHIR R4 (DetectedIssue, Encounter, Composition) Bundles."""
    from trygg.audit import fhir
    from trygg.store.audit import alerts_for_export

    s = _settings(config, database_url)
    t0, t1 = parse_when(start, s.report_timezone), parse_when(end, s.report_timezone)
    with _connect(s.database_url) as conn:
        alerts = alerts_for_export(conn, t0, t1, team)
    now = datetime.now(UTC)
    as_dir = out.is_dir() or str(out).endswith("/")
    bundles: list[tuple[Path, dict[str, Any]]] = []
    if as_dir:
        out.mkdir(parents=True, exist_ok=True)
        for a in alerts:
            bundles.append((out / f"{a['id']}.json", fhir.bundle([a], now=now)))
    else:
        bundles.append((out, fhir.bundle(alerts, now=now)))
    for path, b in bundles:
        if validate:
            try:
                fhir.validate(b)
            except Exception as exc:  # pydantic's ValidationError, or a missing library
                _fail(f"{path.name}: not valid FHIR R4: {exc}")
        path.write_text(json.dumps(b, ensure_ascii=False, indent=1), encoding="utf-8")
    typer.echo(f"exported {len(alerts)} alerts in {len(bundles)} bundle(s) to {out}", err=True)


@exception_app.command("add")
def exception_add(
    alert_id: str = typer.Argument(..., help="the alert's id"),
    cause: str = typer.Option(..., "--cause", help="why the target was missed"),
    action: str = typer.Option(..., "--action", help="what was done about it"),
    by: str = typer.Option(..., "--by", help="who records it"),
    kind: str = typer.Option("answer", "--kind", help="answer, arrival, completion or other"),
    outcome: str | None = typer.Option(None, "--outcome", help="the outcome for the resident"),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Record the cause and action for an alert that breached a target."""
    from trygg.store.audit import EXCEPTION_KINDS, add_exception, alert_exists

    if kind not in EXCEPTION_KINDS:
        raise typer.BadParameter(f"--kind is one of {', '.join(EXCEPTION_KINDS)}")
    s = _settings(config, database_url)
    with _connect(s.database_url) as conn:
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


@exception_app.command("list")
def exception_list(
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    missing: bool = typer.Option(False, "--missing", help="only breaches without a report"),
    fmt: str = typer.Option("table", "--format", help="table, csv or json"),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Alerts that breached a target in the period, with their reports."""
    from trygg.store.kpi import KpiParams, exceptions

    s = _settings(config, database_url)
    p = KpiParams(
        parse_when(start, s.report_timezone),
        parse_when(end, s.report_timezone),
        team,
        s.report_timezone,
    )
    with _connect(s.database_url) as conn:
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


def retention_command(
    set_policy: bool = typer.Option(
        False,
        "--set-policy",
        help="first make the TRYGG_RETENTION_* settings the database's policy (the owner only)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DbOpt,
) -> None:
    """Apply the retention policy now (events, dead letters, alert trail, access log).

    The database removes only what its own policy allows (retention_policy,
    which the owner writes with --set-policy): settings that keep more than it
    are honoured, settings that keep less are not.
    """
    import psycopg

    from trygg.store.retention import (
        RetentionPolicy,
        run_retention,
        stored_policy,
    )
    from trygg.store.retention import (
        set_policy as store_policy,
    )

    s = _settings(config, database_url)
    with _connect(s.database_url) as conn:
        if set_policy:
            try:
                store_policy(conn, RetentionPolicy.from_settings(s))
            except psycopg.errors.InsufficientPrivilege:
                _fail("only the database owner may change the retention policy (trygg_owner)")
            kept = stored_policy(conn)
            typer.echo(
                "retention policy: "
                + ", ".join(f"{k.replace('_', ' ')} {v.days} days" for k, v in sorted(kept.items()))
            )
        res = run_retention(conn, s, datetime.now(UTC))
    typer.echo(res.summary())
