"""What the ``trygg report`` and ``trygg audit`` commands share: their option
blocks (written once here), the settings and the connection, the period of
--from and --to, progress by stages, writing a page out, and failing with a
catalogue's problems.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import typer

from trygg import times
from trygg.cli_support import connect_or_fail, settings_or_exit
from trygg.cli_support import fail as _fail
from trygg.settings import Settings

FromOpt = typer.Option(..., "--from", help="start (ISO date or time; a date is local midnight)")
ToOpt = typer.Option(..., "--to", help="end, exclusive (ISO date or time)")
TeamOpt = typer.Option(None, "--team", help="only this team")
LangOpt = typer.Option("nb", "--lang", help="language of the page: nb (Bokmål) or en (English)")


def check_lang(lang: str) -> str:
    from trygg.locale import check_language

    try:
        return check_language(lang)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--lang") from None


def settings_for(config: Path | None, database_url: str | None) -> Settings:
    return settings_or_exit(config, database_url=database_url)


def parse_when(text: str, tz: str) -> datetime:
    """``trygg.times.parse_when``, refusing bad input as a command-line error."""
    try:
        return times.parse_when(text, tz)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextmanager
def stage_progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    """Progress by stages on stderr (trygg.progress: a bar on a terminal, else a
    line every 5 s), or a no-op; ``tick(stage)`` after each stage."""
    from trygg.progress import progress

    with progress(label, total, unit="stages", enabled=enabled, rate=False) as bar:
        yield lambda stage: bar.advance(1, note=stage)


def connect(url: str) -> Any:
    return connect_or_fail(url, "cannot connect to the database", autocommit=True)


def period(start: str, end: str, tz: str) -> tuple[datetime, datetime]:
    """--from and --to as times in ``tz`` (``parse_when``); --to must be after --from."""
    t1, t2 = parse_when(start, tz), parse_when(end, tz)
    if t2 <= t1:
        raise typer.BadParameter("--to must be after --from")
    return t1, t2


def write_out(text: str, out: Path | None) -> None:
    """A page to the file ``out``, else to stdout."""
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


def fail_problems(what: str, problems: Iterable[str]) -> NoReturn:
    """Fail with ``what`` and its problems, one indented line each."""
    _fail(f"{what}:\n  " + "\n  ".join(problems))
