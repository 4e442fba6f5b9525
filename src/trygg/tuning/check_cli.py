"""``trygg rules check | test``: the catalogue, its district overlays and care
plans validated, and its rule tests (fixture files) run; no database.

Registered on the ``trygg rules`` app by trygg.tuning.cli.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trygg.rules.careplan import care_plan_problems_in_file
from trygg.rules.catalogue import default_rules_dir
from trygg.rules.fixtures import fixture_files, run_file
from trygg.tuning.rule_inputs import (
    DistrictsOpt,
    RulesOpt,
    catalogue_or_exit,
    overlays_or_exit,
    refuse,
    registry_or_exit,
)


def check(
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
    registry: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--registry", help="Also check the care plans (overrides) in this registry file."
    ),
    districts: Optional[list[Path]] = DistrictsOpt,  # noqa: UP045
) -> None:
    """Validate the rule catalogue, the district overlays (and the care plans of a registry)."""
    cat = catalogue_or_exit(rules)
    typer.echo(f"catalogue {cat.version}: {len(cat.specs)} rules from {len(cat.files)} file(s)")
    overlays = overlays_or_exit(cat, rules, districts)
    if overlays.by_district:
        n = len(overlays.changes)
        typer.echo(
            f"district overlays: {len(overlays.by_district)} "
            f"({', '.join(overlays.by_district)}), {n} change{'' if n == 1 else 's'} within"
            " the standard's bounds"
        )
    for w in overlays.warnings:
        typer.echo(f"warning: {w}", err=True)
    if registry is not None:
        reg = registry_or_exit(registry)
        problems = care_plan_problems_in_file(cat, reg, registry)
        if problems:
            refuse("Care plans refused", problems)
        from trygg.rules.overlays import unknown_districts

        for w in unknown_districts(reg, overlays):
            typer.echo(f"warning: {w}", err=True)
        n = sum(1 for r in reg.residents if r.overrides)
        typer.echo(f"registry {registry}: {len(reg.residents)} residents, {n} care plan(s) OK")


def test_cmd(
    paths: Optional[list[Path]] = typer.Argument(  # noqa: UP045
        None, help="Test files or directories (default: rules/tests)."
    ),
    rules: Optional[list[Path]] = RulesOpt,  # noqa: UP045
) -> None:
    """Run rule tests (fixture files), like `promtool test rules`."""
    cat = catalogue_or_exit(rules)
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
