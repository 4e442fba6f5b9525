"""``trygg report``, ``trygg audit ...`` and ``trygg db retention``.

Mounted by trygg.cli: ``app.command("report")(report_command)``,
``app.add_typer(audit_app, name="audit")`` and
``db_app.command("retention")(retention_command)``. ``trygg report``'s pages
run in trygg.audit.a3_cli and trygg.audit.deviations_cli; the ``trygg audit``
commands live in verify_cli, fhir_cli and exception_cli, mounted here; what
they share, in cli_common.
"""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from trygg.audit.a3_cli import a3_command
from trygg.audit.cli_common import (
    FromOpt,
    LangOpt,
    TeamOpt,
    ToOpt,
    check_lang,
    connect,
    period,
    settings_for,
    stage_progress,
    write_out,
)
from trygg.audit.deviations_cli import deviations_command
from trygg.audit.exception_cli import exception_add, exception_list
from trygg.audit.fhir_cli import export_fhir_command
from trygg.audit.verify_cli import anchor_command, verify_command
from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import fail as _fail

audit_app = typer.Typer(
    help="The audit trail: verify, export to VKP, exception reports.", no_args_is_help=True
)
exception_app = typer.Typer(
    help="Exception reports for alerts that breached a target.", no_args_is_help=True
)
audit_app.add_typer(exception_app, name="exception")
audit_app.command("verify")(verify_command)
audit_app.command("anchor")(anchor_command)
audit_app.command("export-fhir")(export_fhir_command)
exception_app.command("add")(exception_add)
exception_app.command("list")(exception_list)


A3 = "A3 improvement page (trygg report a3)"
DEV = "Deviation report (trygg report deviations)"


