"""The ``trygg`` command line (Typer).

Each stage contributes its own commands (``trygg rules ...`` lives in
trygg.tuning.cli); this module only wires them together and turns expected
errors into one readable line and a non-zero exit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from trygg import logs
from trygg.audit.cli import audit_app, report_command, retention_command
from trygg.cli_support import ConfigOpt, run_checked
from trygg.cli_support import fail as _fail
from trygg.cli_support import settings_or_exit as _settings
from trygg.ingest.cli import devices_app
from trygg.locale import Words
from trygg.tuning.cli import app as rules_app

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


users_app = typer.Typer(help="People and systems that use the HTTP API.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="user name, shown as the actor in alert records"),
    role: str = typer.Option(..., help="care_staff, team_leader, specialist, auditor or admin"),
    team: list[str] = typer.Option([], "--team", help="a team (care_staff: at least one)"),
    district: list[str] = typer.Option(
        [],
        "--district",
        help="scope a team_leader, specialist or auditor to this district's teams (repeatable)",
    ),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """Create a user (or give an existing one a new token); prints the token once."""
    import psycopg

    from trygg.store.access import add_user

    s = _settings(config, database_url=database_url)
    try:
        with psycopg.connect(s.database_url) as conn:
            token = add_user(conn, name, role, team, district)
    except ValueError as exc:
        _fail(str(exc), 2)
    except psycopg.Error as exc:
        _fail(f"cannot store the user: {str(exc).strip()}")
    typer.echo(token)
    typer.echo(
        f"user {name} ({role}{', teams ' + ', '.join(team) if team else ''}"
        f"{', districts ' + ', '.join(district) if district else ''}): keep this token;"
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
            scope = ",".join(u["teams"] + [f"district:{d}" for d in u["districts"]])
            typer.echo(f"{u['name']}\t{u['role']}\t{scope}\t{state}")


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


def _cli_actor(by: str | None) -> str:
    import getpass

    try:
        return by or f"{getpass.getuser()} (cli)"
    except Exception:  # no user name in a container
        return "cli"


@users_app.command("enrol")
def users_enrol(
    name: str = typer.Argument(..., help="the user the phone signs in as"),
    team: str | None = typer.Option(
        None, "--team", help="the user's team; a user that does not exist is created on it"
    ),
    role: str = typer.Option("care_staff", help="a new user's role"),
    url: str | None = typer.Option(
        None, help="trygg as the phone reaches it (default: TRYGG_PUBLIC_URL, else the API's)"
    ),
    qr: Path | None = typer.Option(
        None, help="also write the QR code to this file (.svg or .png)", dir_okay=False
    ),
    by: str | None = typer.Option(None, help="who enrols, for the access log (default: you)"),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """Enrol a phone: a one-time link and QR code that signs it in as NAME.

    The phone opens the link (or scans the code) and taps once; the code works
    once, for TRYGG_SESSION_ENROL_MINUTES, and gives a session for
    TRYGG_SESSION_DEVICE_DAYS (docs/api.md, "Sign-in")."""
    from datetime import timedelta

    import psycopg
    import segno

    from trygg.store.access import create_enrolment, ensure_user, get_user, log_access

    s = _settings(config, database_url=database_url)
    actor = _cli_actor(by)
    base = (url or s.public_url or f"http://{s.http_host}:{s.http_port}").rstrip("/")
    try:
        with psycopg.connect(s.database_url) as conn:
            u = get_user(conn, name)
            created = False
            if u is None:
                if team is None:
                    _fail(f"no user {name!r}: give --team to create one", 2)
                u = ensure_user(conn, name, role, [str(team)], source="cli")
                created = True
            elif team is not None and team not in u["teams"]:
                _fail(f"user {name} is not on team {team} (teams: {', '.join(u['teams'])})", 2)
            code, enr = create_enrolment(
                conn,
                name,
                created_by=actor,
                valid_for=timedelta(minutes=s.session_enrol_minutes),
            )
            log_access(
                conn,
                at=enr["created_at"],
                actor=actor,
                role="admin",
                action="session.enrol",
                resident=None,
                detail={
                    "user": name,
                    "enrolment": enr["id"],
                    "expires_at": enr["expires_at"].isoformat(),
                    "created_user": created,
                    "via": "cli",
                },
            )
    except ValueError as exc:
        _fail(str(exc), 2)
    except psycopg.Error as exc:
        _fail(f"cannot store the enrolment: {str(exc).strip()}")
    link = f"{base}/auth/enrol?code={code}"
    code_img = segno.make(link, error="m", micro=False)
    if qr is not None:
        code_img.save(str(qr), scale=6, border=2)
    typer.echo(link)
    if sys.stdout.isatty():
        code_img.terminal(compact=True)
    until = Words.when(enr["expires_at"], s.report_timezone)  # with its offset, as everywhere
    typer.echo(
        f"{'created ' if created else ''}user {name} ({u['role']}, {', '.join(u['teams'])}):"
        f" open the link on the phone, or scan the QR code{' in ' + str(qr) if qr else ''};"
        f" it works once, until {until}.",
        err=True,
    )


@users_app.command("sessions")
def users_sessions(
    name: str | None = typer.Argument(None, help="only this user's"),
    all_: bool = typer.Option(False, "--all", help="revoked and expired ones too"),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """List console sessions (enrolled phones, sign-ins), never their secrets."""
    import psycopg

    from trygg.store.access import list_sessions

    s = _settings(config, database_url=database_url)
    with psycopg.connect(s.database_url) as conn:
        for r in list_sessions(conn, user=name, active=not all_):
            state = (
                "active" if r["active"] else "revoked" if r["revoked_at"] is not None else "ended"
            )
            typer.echo(
                f"{r['id']}\t{r['user']}\t{r['kind']}\t{r['label']}"
                f"\t{r['expires_at'].isoformat(timespec='seconds')}\t{state}"
            )


@users_app.command("revoke")
def users_revoke(
    name: str = typer.Argument(..., help="the user whose sessions end"),
    session: str | None = typer.Option(None, help="only this session (its id)"),
    by: str | None = typer.Option(None, help="who revokes, for the access log (default: you)"),
    config: Path | None = ConfigOpt,
    database_url: str | None = typer.Option(None, help="overrides TRYGG_DATABASE_URL"),
) -> None:
    """Revoke a user's console sessions now (open live streams close within seconds)."""
    from datetime import UTC, datetime

    import psycopg

    from trygg.store.access import get_session, log_access, revoke_session, revoke_user_sessions

    s = _settings(config, database_url=database_url)
    actor = _cli_actor(by)
    with psycopg.connect(s.database_url) as conn:
        if session is not None:
            found = get_session(conn, session)
            if found is None or found["user"] != name:
                _fail(f"no session {session} of {name}", 2)
            ids = [session] if revoke_session(conn, session, by=actor) else []
        else:
            ids = revoke_user_sessions(conn, name, by=actor)
        for sid in ids:
            log_access(
                conn,
                at=datetime.now(UTC),
                actor=actor,
                role="admin",
                action="session.revoke",
                resident=None,
                detail={"session": sid, "user": name, "by": actor, "via": "cli"},
            )
    typer.echo(f"{len(ids)} session(s) of {name} revoked")


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
