"""The ``trygg`` command line (Typer).

Each stage contributes its own commands (``trygg rules ...`` lives in
trygg.rules.cli); this module only wires them together and turns expected
errors into one readable line and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path

import typer

from trygg import logs
from trygg.rules.cli import app as rules_app
from trygg.settings import Settings, load_settings

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

ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help="TOML config file (else $TRYGG_CONFIG)",
    exists=True,
    dir_okay=False,
)


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        s = load_settings(config, **overrides)
    except ValueError as exc:
        typer.echo(f"trygg: bad settings: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.configure(s.log_format, s.log_level)
    return s


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"trygg: {msg}", err=True)
    raise typer.Exit(code)


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
) -> None:
    """Validate a registry file and store its residents and devices."""
    import psycopg

    from trygg.registry import RegistryError, load_registry
    from trygg.store.registry import save_registry

    s = _settings(config, database_url=database_url)
    try:
        registry = load_registry(file)
    except RegistryError as exc:
        _fail(str(exc))
    try:
        with psycopg.connect(s.database_url) as conn:
            counts = save_registry(conn, registry)
    except psycopg.Error as exc:
        _fail(f"cannot store the registry: {str(exc).strip()}")
    typer.echo(f"loaded {counts.residents} residents and {counts.devices} devices from {file}")


@app.command("run")
def run(
    config: Path | None = ConfigOpt,
    mqtt_url: str | None = typer.Option(None, help="overrides TRYGG_MQTT_URL"),
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
    site: str | None = typer.Option(None, help="overrides TRYGG_SITE"),
    webhook_url: str | None = typer.Option(None, help="overrides TRYGG_WEBHOOK_URL"),
) -> None:
    """Run the embedded pipeline against the configured broker and database."""
    from trygg.runner.embedded import run_forever

    s = _settings(
        config, mqtt_url=mqtt_url, database_url=database_url, site=site, webhook_url=webhook_url
    )
    run_forever(s)


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


def _register_optional() -> None:
    try:
        from trygg.simulate.cli import register
    except ImportError:
        return
    register(app)


_register_optional()


def main() -> None:
    app()
