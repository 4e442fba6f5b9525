"""What every stage's command line shares: the --config and --database-url
options, loading the settings with a one-line error, and failing with a
readable message.

Kept apart from trygg.cli so that stage CLIs (trygg.audit.cli,
trygg.distributed.cli, ...) can use it without importing the app that
mounts them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from trygg import logs
from trygg.settings import Settings
from trygg.settings_load import SettingsError, load_settings

if TYPE_CHECKING:
    from trygg.check import Report

ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="TOML config file (else $TRYGG_CONFIG)",
    exists=True,
    dir_okay=False,
)
# --database-url, every command's that reads or writes the database.
DatabaseUrlOpt = typer.Option(None, "--database-url", help="overrides TRYGG_DATABASE_URL")


def settings_or_exit(config: Path | None, **overrides: object) -> Settings:
    """Settings (file < environment < options), logging configured; exit 2 if invalid,
    with every problem on a line of its own (``TRYGG_HTTP_PORT=70000: must be ...``)."""
    try:
        s = load_settings(config, **overrides)
    except SettingsError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        n = len(exc.problems)
        typer.echo(f"trygg: bad settings ({n} problem{'s' if n != 1 else ''})", err=True)
        raise typer.Exit(2) from None
    logs.configure(s.log_format, s.log_level)
    return s


def fail(msg: str, code: int = 1) -> NoReturn:
    typer.echo(f"trygg: {msg}", err=True)
    raise typer.Exit(code)


def connect_or_fail(url: str, what: str, **kwargs: Any) -> Any:
    """A psycopg connection to ``url`` (``kwargs``: psycopg.connect's), else fail
    (exit 1) with ``what`` and psycopg's reason: ``trygg: <what>: <reason>``."""
    import psycopg

    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        fail(f"{what}: {str(exc).strip()}")


def refuse_on(report: Report, log_format: str) -> None:
    """Say the problems and warnings of a start-up check on stderr, in ``trygg
    check``'s words (plain lines; in JSON mode one log line each, so that the
    log has them too), and exit 2 if there are problems: ``trygg run`` and
    ``trygg worker`` do not start half-configured."""
    from trygg.check import print_report

    if log_format == "json":  # every line of a JSON log is JSON
        log = logs.get("trygg.check")
        for p in report.problems:
            log.error("configuration problem", problem=p)
        for w in report.warnings:
            log.warning("configuration warning", warning=w)
        if not report.ok:
            log.error("not started (trygg check lists the same problems)")
            raise typer.Exit(2)
    else:
        print_report(report, lambda line: typer.echo(line, err=True), verbose=False)
        if not report.ok:
            fail("not started (trygg check lists the same problems)", 2)


def run_checked(config: Path | None, run: Callable[[Settings], None], **overrides: Any) -> None:
    """Start ``run`` (``trygg run``'s or ``trygg worker``'s loop) only if the
    start-up check passes: ``trygg check``'s problems (care plans left to the
    runner, which checks them against the catalogue that actually runs), then
    what the runner itself refuses (``NotStarted``), both said by ``refuse_on``."""
    from trygg.check import NotStarted, Report, check

    report = check(config, care_plans=False, **overrides)
    s = report.settings
    assert s is not None
    logs.configure(s.log_format, s.log_level)
    refuse_on(report, s.log_format)
    try:
        run(s)
    except NotStarted as exc:  # what runs (the database's catalogue, care plans) is wrong
        refuse_on(Report(problems=exc.problems), s.log_format)
