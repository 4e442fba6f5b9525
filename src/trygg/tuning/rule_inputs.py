"""What the ``trygg rules`` commands read before they work: the catalogue
(``--rules``, or the active stored version), the district overlays
(``--districts``), a registry file, the number of ``--jobs``, and one way to
refuse them.

Shared by the command modules (trygg.tuning.cli, check_cli, backtest_cli,
versions_cli, district_versions_cli) so that each says a refused catalogue or
overlay in the same words: a heading, then every problem indented on a line of
its own, exit 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import typer

from trygg.registry import Registry, RegistryError, load_registry
from trygg.rules.catalogue import Catalogue, CatalogueError, default_rules_dir, load_catalogue


def refuse(heading: str, problems: Iterable[str]) -> NoReturn:
    """``heading:`` and each problem indented on stderr; exit 1."""
    typer.echo(f"{heading}:", err=True)
    for p in problems:
        typer.echo(f"  {p}", err=True)
    raise typer.Exit(1)


RulesOpt = typer.Option(
    None,
    "--rules",
    help="Rule file or directory (repeatable; later ones may override earlier ones). "
    "Default: $TRYGG_RULES_DIR or the repository's rules/.",
)

DistrictsOpt = typer.Option(
    None,
    "--districts",
    help="District overlays: a directory of <district>.yaml files, or files (repeatable). "
    "Default: districts/ beside the rules, if it exists.",
)


def check_jobs(jobs: int | None) -> None:
    """``--jobs`` (the worker processes of replay and the back-test), if given, is
    at least 1."""
    if jobs is not None and jobs < 1:
        raise typer.BadParameter("--jobs must be at least 1")


def catalogue_or_exit(rules: list[Path] | None) -> Catalogue:
    """The catalogue at ``rules`` (default: the rules directory); exit 1 when refused."""
    paths = rules or [default_rules_dir()]
    try:
        return load_catalogue(paths)
    except CatalogueError as exc:
        refuse("The rule catalogue was refused", exc.problems)


def overlays_or_exit(cat: Catalogue, rules: list[Path] | None, districts: list[Path] | None) -> Any:
    """The district overlays (trygg.rules.overlays), checked; exit 1 when refused."""
    from trygg.rules.overlays import OverlayError, Overlays, default_districts_dir, read_overlays

    paths = districts or [d for d in [default_districts_dir(rules)] if d is not None]
    if not paths:
        return Overlays()
    try:
        return read_overlays(cat, paths)
    except OverlayError as exc:
        refuse("The district overlays were refused", exc.problems)


def registry_or_exit(path: Path) -> Registry:
    """The registry file at ``path``; exit 1, with the reason, when it cannot be read."""
    try:
        return load_registry(path)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def active_catalogue(conn: Any) -> Catalogue | None:
    """The active stored catalogue version, if the database has one."""
    import psycopg

    from trygg.store import versions
    from trygg.tuning.versions import catalogue_of

    try:
        with conn.transaction():
            if "active" not in versions.current(conn):
                return None
            return catalogue_of(versions.get(conn, "active").files, "active")
    except psycopg.errors.UndefinedTable:
        return None