def report_command(
    page: str | None = typer.Argument(
        None,
        metavar="[a3|deviations]",
        help="a3: the A3 improvement page for one rule (--rule) instead of the report;"
        " deviations: each district's deviations from the city standard",
    ),
    start: str = FromOpt,
    end: str = ToOpt,
    team: str | None = TeamOpt,
    site: bool = typer.Option(False, "--site", help="the whole site (all teams)"),
    fmt: str = typer.Option("html", "--format", help="csv, json or html"),
    out: Path | None = typer.Option(None, "--out", help="output file (default: stdout)"),
    progress: bool = typer.Option(
        False,
        "--progress",
        help="progress on stderr even if not a terminal (there: a line every 5 s)",
    ),
    by: str | None = typer.Option(None, "--by", help="who asks (for the access log)"),
    per: str | None = typer.Option(
        None,
        "--per",
        help="district: the figures of each district side by side (also per district and rule"
        " in CSV and JSON)",
    ),
    lang: str = LangOpt,
    rule: str | None = typer.Option(None, "--rule", help="the rule", rich_help_panel=A3),
    candidate: list[Path] = typer.Option(
        [],
        "--candidate",
        help="the candidate catalogue to back-test: rule files or directories, read in order"
        " (repeatable, like trygg rules backtest)",
        rich_help_panel=A3,
    ),
    rules: list[Path] = typer.Option(
        [],
        "--rules",
        help="the current catalogue (repeatable; default: the active stored version, else"
        " TRYGG_RULES_DIR or the repository's rules/)",
        rich_help_panel=A3,
    ),
    shadow_from: str | None = typer.Option(
        None,
        "--shadow-from",
        help="first day of the planned shadow run (default: next Monday)",
        rich_help_panel=A3,
    ),
    shadow_weeks: int = typer.Option(
        4, "--shadow-weeks", min=1, max=26, help="weeks of shadow run", rich_help_panel=A3
    ),
    pdf: Path | None = typer.Option(
        None,
        "--pdf",
        help="also print the page to this PDF (headless Chromium)",
        rich_help_panel=A3,
    ),
    chromium: str | None = typer.Option(
        None,
        "--chromium",
        help="the Chromium to print with (default: from PATH)",
        rich_help_panel=A3,
    ),
    district: str | None = typer.Option(
        None, "--district", help="only this district", rich_help_panel=DEV
    ),
    districts: list[Path] = typer.Option(
        [],
        "--districts",
        help="the district overlays (default: districts/ beside the rules, if it exists)",
        rich_help_panel=DEV,
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Response-time report for a period: KPIs against the targets, plots, exceptions.

    The HTML report is in Bokmål unless --lang en; CSV and JSON are the same in
    both (English keys, raw figures).

    `trygg report a3 --rule R [--team T] --from --to [--candidate DIR]` writes
    the A3 improvement page for one rule instead: one printable A3 landscape
    sheet (background, current condition, analysis, the candidate's back-test,
    the follow-up plan).

    `trygg report deviations [--district D] --from --to [--format html|csv|json]`
    writes the deviation report: every rule's city value, each district's value
    and reason, care plans per district and the district's alert figures side
    by side; changes without a reason and outliers marked."""
    if by == "district":  # the issue's `--by district`: --by is who asks, everywhere in trygg
        raise typer.BadParameter(
            "--by is who asks (for the access log); for the figures per district use"
            " --per district",
            param_hint="--by",
        )
    if per is not None and (per != "district" or page is not None):
        raise typer.BadParameter(
            "--per district is the one grouping, for the response-time report", param_hint="--per"
        )
    if page == "deviations":
        deviations_command(
            start=start,
            end=end,
            district=district,
            districts=districts,
            rules=rules,
            fmt=fmt,
            out=out,
            lang=lang,
            by=by,
            config=config,
            database_url=database_url,
        )
        return
    if district or districts:
        raise typer.BadParameter(
            "--district and --districts are for `trygg report deviations`", param_hint="--district"
        )
    if page is not None:
        if page != "a3":
            raise typer.BadParameter(
                f"{page!r}: the pages are a3 and deviations", param_hint="[a3|deviations]"
            )
        if fmt != "html":
            raise typer.BadParameter(
                "the A3 page is HTML (and PDF with --pdf)", param_hint="--format"
            )
        a3_command(
            rule=rule,
            start=start,
            end=end,
            team=team,
            out=out,
            lang=lang,
            candidate=candidate,
            rules=rules,
            shadow_from=shadow_from,
            shadow_weeks=shadow_weeks,
            pdf=pdf,
            chromium=chromium,
            progress=progress,
            by=by,
            config=config,
            database_url=database_url,
        )
        return
    for given, name in (
        (rule, "--rule"),
        (candidate, "--candidate"),
        (rules, "--rules"),
        (shadow_from, "--shadow-from"),
        (pdf, "--pdf"),
        (chromium, "--chromium"),
    ):
        if given:
            raise typer.BadParameter(f"{name} is for `trygg report a3`", param_hint=name)
    from trygg.audit.report import STAGES, ReportOptions, build_report
    from trygg.audit.report_csv_json import to_csv, to_json
    from trygg.audit.report_html import PLOT_STAGES, add_plots, to_html
    from trygg.store.access_log import log_access

    if fmt not in ("csv", "json", "html"):
        raise typer.BadParameter("--format is csv, json or html")
    if team and site:
        raise typer.BadParameter("--team and --site exclude each other")
    lang = check_lang(lang)
    s = settings_for(config, database_url)
    t1, t2 = period(start, end, s.report_timezone)
    opts = ReportOptions(
        start=t1,
        end=t2,
        team=team,
        site=s.site if not team else None,
        timezone=s.report_timezone,
        target60=s.target_answer_60s,
        target180=s.target_answer_180s,
        exception_answer_s=s.exception_answer_s,
        exception_arrival_min=s.exception_arrival_min,
        lang=lang,
        per=per,
    )
    show = progress or sys.stderr.isatty()
    stages = len(STAGES) + (len(PLOT_STAGES) + 1 if fmt == "html" else 1)
    with connect(s.database_url) as conn, stage_progress(show, stages, "report") as tick:
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
                "per": per,
                "exceptions": len(rep.exceptions),
            },
        )
    write_out(text, out)
    if out is not None:
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


def retention_command(
    set_policy: bool = typer.Option(
        False,
        "--set-policy",
        help="first make the TRYGG_RETENTION_* settings the database's policy (the owner only)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = DatabaseUrlOpt,
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

    s = settings_for(config, database_url)
    with connect(s.database_url) as conn:
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
