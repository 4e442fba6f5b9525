"""``trygg check``: everything trygg reads at start, checked together.

The settings (``TRYGG_*`` and the TOML file), the registry, the rule catalogue
with the registry's care plans, and the routing file. Every problem is found in
one run and reported as one line, ``file:line: reason`` (a setting:
``TRYGG_NAME=value: reason``), like ``amtool check-config`` and ``promtool
check rules``. ``trygg run`` calls :func:`check` too and refuses to start on
the same problems, in the same words.

Warnings are things that work but probably not as meant (a webhook the routing
file names that is not configured, a team no route reaches, a variable name
that is almost a setting's); they never fail the check.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trygg.check_routing import routing_warnings, unrouted_teams
from trygg.plain import Problem, YamlDoc, YamlSyntaxError, read_yaml
from trygg.settings import Settings
from trygg.settings_load import read_settings


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # one summary line per part
    settings: Settings | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, what: str, problems: Sequence[str | Problem], summary: str) -> None:
        self.problems.extend(str(p) for p in problems)
        n = len(problems)
        self.checked.append(f"{what}: {_count(n) if n else summary}")


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _count(n: int) -> str:
    return _n(n, "problem")


def check(
    config: Path | None = None,
    *,
    registry: Path | None = None,
    rules: Sequence[Path] | None = None,
    routing: Path | None = None,
    care_plans: bool = True,
    **overrides: object,
) -> Report:
    """Check the settings and the files they (or the arguments) name.

    ``care_plans=False``: leave the care plans out (``trygg run``: the
    catalogue that runs may be a newer version from the database, so the
    runner checks them at start against that one, with :func:`care_plan_lines`,
    in the same words)."""
    from trygg.rules.catalogue import default_rules_dir

    report = Report()
    s, problems = read_settings(config, **overrides)
    report.settings = s
    report.add("settings", problems, f"OK ({_sources(config)})")
    report.warnings.extend(_near_miss_variables())

    reg_path = registry or s.registry
    reg_doc: YamlDoc | None = None
    residents: list[tuple[int, Any]] = []
    if reg_path is not None:
        reg_doc, residents = _check_registry(report, Path(reg_path))
    else:
        report.checked.append("registry: none named (TRYGG_REGISTRY, --registry)")

    rule_paths = list(rules) if rules else [s.rules_dir or default_rules_dir()]
    catalogue = _check_rules(report, rule_paths)
    if catalogue is not None:
        _check_overlays(report, catalogue, rule_paths)
    if reg_doc is not None and reg_path is not None:
        if catalogue is not None:
            _check_care_plans(report, catalogue, residents, str(reg_path), reg_doc, care_plans)
        else:
            report.checked.append("care plans: not checked (the rules do not load)")

    routing_path = routing or s.routing
    if routing_path is not None:
        _check_routing(report, Path(routing_path), s, reg_doc, str(reg_path or ""))
    else:
        report.checked.append("routing: the built-in one (TRYGG_ROUTING names no file)")
    return report


def _sources(config: Path | None) -> str:
    path = config or (Path(os.environ["TRYGG_CONFIG"]) if os.environ.get("TRYGG_CONFIG") else None)
    return "defaults and TRYGG_* variables" + (f", {path}" if path else "")


def _near_miss_variables() -> list[str]:
    """``TRYGG_*`` variables that are not settings but nearly the name of one."""
    names = [f"TRYGG_{n.upper()}" for n in Settings.model_fields]
    out = []
    for var in sorted(os.environ):
        up = var.upper()
        if not up.startswith("TRYGG_") or up in names or up == "TRYGG_CONFIG":
            continue
        near = difflib.get_close_matches(up, names, n=1, cutoff=0.85)
        if near:
            out.append(f"{var}: not a trygg setting, so it is ignored (did you mean {near[0]}?)")
    return out


def _read(report: Report, what: str, path: Path) -> YamlDoc | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        report.add(f"{what} {path}", [f"{path}: cannot read: {exc.strerror}"], "")
        return None
    try:
        return read_yaml(text, str(path))
    except YamlSyntaxError as exc:
        report.add(f"{what} {path}", [str(exc)], "")
        return None


def _check_registry(report: Report, path: Path) -> tuple[YamlDoc | None, list[tuple[int, Any]]]:
    from pydantic import ValidationError

    from trygg.registry import Resident, registry_problems

    doc = _read(report, "registry", path)
    if doc is None:
        return None, []
    problems = sorted([*doc.problems, *registry_problems(doc.data, str(path), doc.locs)])
    # The care plans of the residents that are valid on their own are checked
    # even when other parts of the file are wrong.
    residents: list[tuple[int, Resident]] = []
    raw = doc.data.get("residents") if isinstance(doc.data, dict) else None
    for i, r in enumerate(raw if isinstance(raw, list) else []):
        with contextlib.suppress(ValidationError):
            residents.append((i, Resident.model_validate(r)))
    devices = doc.data.get("devices") if isinstance(doc.data, dict) else None
    n_dev = len(devices) if isinstance(devices, list) else 0
    n_res = len(raw) if isinstance(raw, list) else 0
    summary = f"{_n(n_res, 'resident')}, {_n(n_dev, 'device')}: OK"
    report.add(f"registry {path}", problems, summary)
    return doc, residents


def _check_rules(report: Report, paths: list[Path]) -> Any:
    from trygg.rules.catalogue import CatalogueError, load_catalogue

    where = ", ".join(str(p) for p in paths)
    try:
        cat = load_catalogue(paths)
    except CatalogueError as exc:
        report.add(f"rules {where}", exc.problems, "")
        return None
    summary = (
        f"{_n(len(cat.specs), 'rule')} from {_n(len(cat.files), 'file')}, version {cat.version}"
    )
    report.add(f"rules {where}", [], f"{summary}: OK")
    return cat


def _check_overlays(report: Report, catalogue: Any, paths: list[Path]) -> None:
    """The district overlays beside the rules (``districts/``), as trygg run and the
    worker apply them: one outside the standard's bounds stops the start, file:line."""
    from trygg.rules.overlays import (
        OverlayError,
        default_districts_dir,
        district_overlay_texts,
        read_overlay_texts,
    )

    where = default_districts_dir(paths)
    if where is None:
        return
    try:
        overlays = read_overlay_texts(catalogue, district_overlay_texts(paths))
    except OverlayError as exc:
        report.add(f"district overlays {where}", exc.problems, "")
        return
    report.warnings.extend(overlays.warnings)
    n = len(overlays.changes)
    report.add(
        f"district overlays {where}",
        [],
        f"{_n(len(overlays.by_district), 'district')}, {_n(n, 'change')} within bounds: OK",
    )


