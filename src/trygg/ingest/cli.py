"""``trygg devices ...``: device identity on the broker."""

from __future__ import annotations

from pathlib import Path

import typer

devices_app = typer.Typer(help="Device identity: broker credentials and ACL.", no_args_is_help=True)


@devices_app.command("credentials")
def credentials(
    registry: Path = typer.Option(
        ..., "--registry", exists=True, dir_okay=False, help="registry YAML"
    ),
    site: str = typer.Option(..., "--site", help="the {site} in topics (TRYGG_SITE)"),
    out: Path = typer.Option(
        ...,
        "--out",
        file_okay=False,
        help="directory for passwd, passwd-service, acl and credentials.csv",
    ),
    rotate: bool = typer.Option(False, "--rotate", help="new passwords for every user"),
    service_user: str = typer.Option("trygg", help="the MQTT user trygg itself connects as"),
) -> None:
    """Generate mosquitto's password files (device and service listener), ACL file and
    credentials.csv from the registry.

    Existing passwords are kept on a re-run (read from OUT/credentials.csv)
    unless --rotate. Reload mosquitto afterwards (SIGHUP) to apply.
    """
    from trygg.ingest.credentials import CredentialsError, generate
    from trygg.registry import RegistryError, load_registry

    try:
        reg = load_registry(registry)
        result = generate(reg, site, out, rotate=rotate, service_user=service_user)
    except (RegistryError, CredentialsError) as exc:
        typer.echo(f"trygg: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"trygg: cannot write {out}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"wrote {out / 'passwd'}, {out / 'passwd-service'}, {out / 'acl'} and "
        f"{out / 'credentials.csv'} (mode 0600): "
        f"{len(result.credentials)} users, {len(result.created)} new passwords, "
        f"{len(result.kept)} kept, {len(result.removed)} removed"
    )
