"""``trygg users``: the people and systems that use the HTTP API, their tokens,
and their console sessions (enrolled phones, sign-ins).

Kept apart from trygg.cli, which mounts it (``app.add_typer(users_app,
name="users")``) beside the other stages' commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from trygg.cli_support import ConfigOpt, DatabaseUrlOpt
from trygg.cli_support import fail as _fail
from trygg.cli_support import settings_or_exit as _settings
from trygg.locale import Words

users_app = typer.Typer(help="People and systems that use the HTTP API.", no_args_is_help=True)


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
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Create a user (or give an existing one a new token); prints the token once."""
    import psycopg

    from trygg.store.users import add_user

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
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """List users (never their tokens)."""
    import psycopg

    from trygg.store.users import list_users

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
    database_url: str | None = DatabaseUrlOpt,
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
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Enrol a phone: a one-time link and QR code that signs it in as NAME.

    The phone opens the link (or scans the code) and taps once; the code works
    once, for TRYGG_SESSION_ENROL_MINUTES, and gives a session for
    TRYGG_SESSION_DEVICE_DAYS (docs/api.md, "Sign-in")."""
    from datetime import timedelta

    import psycopg
    import segno

    from trygg.store.access import create_enrolment, ensure_user, get_user
    from trygg.store.access_log import log_access

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
    database_url: str | None = DatabaseUrlOpt,
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
    database_url: str | None = DatabaseUrlOpt,
) -> None:
    """Revoke a user's console sessions now (open live streams close within seconds)."""
    from datetime import UTC, datetime

    import psycopg

    from trygg.store.access import get_session, revoke_session, revoke_user_sessions
    from trygg.store.access_log import log_access

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