def _check_care_plans(
    report: Report,
    catalogue: Any,
    residents: list[tuple[int, Any]],
    source: str,
    doc: YamlDoc,
    refuse: bool,
) -> None:
    from trygg.rules.careplan import care_plan_problems_at

    if not refuse:
        report.checked.append("care plans: checked at start against the catalogue that runs")
        return
    problems = care_plan_problems_at(catalogue, residents, source, doc.locs)
    n = sum(1 for _, r in residents if r.overrides)
    report.add("care plans", problems, f"{n} checked against the rules: OK")


STORED_REGISTRY = "the registry in the database"


class NotStarted(Exception):
    """Start-up found problems in what would run (one ``file:line: reason``
    each, :func:`check`'s words): nothing was started."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def care_plan_lines(catalogue: Any, registry_file: Path | None, registry: Any) -> list[str]:
    """The care-plan problems of the registry that will run against the
    catalogue that will run, in :func:`check`'s words.

    With a registry file (``TRYGG_REGISTRY``, the source at start-up) they are
    the file's lines, as ``trygg check`` prints them; a registry read from the
    database (``trygg registry load``) has no lines, so each problem names
    :data:`STORED_REGISTRY` and the resident."""
    from trygg.rules.careplan import care_plan_problems_at

    if registry_file is not None:
        probe = Report()
        doc, residents = _check_registry(probe, Path(registry_file))
        if doc is None or probe.problems:
            return [*probe.problems]  # the file itself is wrong: those problems first
        found = care_plan_problems_at(catalogue, residents, str(registry_file), doc.locs)
    else:
        found = care_plan_problems_at(catalogue, enumerate(registry.residents), STORED_REGISTRY, {})
    return [str(p) for p in found]


def check_database(report: Report, registry: Path | None, rules: Sequence[Path] | None) -> None:
    """``trygg check --database``: what ``trygg run`` checks once the database
    answers. The catalogue that runs is the database's active version when
    there is one; the care plans of the registry that will run (the file, else
    the stored one) are checked against it in :func:`care_plan_lines`' words,
    so that ``trygg check`` reports every problem ``trygg run`` refuses to
    start on. Without an active version (or with the rules directory's own),
    :func:`check` has checked them already."""
    import psycopg

    from trygg.rules.catalogue import CatalogueError, default_rules_dir, load_catalogue
    from trygg.store.registry import load_registry
    from trygg.store.versions import current, get
    from trygg.tuning.versions import catalogue_of

    s = report.settings
    if s is None:
        return
    reg_path = registry or s.registry
    try:
        with psycopg.connect(s.database_url, connect_timeout=10) as conn:
            active = current(conn).get("active")
            version = get(conn, active) if active is not None else None
            stored = load_registry(conn) if reg_path is None else None
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.add("database", [f"TRYGG_DATABASE_URL: cannot read the database: {reason}"], "")
        return
    if version is None:
        report.checked.append("database: no active catalogue version (the rules directory runs)")
        return
    try:
        directory = load_catalogue(list(rules) if rules else [s.rules_dir or default_rules_dir()])
        same = directory.version == version.version
    except CatalogueError:
        same = False
    if same:
        report.checked.append(f"database: the active version is the rules directory's ({active})")
        return
    try:
        catalogue = catalogue_of(version.files, version.version)
    except CatalogueError as exc:
        report.add(
            f"catalogue version {active}",
            [f"catalogue version {active} (active in the database): {p}" for p in exc.problems],
            "",
        )
        return
    which = "the registry in the database" if reg_path is None else str(reg_path)
    lines = care_plan_lines(catalogue, Path(reg_path) if reg_path else None, stored)
    new = [p for p in lines if p not in report.problems]  # the file's own problems: said once
    report.add(f"care plans of {which} against the active version {active}", new, "OK")


def _check_routing(
    report: Report, path: Path, s: Settings, registry: YamlDoc | None, reg_source: str
) -> None:
    from trygg.alerts.routing_config import routing_problems

    doc = _read(report, "routing", path)
    if doc is None:
        return
    problems = sorted([*doc.problems, *routing_problems(doc.data, str(path), doc.locs)])
    data = doc.data if isinstance(doc.data, dict) else {}
    teams = data["teams"] if isinstance(data.get("teams"), dict) else {}
    n_rec = len(data["recipients"]) if isinstance(data.get("recipients"), dict) else 0
    summary = f"{_n(len(teams), 'team')}, {_n(n_rec, 'recipient')}: OK"
    report.add(f"routing {path}", problems, summary)
    if problems:
        return
    report.warnings.extend(str(w) for w in routing_warnings(doc, str(path), s))
    if registry is not None:
        report.warnings.extend(str(w) for w in unrouted_teams(data, registry, reg_source))


def print_report(report: Report, echo: Any, *, verbose: bool = True) -> None:
    """Problems first, then warnings, then what was checked and the verdict."""
    for p in report.problems:
        echo(p)
    for w in report.warnings:
        echo(f"warning: {w}")
    if verbose:
        for line in report.checked:
            echo(line)
    if report.problems:
        echo(f"{_count(len(report.problems))} found")
    elif verbose:
        echo("all good" + (f" ({_n(len(report.warnings), 'warning')})" if report.warnings else ""))
