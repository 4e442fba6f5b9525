"""``trygg rules publish | history | diff | shadow | shadow-report | promote``.

Registered on the ``trygg rules`` app by trygg.tuning.cli (kept in a module of
its own so that the catalogue commands and these database-backed ones can be
changed independently). The versions live in the database
(trygg.store.versions); a running trygg picks up a published, shadowed or
promoted version on its next registry reload, without a restart.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import typer

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.cli_support import (
    ConfigOpt,
    DatabaseUrlOpt,
    connect_or_fail,
    fail,
    settings_or_exit,
)
from trygg.durations import parse_duration
from trygg.locale import Words
from trygg.rules.catalogue import Catalogue, CatalogueError, default_rules_dir
from trygg.rules.engine import CarePlanError, Engine
from trygg.settings import Settings
from trygg.times import parse_offset_time
from trygg.tuning import district_versions_cli as dv
from trygg.tuning.rule_inputs import refuse
from trygg.tuning.versions import (
    care_plan_changes,
    catalogue_content,
    catalogue_of,
    compare,
    rule_changes,
    unified_diff,
)

AuthorOpt = typer.Option(None, "--author", help="who makes the change (default: your user name)")
DistrictOpt = typer.Option(
    None, "--district", help="a district's overlay instead of the whole catalogue (issue 19)"
)
OverlayOpt = typer.Option(
    None,
    "--candidate",
    help="with --district: the overlay file (or a directory with <district>.yaml)",
)


def _connect(s: Settings) -> Any:
    return connect_or_fail(s.database_url, "cannot reach the database", autocommit=True)


def _load(paths: list[Path] | None, s: Settings) -> tuple[Catalogue, list[tuple[str, str]]]:
    try:
        return catalogue_content(paths or [s.rules_dir or default_rules_dir()])
    except CatalogueError as exc:
        refuse("The rule catalogue was refused", exc.problems)


def _check_care_plans(conn: Any, cat: Catalogue) -> None:
    """Refuse a catalogue that the stored care plans do not fit (trygg would refuse it)."""
    from trygg.store.registry import load_registry

    try:
        Engine(cat, load_registry(conn))
    except CarePlanError as exc:
        refuse(f"The stored care plans do not fit catalogue {cat.version}", exc.problems)


def _time(value: str | None, opt: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_offset_time(value, opt)
    except ValueError as exc:
        fail(str(exc), 2)


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def register(app: typer.Typer) -> None:
    """Add the version commands to the ``trygg rules`` app."""

    @app.command("publish")
    def publish_cmd(
        rules: Optional[list[Path]] = typer.Option(  # noqa: UP045
            None, "--rules", help="Rule file or directory (repeatable). Default: TRYGG_RULES_DIR."
        ),
        reason: str = typer.Option(..., "--reason", help="why the catalogue changes"),
        author: Optional[str] = AuthorOpt,  # noqa: UP045
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
        district: Optional[str] = DistrictOpt,  # noqa: UP045
        candidate: Optional[list[Path]] = OverlayOpt,  # noqa: UP045
    ) -> None:
        """Store the catalogue as a version and make it the active one (with
        --district: a district's overlay, given by --candidate)."""
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        if district:
            with _connect(s) as conn:
                return dv.publish(district, candidate, reason, author, s, conn)
        cat, files = _load(rules, s)
        with _connect(s) as conn:
            _check_care_plans(conn, cat)
            prev = versions.current(conn).get("active")
            if not versions.publish(
                conn, cat.version, files, author=author or getpass.getuser(), reason=reason
            ):
                typer.echo(f"catalogue {cat.version} is the active version already")
                return
        typer.echo(
            f"published catalogue {cat.version} (was {prev or 'none'}); a running trygg takes "
            f"it into use within {s.registry_reload_seconds:g} s"
        )

    @app.command("history")
    def history_cmd(
        kind: Optional[str] = typer.Option(  # noqa: UP045
            None, "--kind", help="catalogue or care_plans (default: both)"
        ),
        limit: int = typer.Option(50, "--limit", min=1),
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
        district: Optional[str] = DistrictOpt,  # noqa: UP045
    ) -> None:
        """Every catalogue and care-plan change, newest first: who, when, why
        (with --district: that district's overlay versions)."""
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        if district:
            with _connect(s) as conn:
                lines = dv.history(district, limit, s, conn)
            if not lines:
                typer.echo(f"no overlay versions of {district} recorded yet")
                return
            _table(["when", "version", "kind", "change", "status now", "who", "why"], lines)
            return
        if kind not in (None, versions.CATALOGUE, versions.CARE_PLANS):
            fail("--kind is catalogue or care_plans", 2)
        tz = ZoneInfo(s.report_timezone)
        with _connect(s) as conn:
            rows = versions.history(conn, kind, limit)
        if not rows:
            typer.echo("no versions recorded yet")
            return
        _table(
            ["when", "version", "kind", "change", "status now", "who", "why"],
            [
                [
                    Words.when(h.at, tz.key, seconds=True),
                    h.version,
                    h.kind,
                    h.action + (f" (was {h.previous})" if h.previous else ""),
                    h.status,
                    h.author,
                    h.reason,
                ]
                for h in rows
            ],
        )

    @app.command("diff")
    def diff_cmd(
        a: str = typer.Argument(..., help="a version (or a unique prefix, or active / shadow)"),
        b: str = typer.Argument(..., help="the version to compare it with"),
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
    ) -> None:
        """What changed from version A to version B: rules, then the files line by line."""
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        with _connect(s) as conn:
            try:
                va, vb = versions.get(conn, a), versions.get(conn, b)
            except versions.VersionError as exc:
                fail(str(exc))
        if va.kind != vb.kind:
            fail(f"{va.version} is a {va.kind} version, {vb.version} a {vb.kind} version")
        typer.echo(f"{va.kind} {va.version} -> {vb.version}")
        if va.kind == versions.CATALOGUE:
            try:
                changes = rule_changes(
                    catalogue_of(va.files, va.version), catalogue_of(vb.files, vb.version)
                )
                lines = changes.lines("rule")
            except CatalogueError as exc:
                lines = [f"(rules not compared: a version no longer loads: {exc.problems[0]})"]
        else:
            lines = care_plan_changes(va.files, vb.files).lines("resident")
        for line in lines or ["no changes"]:
            typer.echo(line)
        text = unified_diff(va.files, vb.files, va.version, vb.version)
        if text:
            typer.echo("")
            typer.echo(text, nl=False)

    @app.command("shadow")
    def shadow_cmd(
        candidate: Optional[list[Path]] = typer.Option(  # noqa: UP045
            None, "--candidate", help="the candidate catalogue: file or directory (repeatable)"
        ),
        stop: bool = typer.Option(False, "--stop", help="stop the shadow run instead"),
        reason: str = typer.Option(..., "--reason", help="why"),
        author: Optional[str] = AuthorOpt,  # noqa: UP045
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
        district: Optional[str] = DistrictOpt,  # noqa: UP045
    ) -> None:
        """Run a candidate catalogue beside the active one; its alerts are never routed.

        They are stored with a shadow flag; compare with shadow-report, then promote.
        With --district: a candidate overlay of that district (--candidate FILE), run
        for that district's residents only.
        """
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        if district:
            with _connect(s) as conn:
                return dv.shadow(district, candidate, stop, reason, author, s, conn)
        who = author or getpass.getuser()
        if stop:
            with _connect(s) as conn:
                try:
                    v = versions.stop_shadow(conn, author=who, reason=reason)
                except versions.VersionError as exc:
                    fail(str(exc))
            typer.echo(f"shadow run of {v} stopped")
            return
        if not candidate:
            fail("give the candidate catalogue with --candidate DIR (or --stop)", 2)
        cat, files = _load(candidate, s)
        with _connect(s) as conn:
            _check_care_plans(conn, cat)
            try:
                versions.start_shadow(conn, cat.version, files, author=who, reason=reason)
            except versions.VersionError as exc:
                fail(str(exc))
        typer.echo(
            f"catalogue {cat.version} runs in shadow from trygg's next reload (within "
            f"{s.registry_reload_seconds:g} s); compare with trygg rules shadow-report"
        )

    @app.command("shadow-report")
    def shadow_report_cmd(
        start: Optional[str] = typer.Option(  # noqa: UP045
            None, "--from", help="ISO time with offset (default: when the shadow run started)"
        ),
        end: Optional[str] = typer.Option(  # noqa: UP045
            None, "--to", help="ISO time with offset (default: now)"
        ),
        within: str = typer.Option(
            "30m", "--match-within", help="an active and a shadow alert this close are the same"
        ),
        fmt: str = typer.Option("table", "--format", help="table or json"),
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
    ) -> None:
        """Compare, per rule, the active catalogue's alerts with the shadow candidate's."""
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        if fmt not in ("table", "json"):
            fail("--format is table or json", 2)
        try:
            tol = parse_duration(within)
        except ValueError as exc:
            fail(f"--match-within: {exc}", 2)
        t1, t2 = _time(start, "--from"), _time(end, "--to")
        with _connect(s) as conn:
            shadow_version = versions.current(conn).get("shadow")
            if t1 is None:
                t1 = versions.last_shadow_start(conn)
                if t1 is None:
                    fail("no shadow run recorded: give --from")
            t2 = t2 or datetime.now(UTC)
            active = versions.alerts_in(conn, t1, t2, shadow=False)
            shadow = versions.alerts_in(conn, t1, t2, shadow=True)
        rows = compare(active, shadow, tol)
        doc = {
            "from": t1.isoformat(),
            "to": t2.isoformat(),
            "match_within_s": tol.total_seconds(),
            "shadow_version": shadow_version,
            "active_versions": sorted({a.catalogue_version for a in active}),
            "shadow_versions": sorted({a.catalogue_version for a in shadow}),
            "false_outcomes": sorted(FALSE_OUTCOMES),
            "rules": [r.to_dict() for r in rows],
            "totals": {
                "active_alerts": len(active),
                "active_false": sum(r.active_false for r in rows),
                "shadow_alerts": len(shadow),
                "only_active": sum(r.only_active for r in rows),
                "only_shadow": sum(r.only_shadow for r in rows),
            },
        }
        if fmt == "json":
            typer.echo(json.dumps(doc, indent=2))
            return
        _print_report(doc, ZoneInfo(s.report_timezone), tol)

    @app.command("promote")
    def promote_cmd(
        reason: str = typer.Option(
            "shadow run accepted", "--reason", help="why the candidate goes live"
        ),
        author: Optional[str] = AuthorOpt,  # noqa: UP045
        config: Optional[Path] = ConfigOpt,  # noqa: UP045
        database_url: Optional[str] = DatabaseUrlOpt,  # noqa: UP045
        district: Optional[str] = DistrictOpt,  # noqa: UP045
    ) -> None:
        """Make the shadow catalogue the active one (recorded as a change); with
        --district, that district's overlay in shadow."""
        from trygg.store import versions

        s = settings_or_exit(config, database_url=database_url)
        if district:
            with _connect(s) as conn:
                return dv.promote(district, reason, author, s, conn)
        with _connect(s) as conn:
            try:
                cat = catalogue_of(versions.get(conn, "shadow").files)
            except versions.VersionError as exc:
                fail(str(exc))
            except CatalogueError as exc:
                fail(f"the shadow version no longer loads: {exc.problems[0]}")
            _check_care_plans(conn, cat)
            try:
                new, prev = versions.promote(
                    conn, author=author or getpass.getuser(), reason=reason
                )
            except versions.VersionError as exc:
                fail(str(exc))
        typer.echo(
            f"promoted {new} (was {prev or 'none'}); a running trygg routes its alerts "
            f"within {s.registry_reload_seconds:g} s"
        )


def _print_report(doc: dict[str, Any], tz: ZoneInfo, tol: timedelta) -> None:
    t1 = datetime.fromisoformat(doc["from"]).astimezone(tz)
    t2 = datetime.fromisoformat(doc["to"]).astimezone(tz)
    typer.echo(f"shadow report {Words.when(t1, tz.key)} - {Words.when(t2, tz.key)} ({tz.key})")
    typer.echo(f"active catalogue: {', '.join(doc['active_versions']) or '(no alerts)'}")
    typer.echo(
        f"shadow catalogue: {', '.join(doc['shadow_versions']) or doc['shadow_version'] or '-'}"
        " (alerts stored apart, never routed)"
    )
    typer.echo(f"same alert = same rule, resident and device within {tol}")
    typer.echo("")
    typer.echo(
        "Active catalogue (staff feedback; false = " + " or ".join(doc["false_outcomes"]) + ")"
    )
    _table(
        ["rule", "alerts", "fires", "false", "helped"],
        [
            [
                r["rule"],
                r["active_alerts"],
                r["active_fires"],
                r["active_false"],
                r["active_helped"],
            ]
            for r in doc["rules"]
        ],
    )
    typer.echo("")
    typer.echo("Shadow candidate")
    _table(
        [
            "rule",
            "shadow alerts",
            "fires",
            "in both",
            "only active",
            "only shadow",
            "false avoided",
            "helped missed",
        ],
        [
            [
                r["rule"],
                r["shadow_alerts"],
                r["shadow_fires"],
                r["both"],
                r["only_active"],
                r["only_shadow"],
                r["false_avoided"],
                r["helped_missed"],
            ]
            for r in doc["rules"]
        ],
    )
    t = doc["totals"]
    typer.echo("")
    typer.echo(
        f"active {t['active_alerts']} alerts ({t['active_false']} false); shadow "
        f"{t['shadow_alerts']} alerts; only active {t['only_active']}, only shadow "
        f"{t['only_shadow']}"
    )
