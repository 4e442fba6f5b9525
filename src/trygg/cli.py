"""The ``trygg`` command line (Typer).

Each stage contributes its own commands (``trygg rules ...`` lives in
trygg.tuning.cli); this module only wires them together and turns expected
errors into one readable line and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trygg import logs
from trygg.audit.cli import audit_app, report_command, retention_command
from trygg.cli_support import ConfigOpt, DatabaseUrlOpt, run_checked
from trygg.cli_support import fail as _fail
from trygg.cli_support import settings_or_exit as _settings
from trygg.ingest.cli import devices_app
from trygg.tuning.cli import app as rules_app
from trygg.users_cli import users_app

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
    database_url: str | None = DatabaseUrlOpt,
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
    database_url: str | None = DatabaseUrlOpt,
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
    database_url: str | None = DatabaseUrlOpt,
    site: str | None = typer.Option(None, help="overrides TRYGG_SITE"),
    webhook_url: str | None = typer.Option(None, help="overrides TRYGG_WEBHOOK_URL"),
) -> None:
    """Run the embedded pipeline against the configured broker and database.

    Refuses to start (exit 2) on the problems `trygg check` reports, in its words.
    """
    from trygg.runner.embedded import run_forever

    run_checked(
        config,
        run_forever,
        mqtt_url=mqtt_url,
        database_url=database_url,
        site=site,
        webhook_url=webhook_url,
    )


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
    database: bool = typer.Option(
        False,
        "--database",
        help="also check the care plans against the catalogue version active in the database"
        " (TRYGG_DATABASE_URL), which trygg run runs instead of the rules directory",
    ),
) -> None:
    """Check the settings, registry, rules with the care plans, and routing file.

    Every problem at once, one line each: file:line: reason. Exit 0: all good;
    1: problems found; 2: wrong use of the command.
    """
    from trygg.check import check, check_database, print_report

    report = check(config, registry=registry, rules=rules, routing=routing)
    if database:
        check_database(report, registry, rules)
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


app.add_typer(users_app, name="users")


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
