"""``trygg report a3``: the A3 improvement page for one rule (trygg.audit.a3),
called by ``trygg report`` (trygg.audit.cli) with its options.
"""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from trygg.audit.cli_common import (
    check_lang,
    connect,
    fail_problems,
    parse_when,
    period,
    settings_for,
    stage_progress,
)
from trygg.cli_support import fail as _fail
from trygg.tuning.rule_inputs import active_catalogue


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
    from trygg.store.access_log import log_access

    if not rule:
        raise typer.BadParameter("the A3 page is for one rule: give --rule", param_hint="--rule")
    lang = check_lang(lang)
    s = settings_for(config, database_url)
    t1, t2 = period(start, end, s.report_timezone)
    first = None
    if shadow_from:
        first = parse_when(shadow_from, s.report_timezone).date()
    try:
        cand = load_catalogue(candidate) if candidate else None
        given = load_catalogue(rules) if rules else None
    except CatalogueError as exc:
        fail_problems("the catalogue does not load", exc.problems)
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
    with connect(s.database_url) as conn:
        try:
            current = given or active_catalogue(conn) or load_catalogue([default_rules_dir()])
        except CatalogueError as exc:
            fail_problems("the current catalogue does not load", exc.problems)
        known = set(current.rule_ids) | set(cand.rule_ids if cand else ())
        if rule not in known:
            raise typer.BadParameter(
                f"no rule {rule!r} in the catalogue ({', '.join(sorted(known))})",
                param_hint="--rule",
            )
        stages = 3 + (1 if cand else 0)
        with stage_progress(show, stages, "A3") as tick:
            try:
                page = build_a3(
                    conn, opts, current, now=datetime.now(UTC), candidate=cand, progress=tick
                )
            except CarePlanError as exc:
                fail_problems("the stored care plans do not fit a catalogue", exc.problems)
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


def _share(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"
