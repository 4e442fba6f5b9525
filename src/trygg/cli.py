"""The ``trygg`` command line (Typer).

Each stage contributes its own commands (``trygg rules ...`` lives in
trygg.rules.cli); this module only wires them together and turns expected
errors into one readable line and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trygg import logs
from trygg.audit.cli import audit_app, report_command, retention_command
from trygg.cli_support import ConfigOpt
from trygg.cli_support import fail as _fail
from trygg.cli_support import settings_or_exit as _settings
from trygg.ingest.cli import devices_app
from trygg.rules.cli import app as rules_app

app = typer.Typer(
    help="trygg: sensor events in, quality-assured alerts out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
registry_app = typer.Typer(help="The device registry.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(rules_app, name="rules")
app.add_typer(audit_app, name="audit")
app.command("report")(report_command)
db_app.command("retention")(retention_command)
app.add_typer(devices_app, name="devices")


@db_app.command("migrate")
def db_migrate(
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
    plain: bool = typer.Option(False, help="plain PostgreSQL tables even if TimescaleDB exists"),
) -> None:
    """Create or upgrade the schema (idempotent; refuses a newer schema)."""
    import psycopg

    from trygg.store.migrate import MigrationError, migrate

    s = _settings(config, database_url=database_url)
    try:
        applied = migrate(s.database_url, use_timescaledb=False if plain else None)
    except (MigrationError, psycopg.Error) as exc:
        _fail(str(exc).strip())
    if applied:
        for m in applied:
            typer.echo(f"applied {m.version:04d}_{m.name}")
    else:
        typer.echo("schema is up to date")


@registry_app.command("load")
def registry_load(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="registry YAML"),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
    author: str | None = typer.Option(
        None, "--author", help="who changes the care plans (default: your user name)"
    ),
    reason: str | None = typer.Option(
        None, "--reason", help="why (recorded with a changed care-plan version)"
    ),
) -> None:
    """Validate a registry file and store its residents and devices.

    Changed care plans are recorded as a new care-plan version (trygg rules history).
    """
    import getpass

    import psycopg

    from trygg.registry import RegistryError, load_registry
    from trygg.store.registry import save_registry

    s = _settings(config, database_url=database_url)
    try:
        registry = load_registry(file)
    except RegistryError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        n = len(exc.problems)
        _fail(f"registry not loaded: {n} problem{'s' if n != 1 else ''}")
    try:
        with psycopg.connect(s.database_url) as conn:
            counts = save_registry(
                conn,
                registry,
                author=author or getpass.getuser(),
                reason=reason or f"trygg registry load {file.name}",
            )
    except psycopg.Error as exc:
        _fail(f"cannot store the registry: {str(exc).strip()}")
    districts = (
        f" ({counts.teams} teams in {counts.districts} districts)" if counts.districts else ""
    )
    typer.echo(
        f"loaded {counts.residents} residents and {counts.devices} devices{districts} from {file}"
    )


@app.command("run")
def run(
    config: Path | None = ConfigOpt,
    mqtt_url: str | None = typer.Option(None, help="overrides TRYGG_MQTT_URL"),
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
    site: str | None = typer.Option(None, help="overrides TRYGG_SITE"),
    webhook_url: str | None = typer.Option(None, help="overrides TRYGG_WEBHOOK_URL"),
) -> None:
    """Run the embedded pipeline against the configured broker and database.

    Refuses to start (exit 2) on the problems `trygg check` reports, in its words.
    """
    from trygg.check import check, print_report
    from trygg.runner.embedded import run_forever

    report = check(
        config,
        care_plans=False,
        mqtt_url=mqtt_url,
        database_url=database_url,
        site=site,
        webhook_url=webhook_url,
    )
    s = report.settings
    assert s is not None
    logs.configure(s.log_format, s.log_level)
    if s.log_format == "json":  # every line of a JSON log is JSON
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
            _fail("not started (trygg check lists the same problems)", 2)
    run_forever(s)


@app.command("check")
def check_command(
    config: Path | None = ConfigOpt,
    registry: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--registry", exists=True, dir_okay=False, help="registry YAML (else TRYGG_REGISTRY)"
    ),
    rules: Optional[list[Path]] = typer.Option(  # noqa: UP045
        None,
        "--rules",
        exists=True,
        help="rule file or directory, repeatable (else TRYGG_RULES_DIR or the repository's rules/)",
    ),
    routing: Optional[Path] = typer.Option(  # noqa: UP045
        None,
        "--routing",
        exists=True,
        dir_okay=False,
        help="routing file (else TRYGG_ROUTING; without one, the built-in routing)",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only problems and warnings"),
) -> None:
    """Check the settings, registry, rules with the care plans, and routing file.

    Every problem at once, one line each: file:line: reason. Exit 0: all good;
    1: problems found; 2: wrong use of the command.
    """
    from trygg.check import check, print_report

    report = check(config, registry=registry, rules=rules, routing=routing)
    print_report(report, typer.echo, verbose=not quiet)
    raise typer.Exit(0 if report.ok else 1)


@app.command("demo")
def demo(
    homes: int = typer.Option(24, help="simulated homes"),
    seconds: float = typer.Option(0, help="stop after this many seconds (0: until Ctrl-C)"),
    speed: float = typer.Option(60.0, help="simulated seconds per real second"),
) -> None:
    """The whole pipeline on private services: broker, database, trygg and simulated homes."""
    from trygg.demo import run_demo

    logs.configure("console", "INFO")
    run_demo(homes=homes, seconds=seconds, speed=speed)


users_app = typer.Typer(help="People and systems that use the HTTP API.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="user name, shown as the actor in alert records"),
    role: str = typer.Option(..., help="care_staff, specialist, auditor or admin"),
    team: list[str] = typer.Option([], "--team", help="a team (care_staff: at least one)"),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """Create a user (or give an existing one a new token); prints the token once."""
    import psycopg

    from trygg.store.access import add_user

    s = _settings(config, database_url=database_url)
    try:
        with psycopg.connect(s.database_url) as conn:
            token = add_user(conn, name, role, team)
    except ValueError as exc:
        _fail(str(exc), 2)
    except psycopg.Error as exc:
        _fail(f"cannot store the user: {str(exc).strip()}")
    typer.echo(token)
    typer.echo(
        f"user {name} ({role}{', teams ' + ', '.join(team) if team else ''}): keep this token;"
        " it is not shown again. Console: /console#token=<token>",
        err=True,
    )


@users_app.command("list")
def users_list(
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """List users (never their tokens)."""
    import psycopg

    from trygg.store.access import list_users

    s = _settings(config, database_url=database_url)
    with psycopg.connect(s.database_url) as conn:
        for u in list_users(conn):
            state = "disabled" if u["disabled_at"] else "active"
            typer.echo(f"{u['name']}\t{u['role']}\t{','.join(u['teams'])}\t{state}")


@users_app.command("disable")
def users_disable(
    name: str = typer.Argument(...),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """Disable a user's token at once."""
    import psycopg

    from trygg.store.access import disable_user

    s = _settings(config, database_url=database_url)
    with psycopg.connect(s.database_url) as conn:
        if not disable_user(conn, name):
            _fail(f"no active user {name!r}")
    typer.echo(f"user {name} disabled")


def _register_optional() -> None:
    try:
        from trygg.simulate.cli import register
    except ImportError:
        return
    register(app)


def _register_distributed() -> None:
    """``trygg kafka``, ``trygg bridge``, ``trygg worker`` (issue 7, docs/distributed.md)."""
    from trygg.distributed.cli import register

    register(app)


_register_optional()
_register_distributed()


def main() -> None:
    app()
