"""``trygg rules check | test | replay``."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from trygg.registry import RegistryError, load_registry
from trygg.rules.careplan import care_plan_problems_in_file
from trygg.rules.catalogue import Catalogue, CatalogueError, default_rules_dir, load_catalogue
from trygg.rules.fixtures import fixture_files, run_file
from trygg.rules.replay import replay as run_replay

app = typer.Typer(help="Check, test and replay the rule catalogue.", no_args_is_help=True)


def _catalogue(rules: list[Path] | None) -> Catalogue:
    paths = rules or [default_rules_dir()]
    try:
        return load_catalogue(paths)
    except CatalogueError as exc:
        typer.echo("The rule catalogue was refused:", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(1) from None


RulesOpt = typer.Option(
    None,
    "--rules",
    help="Rule file or directory (repeatable; later ones may override earlier ones). "
    "Default: $TRYGG_RULES_DIR or the repository's rules/.",
)


@app.command()
def check(
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
    registry: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--registry", help="Also check the care plans (overrides) in this registry file."
    ),
) -> None:
    """Validate the rule catalogue (and the care plans of a registry)."""
    cat = _catalogue(rules)
    typer.echo(f"catalogue {cat.version}: {len(cat.specs)} rules from {len(cat.files)} file(s)")
    if registry is not None:
        try:
            reg = load_registry(registry)
        except RegistryError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        problems = care_plan_problems_in_file(cat, reg, registry)
        if problems:
            typer.echo("Care plans refused:", err=True)
            for p in problems:
                typer.echo(f"  {p}", err=True)
            raise typer.Exit(1)
        n = sum(1 for r in reg.residents if r.overrides)
        typer.echo(f"registry {registry}: {len(reg.residents)} residents, {n} care plan(s) OK")


@app.command("test")
def test_cmd(
    paths: Optional[list[Path]] = typer.Argument(  # noqa: UP045
        None, help="Test files or directories (default: rules/tests)."
    ),
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
) -> None:
    """Run rule tests (fixture files), like `promtool test rules`."""
    cat = _catalogue(rules)
    files = fixture_files(paths or [default_rules_dir() / "tests"])
    if not files:
        typer.echo("no test files found", err=True)
        raise typer.Exit(1)
    passed = failed = 0
    for f in files:
        for r in run_file(cat, f):
            if r.ok:
                passed += 1
                typer.echo(f"PASS  {r.file}: {r.name}")
            else:
                failed += 1
                typer.echo(f"FAIL  {r.file}: {r.name}")
                for line in r.lines:
                    typer.echo(line)
    typer.echo(f"{passed} passed, {failed} failed (catalogue {cat.version})")
    if failed:
        raise typer.Exit(1)


@app.command()
def replay(
    events: Path = typer.Option(
        ..., "--events", help="JSONL file, one event a line (with device)."
    ),
    registry: Path = typer.Option(..., "--registry", help="Registry YAML (residents, devices)."),
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
    until: Optional[str] = typer.Option(  # noqa: UP045
        None, "--until", help="Run the clock on to this ISO time (default: last event + 24 h)."
    ),
) -> None:
    """Replay events through the catalogue; print one JSON line per alert raised."""
    cat = _catalogue(rules)
    try:
        reg = load_registry(registry)
    except RegistryError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    problems = care_plan_problems_in_file(cat, reg, registry)
    if problems:
        for p in problems:
            typer.echo(p, err=True)
        raise typer.Exit(1)
    end: datetime | None = None
    if until is not None:
        try:
            end = datetime.fromisoformat(until)
        except ValueError:
            typer.echo(f"--until: not an ISO time: {until!r}", err=True)
            raise typer.Exit(2) from None
        if end.tzinfo is None:
            typer.echo("--until needs an offset, e.g. 2026-03-30T00:00+02:00", err=True)
            raise typer.Exit(2)
    try:
        fh = events.open("rb")
    except OSError as exc:
        typer.echo(f"{events}: cannot read: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    with fh:
        _, stats = run_replay(fh, reg, cat, until=end, out=sys.stdout, err=sys.stderr)
    typer.echo(
        f"replayed {stats.events} events ({stats.bad} bad, {stats.unknown_device} unknown device, "
        f"{stats.late} late): {stats.alerts} alerts",
        err=True,
    )
