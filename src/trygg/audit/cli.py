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
from trygg.progress import wanted
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
    """Progress by stages on stderr (trygg.progress: a bar on a terminal, else a
    line every 5 s), or a no-op; ``tick(stage)`` after each stage."""
    from trygg.progress import progress

    with progress(label, total, unit="stages", enabled=enabled, rate=False) as bar:
        yield lambda stage: bar.advance(1, note=stage)


def _connect(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        _fail(f"cannot connect to the database: {str(exc).strip()}")


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
    database_url: str | None = DbOpt,
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
        per=per,
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
                "per": per,
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


def a3_command(
    *,
    rule: str | None,
    start: str,
    end: str,
    team: str | None,
    out: Path | None,
    lang: str,
    candidate: list[Path],
    rules: list[Path],
    shadow_from: str | None,
    shadow_weeks: int,
    pdf: Path | None,
    chromium: str | None,
    progress: bool | None,
    by: str | None,
    config: Path | None,
    database_url: str | None,
) -> None:
    """`trygg report a3`: the A3 improvement page for one rule (trygg.audit.a3)."""
    import tempfile

    import psycopg

    from trygg.audit.a3 import A3Options
    from trygg.audit.a3_build import build_a3
    from trygg.audit.a3_render import chromium_pdf, to_html
    from trygg.rules.catalogue import CatalogueError, default_rules_dir, load_catalogue
    from trygg.rules.engine import CarePlanError
    from trygg.store.audit import log_access

    if not rule:
        raise typer.BadParameter("the A3 page is for one rule: give --rule", param_hint="--rule")
    lang = _lang(lang)
    s = _settings(config, database_url)
    t1, t2 = parse_when(start, s.report_timezone), parse_when(end, s.report_timezone)
    if t2 <= t1:
        raise typer.BadParameter("--to must be after --from")
    first = None
    if shadow_from:
        first = parse_when(shadow_from, s.report_timezone).date()
    try:
        cand = load_catalogue(candidate) if candidate else None
        given = load_catalogue(rules) if rules else None
    except CatalogueError as exc:
        _fail("the catalogue does not load:\n  " + "\n  ".join(exc.problems))
    opts = A3Options(
        rule=rule,
        start=t1,
        end=t2,
        team=team,
        timezone=s.report_timezone,
        target60=s.target_answer_60s,
        target180=s.target_answer_180s,
        lang=lang,
        shadow_from=first,
        shadow_weeks=shadow_weeks,
        candidate_paths=candidate,
    )
    show = progress or sys.stderr.isatty()
    with _connect(s.database_url) as conn:
        try:
            current = given or _active_catalogue(conn) or load_catalogue([default_rules_dir()])
        except CatalogueError as exc:
            _fail("the current catalogue does not load:\n  " + "\n  ".join(exc.problems))
        known = set(current.rule_ids) | set(cand.rule_ids if cand else ())
        if rule not in known:
            raise typer.BadParameter(
                f"no rule {rule!r} in the catalogue ({', '.join(sorted(known))})",
                param_hint="--rule",
            )
        stages = 3 + (1 if cand else 0)
        with _progress(show, stages, "A3") as tick:
            try:
                page = build_a3(
                    conn, opts, current, now=datetime.now(UTC), candidate=cand, progress=tick
                )
            except CarePlanError as exc:
                _fail(
                    "the stored care plans do not fit a catalogue:\n  " + "\n  ".join(exc.problems)
                )
            except psycopg.Error as exc:
                _fail(f"cannot read the period: {str(exc).strip()}")
            text = to_html(page)
            tick("written")
        residents = sorted({str(r["key"]) for r in page.breakdown["resident"]})
        log_access(
            conn,
            actor=by or getpass.getuser(),
            role="specialist",
            action="report_a3",
            detail={
                "rule": rule,
                "from": t1.isoformat(),
                "to": t2.isoformat(),
                "team": team,
                "candidate": page.countermeasure.candidate_version if page.countermeasure else None,
                "residents": residents,
            },
        )
    if out is None and pdf is None:
        sys.stdout.write(text)
    if out is not None:
        out.write_text(text, encoding="utf-8")
    if pdf is not None:
        with tempfile.TemporaryDirectory(prefix="trygg-a3-") as tmp:
            src = out if out is not None else Path(tmp) / "a3.html"
            if out is None:
                src.write_text(text, encoding="utf-8")
            try:
                chromium_pdf(src, pdf, chromium)
            except (RuntimeError, OSError) as exc:
                _fail(f"cannot print the PDF: {exc}")
    a = page.overall
    cm = page.countermeasure
    typer.echo(
        f"wrote the A3 page for {rule}"
        + "".join(f" to {p}" for p in (out, pdf) if p is not None)
        + f": {a.alerts} alerts, false-alarm share {_share(a.false_alarm_share)}"
        + (
            f"; candidate: {cm.diff.removed} removed, {cm.diff.added} added,"
            f" {len(cm.missed_real)} real incidents missed, {len(cm.delayed_real)} delayed"
            if cm
            else ""
        ),
        err=True,
    )


def deviations_command(
    *,
    start: str,
    end: str,
    district: str | None,
    districts: list[Path],
    rules: list[Path],
    fmt: str,
    out: Path | None,
    lang: str,
    by: str | None,
    config: Path | None,
    database_url: str | None,
) -> None:
    """`trygg report deviations`: the districts' deviations from the city standard
    (trygg.audit.deviations)."""
    from trygg.audit.deviations import build, to_csv, to_html, to_json
    from trygg.rules.catalogue import CatalogueError, default_rules_dir, load_catalogue
    from trygg.rules.overlays import OverlayError, default_districts_dir, read_overlays
    from trygg.store.audit import log_access
    from trygg.store.registry import load_registry

    if fmt not in ("csv", "json", "html"):
        raise typer.BadParameter("--format is csv, json or html")
    lang = _lang(lang)
    s = _settings(config, database_url)
    t1, t2 = parse_when(start, s.report_timezone), parse_when(end, s.report_timezone)
    if t2 <= t1:
        raise typer.BadParameter("--to must be after --from")
    with _connect(s.database_url) as conn:
        try:
            cat = (
                load_catalogue(rules)
                if rules
                else _active_catalogue(conn) or load_catalogue([s.rules_dir or default_rules_dir()])
            )
        except CatalogueError as exc:
            _fail("the catalogue does not load:\n  " + "\n  ".join(exc.problems))
        paths = districts or [
            d for d in [default_districts_dir(rules or [s.rules_dir or default_rules_dir()])] if d
        ]
        try:
            overlays = read_overlays(cat, paths) if paths else None
        except OverlayError as exc:
            _fail("the district overlays were refused:\n  " + "\n  ".join(exc.problems))
        if overlays is None:
            from trygg.rules.overlays import Overlays

            overlays = Overlays()
        if not districts:  # what runs: a district's stored active version wins over its file
            from trygg.rules.overlays import in_force
            from trygg.store.versions import overlays_in

            try:
                overlays = in_force(cat, overlays, overlays_in(conn, "active"))
            except OverlayError as exc:
                _fail("a stored district overlay was refused:\n  " + "\n  ".join(exc.problems))
        registry = load_registry(conn)
        known = registry.district_ids() + list(overlays.by_district)
        if district is not None and district not in known:
            raise typer.BadParameter(
                f"no district {district!r} (known: {', '.join(known)})", param_hint="--district"
            )
        rep = build(
            conn, cat, overlays, registry, t1, t2, s.report_timezone, district=district, lang=lang
        )
        text = to_html(rep) if fmt == "html" else to_csv(rep) if fmt == "csv" else to_json(rep)
        # The report names the residents whose care plans lie outside the bounds.
        log_access(
            conn,
            actor=by or getpass.getuser(),
            role="specialist",
            action="report_deviations",
            detail={
                "from": t1.isoformat(),
                "to": t2.isoformat(),
                "district": district,
                "format": fmt,
                "residents": rep.residents,
            },
        )
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    marked = rep.marked
    typer.echo(
        f"deviations of {len(rep.districts)} district(s) from catalogue {rep.version}: "
        f"{sum(1 for r in rep.rules for c in r.cells if c.changed)} change(s), "
        f"{len(marked)} marked"
        + "".join(
            f"; {r.rule} in {c.district}: "
            + ", ".join(
                (["no reason"] if c.unexplained else []) + [f"outlier {p}" for p in c.outliers]
            )
            for r, c in marked
        )
        + (f"; wrote {out}" if out is not None else ""),
        err=True,
    )


def _active_catalogue(conn: Any) -> Any:
    """The active stored catalogue version, if the database has one."""
    import psycopg

    from trygg.store import versions
    from trygg.tuning.versions import catalogue_of

    try:
        with conn.transaction():
            if "active" not in versions.current(conn):
                return None
            return catalogue_of(versions.get(conn, "active").files, "active")
    except psycopg.errors.UndefinedTable:
        return None


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


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
    from trygg.store.audit import database_name

    name = database_name(conn)
    if doc.get("database") and name is not None and doc["database"] != name:
        typer.echo(
            f"warning: {path.name} was written for database {doc['database']!r}, this is {name!r}",
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
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="progress on stderr: a bar on a terminal, else a line every 5 s "
        "(default: on a terminal)",
    ),
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
    from trygg.progress import progress as show_progress

    with show_progress(
        "export-fhir", len(bundles), unit="bundles", enabled=wanted(progress)
    ) as bar:
        for n, (path, b) in enumerate(bundles, 1):
            if validate:
                try:
                    fhir.validate(b)
                except Exception as exc:  # pydantic's ValidationError, or a missing library
                    _fail(f"{path.name}: not valid FHIR R4: {exc}")
            path.write_text(json.dumps(b, ensure_ascii=False, indent=1), encoding="utf-8")
            bar.update(n, count=n)
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
