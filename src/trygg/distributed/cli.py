"""``trygg kafka topics``, ``trygg bridge``, ``trygg worker`` and ``trygg api``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import settings_or_exit as _settings

kafka_app = typer.Typer(help="Kafka for the distributed runner.", no_args_is_help=True)


def _need_faust() -> None:
    try:
        import faust  # noqa: F401
    except ImportError:
        typer.echo(
            "trygg: the distributed runner needs faust-streaming: pip install 'trygg[distributed]'",
            err=True,
        )
        raise typer.Exit(2) from None


@kafka_app.command("topics")
def kafka_topics(
    config: Path | None = ConfigOpt,
    kafka_bootstrap: str | None = typer.Option(None, help="overrides TRYGG_KAFKA_BOOTSTRAP"),
    show: bool = typer.Option(False, "--show", help="only list the topics, create nothing"),
) -> None:
    """Create trygg's topics (names, partitions, retention from the settings)."""
    from trygg.distributed.topics import create_topics, topic_specs

    s = _settings(config, kafka_bootstrap=kafka_bootstrap)
    if show:
        for t in topic_specs(s):
            typer.echo(f"{t.name}\t{t.partitions}\t{t.config['cleanup.policy']}\t{t.purpose}")
        return
    try:
        result = asyncio.run(create_topics(s))
    except Exception as exc:  # aiokafka's errors, connection refused
        typer.echo(f"trygg: cannot create topics on {s.kafka_bootstrap}: {exc}", err=True)
        raise typer.Exit(1) from None
    for name, what in result:
        typer.echo(f"{name}: {what}")


def bridge_command(
    config: Path | None = ConfigOpt,
    mqtt_url: str | None = typer.Option(None, help="overrides TRYGG_MQTT_URL"),
    kafka_bootstrap: str | None = typer.Option(None, help="overrides TRYGG_KAFKA_BOOTSTRAP"),
    client_id: str | None = typer.Option(None, help="overrides TRYGG_MQTT_CLIENT_ID (unique!)"),
) -> None:
    """Run a stateless MQTT -> Kafka bridge (several share the topics)."""
    from trygg.distributed.bridge import run_bridge

    s = _settings(
        config, mqtt_url=mqtt_url, kafka_bootstrap=kafka_bootstrap, mqtt_client_id=client_id
    )
    run_bridge(s)


def worker_command(
    config: Path | None = ConfigOpt,
    kafka_bootstrap: str | None = typer.Option(None, help="overrides TRYGG_KAFKA_BOOTSTRAP"),
    database_url: str | None = DatabaseUrlOpt,
    web: bool | None = typer.Option(
        None, "--web/--without-web", help="Faust's web server (default: TRYGG_WORKER_WEB, off)"
    ),
    applied_log: Path | None = typer.Option(
        None,
        "--applied-log",
        help="append a line per event applied to the rule engine (partition, offset of the "
        "record that applied it, device, event id) to this file: for tests and diagnosis "
        "(ids only, no payloads)",
    ),
) -> None:
    """Run a Faust worker: rules, alerts, notifications and the database sink.

    Refuses to start (exit 2) on the problems `trygg check` reports, in its words.
    """
    _need_faust()
    from trygg.cli_support import run_checked
    from trygg.distributed.worker.run import run_worker

    # The care plans are checked against the catalogue that runs (build_worker).
    run_checked(
        config,
        lambda s: run_worker(s, applied_log),
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        worker_web=web,
    )


def api_command(
    config: Path | None = ConfigOpt,
    kafka_bootstrap: str | None = typer.Option(None, help="overrides TRYGG_KAFKA_BOOTSTRAP"),
    database_url: str | None = DatabaseUrlOpt,
    host: str | None = typer.Option(None, help="overrides TRYGG_HTTP_HOST"),
    port: int | None = typer.Option(None, help="overrides TRYGG_HTTP_PORT"),
) -> None:
    """Serve the HTTP API and console for the distributed runner (reads the database,
    sends staff actions to the workers through Kafka)."""
    from trygg.cli_support import fail
    from trygg.distributed.api import run_api

    s = _settings(
        config,
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        http_host=host,
        http_port=port,
    )
    if not s.http_port:
        fail("trygg api needs a port: TRYGG_HTTP_PORT (or --port) is 0", 2)
    try:
        run_api(s)
    except OSError as exc:  # the port is taken, the host is not ours
        fail(f"cannot serve on {s.http_host}:{s.http_port}: {exc}")


def register(app: typer.Typer) -> None:
    app.add_typer(kafka_app, name="kafka")
    app.command("bridge")(bridge_command)
    app.command("worker")(worker_command)
    app.command("api")(api_command)
