"""Care plans: per-resident overrides of the catalogue's parameters.

``Resident.overrides`` is ``{rule_id: {parameter: value}}``, e.g.::

    overrides:
      bed-exit-no-return: {wait: 30m, window: "21:00-08:00"}
      inactivity: {enabled: false}

Each rule kind declares which parameters a care plan may change (see
docs/rules.md); the value is checked exactly as in the catalogue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue, line_of, load_yaml_with_lines


def check_overrides(catalogue: Catalogue, resident: str, overrides: dict[str, Any]) -> list[str]:
    """Problems with one resident's care plan, one per rule, naming resident, rule, parameter."""
    out = []
    for rid, params in overrides.items():
        try:
            catalogue.with_overrides({rid: params})
        except ValueError as exc:
            out.append(f"resident {resident!r}: {exc}")
    return out


def care_plan_problems(catalogue: Catalogue, registry: Registry) -> list[str]:
    out: list[str] = []
    for r in registry.residents:
        out.extend(check_overrides(catalogue, r.id, r.overrides))
    return out


def care_plan_problems_in_file(catalogue: Catalogue, registry: Registry, path: Path) -> list[str]:
    """As care_plan_problems, prefixed with ``file:line`` of the offending entry."""
    try:
        _, locs = load_yaml_with_lines(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, yaml.YAMLError):
        locs = {}
    out = []
    for i, r in enumerate(registry.residents):
        for rid, params in r.overrides.items():
            try:
                catalogue.with_overrides({rid: params})
            except ValueError as exc:
                where: list[str | int] = ["residents", i, "overrides", rid]
                msg = str(exc)
                if isinstance(params, dict):
                    for p in params:
                        if f"parameter {p!r}" in msg or f"parameter '{p}" in msg:
                            where.append(p)
                            break
                f, ln = line_of(locs, where, (str(path), 0))
                out.append(f"{f}:{ln}: resident {r.id!r}: {exc}")
    return out
