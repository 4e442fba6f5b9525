"""Care plans: per-resident overrides of the catalogue's parameters.

``Resident.overrides`` is ``{rule_id: {parameter: value}}``, e.g.::

    overrides:
      bed-exit-no-return: {wait: 30m, window: "21:00-08:00"}
      inactivity: {enabled: false}

Each rule kind declares which parameters a care plan may change (see
docs/rules.md); the value is checked exactly as in the catalogue. A value
outside the bounds the standard sets for a district (``adjustable:``) is
accepted only with a ``reason`` in the rule's entry::

    overrides:
      bed-exit-no-return: {wait: 60m, reason: "slow back to bed; care plan meeting 2 March"}

The engine does not judge reasons: these checks are ``trygg rules check
--registry``, ``trygg check`` and ``trygg rules replay``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trygg.plain import Loc, Path_, Problem, YamlSyntaxError, line_of, read_yaml
from trygg.registry import Registry, Resident
from trygg.rules.catalogue import REASON, Catalogue, OverrideError


def unexplained_out_of_bounds(catalogue: Catalogue, rid: str, params: Any) -> list[tuple[str, str]]:
    """The parameters of a (valid) care-plan entry outside the standard's bounds
    when the entry gives no reason: ``(parameter, message naming rule and parameter)``."""
    if not isinstance(params, dict) or str(params.get(REASON) or "").strip():
        return []
    return [
        (
            param,
            f"rule {rid!r}: parameter {param!r}: {msg}; a care plan outside the standard's "
            f"bounds needs a reason (add reason: ... to the rule's entry)",
        )
        for param, msg in catalogue.out_of_bounds(rid, params)
    ]


def check_overrides(catalogue: Catalogue, resident: str, overrides: dict[str, Any]) -> list[str]:
    """Problems with one resident's care plan, one per rule, naming resident, rule, parameter."""
    out = []
    for rid, params in overrides.items():
        try:
            catalogue.with_overrides({rid: params})
        except ValueError as exc:
            out.append(f"resident {resident!r}: {exc}")
            continue
        found = unexplained_out_of_bounds(catalogue, rid, params)
        if found:
            out.append(f"resident {resident!r}: " + "; ".join(m for _, m in found))
    return out


def care_plan_problems(catalogue: Catalogue, registry: Registry) -> list[str]:
    out: list[str] = []
    for r in registry.residents:
        out.extend(check_overrides(catalogue, r.id, r.overrides))
    return out


def care_plan_problems_at(
    catalogue: Catalogue,
    residents: Iterable[tuple[int, Resident]],
    source: str,
    locs: Mapping[Path_, Loc],
) -> list[Problem]:
    """The care-plan problems of ``residents`` (their index in the registry
    file, the resident), each at the line of the parameter (or rule) at fault."""
    out: list[Problem] = []
    for i, r in residents:
        for rid, params in r.overrides.items():
            try:
                catalogue.with_overrides({rid: params})
            except OverrideError as exc:
                for param, msg in exc.problems:
                    path: list[str | int] = ["residents", i, "overrides", rid]
                    if param is not None:
                        path.append(param)
                    _, ln = line_of(locs, path, (source, 0))
                    out.append(Problem(source, ln, f"resident {r.id!r}: {msg}"))
            except ValueError as exc:
                _, ln = line_of(locs, ["residents", i, "overrides", rid], (source, 0))
                out.append(Problem(source, ln, f"resident {r.id!r}: {exc}"))
            else:
                for param, msg in unexplained_out_of_bounds(catalogue, rid, params):
                    _, ln = line_of(locs, ["residents", i, "overrides", rid, param], (source, 0))
                    out.append(Problem(source, ln, f"resident {r.id!r}: {msg}"))
    return out


def care_plan_problems_in_file(catalogue: Catalogue, registry: Registry, path: Path) -> list[str]:
    """As care_plan_problems, prefixed with ``file:line`` of the offending entry."""
    try:
        locs = read_yaml(Path(path).read_text(encoding="utf-8"), str(path)).locs
    except (OSError, YamlSyntaxError):
        locs = {}
    found = care_plan_problems_at(catalogue, enumerate(registry.residents), str(path), locs)
    return [str(p) for p in found]
