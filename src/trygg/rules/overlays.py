"""District overlays: the layer between the city standard and a resident's care plan.

The catalogue is layered (docs/rules.md, "Districts"):

1. the city standard (``rules/standard.yaml``, with any site files after it);
2. each district's overlay, ``rules/districts/<district>.yaml``;
3. the resident's care plan (registry ``overrides:``).

An overlay is a YAML list of changes, one per rule::

    - rule: bed-exit-no-return
      wait: 30m
      reason: >-
        Most of our night visits to the toilet take 20-25 minutes (sensor
        data, autumn 2026); 30 minutes halves the false alarms.

It may change only parameters the standard marks ``adjustable:``, within the
standard's bounds; each change carries a ``reason``. An overlay outside the
bounds is refused with the file, the line and the bound; a change without a
reason is accepted with a warning, and the deviation report marks it
unexplained.

The engine needs nothing new: an overlay is resolved into each resident's
per-resident parameters, the ones care plans already use
(:func:`apply_overlays`): standard -> overlay -> care plan, the care plan's
value winning for its resident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trygg.plain import YamlSyntaxError, line_of, read_yaml
from trygg.registry import Registry
from trygg.rules.catalogue import REASON, Catalogue, OverrideError, default_rules_dir, read_texts
from trygg.rules.catalogue import rule_files as overlay_files  # found as rule files are

DISTRICTS_DIR = "districts"
_DISTRICT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Change:
    """One rule's parameters changed by a district, with the reason given."""

    district: str
    rule: str
    params: dict[str, Any]
    reason: str | None
    file: str
    line: int
    lines: dict[str, int] = field(default_factory=dict)  # parameter -> line


@dataclass
class Overlay:
    district: str
    file: str
    changes: list[Change] = field(default_factory=list)

    def params(self) -> dict[str, dict[str, Any]]:
        """rule -> parameters, as a care plan writes them."""
        return {c.rule: dict(c.params) for c in self.changes}

    def change(self, rule: str) -> Change | None:
        return next((c for c in self.changes if c.rule == rule), None)


class OverlayError(ValueError):
    """Overlays that cannot be used: one ``file:line: reason`` a problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class Overlays:
    """The overlays read, by district, and the warnings (changes without a reason)."""

    by_district: dict[str, Overlay] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def params(self, district: str) -> dict[str, dict[str, Any]]:
        o = self.by_district.get(district)
        return o.params() if o else {}

    @property
    def changes(self) -> list[Change]:
        return [c for o in self.by_district.values() for c in o.changes]


def default_districts_dir(rules: Sequence[Path] | None = None) -> Path | None:
    """``<rules dir>/districts`` of the first rules directory given (else of the
    default rules directory), if it exists."""
    first = Path(rules[0]) if rules else default_rules_dir()
    d = first / DISTRICTS_DIR if first.is_dir() else first.parent / DISTRICTS_DIR
    return d if d.is_dir() else None


def read_overlays(cat: Catalogue, paths: Sequence[Path]) -> Overlays:
    """Read and check the overlay files (a directory: its ``*.yaml``); raises OverlayError."""
    files, problems = read_texts(overlay_files(paths))
    if problems:
        raise OverlayError(problems)
    return read_overlay_texts(cat, files)


def read_overlay_texts(cat: Catalogue, files: Sequence[tuple[str, str]]) -> Overlays:
    """Check overlays given as ``(source, text)``; the district is the file's stem."""
    out = Overlays()
    problems: list[str] = []
    for src, text in files:
        district = Path(src).stem
        if not _DISTRICT_ID.match(district):
            problems.append(
                f"{src}:1: the file name must be a district id (lower case letters, digits,"
                f" '.', '-'), got {district!r}"
            )
            continue
        if district in out.by_district:
            problems.append(
                f"{src}:1: district {district!r} has an overlay already:"
                f" {out.by_district[district].file}"
            )
            continue
        found, warnings, overlay = _check_file(cat, district, src, text)
        problems.extend(found)
        out.warnings.extend(warnings)
        out.by_district[district] = overlay
    if problems:
        raise OverlayError(problems)
    return out


def _check_file(
    cat: Catalogue, district: str, src: str, text: str
) -> tuple[list[str], list[str], Overlay]:
    overlay = Overlay(district, src)
    try:
        doc = read_yaml(text, src)
    except YamlSyntaxError as exc:
        return [str(exc)], [], overlay
    problems = [str(p) for p in doc.problems]
    warnings: list[str] = []
    data, locs = doc.data, doc.locs
    if data is None:
        return problems, warnings, overlay
    if not isinstance(data, list):
        return [*problems, f"{src}:1: an overlay is a list of changes (- rule: ...)"], [], overlay
    seen: dict[str, int] = {}
    for i, item in enumerate(data):
        _, here = line_of(locs, (i,), (src, 1))
        if not isinstance(item, dict) or not isinstance(item.get("rule"), str):
            problems.append(f"{src}:{here}: each change is a mapping starting with rule:")
            continue
        rid = item["rule"]
        if rid in seen:
            problems.append(
                f"{src}:{here}: rule {rid!r} is changed twice (also on line {seen[rid]})"
            )
            continue
        seen[rid] = here

        def at(param: str, i: int = i, here: int = here) -> int:
            return line_of(locs, (i, param), (src, here))[1]

        params = {k: v for k, v in item.items() if k not in ("rule", REASON)}
        reason = item.get(REASON)
        where = f"district {district!r}: rule {rid!r}"
        if rid not in cat.raw:
            problems.append(f"{src}:{here}: {where}: no such rule in the standard")
            continue
        if not params:
            problems.append(f"{src}:{here}: {where}: changes no parameter")
            continue
        adjustable = cat.adjustable.get(rid, {})
        bad = False
        for param in params:
            if param not in adjustable:
                marks = ", ".join(adjustable) or "none"
                problems.append(
                    f"{src}:{at(param)}: {where}: parameter {param!r} is not adjustable by a"
                    f" district (the standard marks: {marks})"
                )
                bad = True
        if bad:
            continue
        try:
            cat.override_spec(rid, params)
        except OverrideError as exc:
            for param, msg in exc.problems:
                ln = at(param) if param else here
                problems.append(f"{src}:{ln}: district {district!r}: {msg}")
            continue
        for param, msg in cat.out_of_bounds(rid, params):
            problems.append(f"{src}:{at(param)}: {where}: {param}: {msg}")
            bad = True
        if bad:
            continue
        text_reason = str(reason).strip() if isinstance(reason, str | int | float) else ""
        if not text_reason:
            warnings.append(
                f"{src}:{here}: {where}: no reason given for the change"
                " (the deviation report marks it unexplained)"
            )
        overlay.changes.append(
            Change(
                district=district,
                rule=rid,
                params=params,
                reason=text_reason or None,
                file=src,
                line=here,
                lines={p: at(p) for p in params},
            )
        )
    return problems, warnings, overlay


def effective_overrides(
    overlay: Mapping[str, Mapping[str, Any]], care_plan: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """A resident's per-resident parameters: the district's overlay, then the care
    plan on top (parameter by parameter; the care plan's reason kept)."""
    out: dict[str, dict[str, Any]] = {r: dict(p) for r, p in overlay.items()}
    for rid, params in care_plan.items():
        out[rid] = {**out.get(rid, {}), **dict(params)}
    return out


def apply_overlays(registry: Registry, overlays: Overlays) -> Registry:
    """The registry whose residents' ``overrides`` are their effective parameters
    (overlay of their team's district, then their care plan): what the engine,
    which knows only care plans, runs with."""
    if not overlays.by_district:
        return registry
    districts = registry.resident_districts()
    residents = []
    for r in registry.residents:
        layer = overlays.params(districts[r.id])
        if layer:
            r = r.model_copy(update={"overrides": effective_overrides(layer, r.overrides)})
        residents.append(r)
    return registry.model_copy(update={"residents": residents})


def unknown_districts(registry: Registry, overlays: Overlays) -> list[str]:
    """Warnings for overlays of districts the registry does not have."""
    known = set(registry.district_ids())
    return [
        f"{o.file}:1: district {d!r} is not in the registry: its overlay applies to nobody"
        for d, o in overlays.by_district.items()
        if d not in known
    ]


# ------------------------------------------------------------------ in a running engine
#
# The live runner, the distributed worker and replay resolve residents' parameters
# with the same function (apply_overlays); what follows is how a running process
# finds the overlays it applies and notices when they change.

Texts = list[tuple[str, str]]


def district_overlay_texts(rules: Sequence[Path]) -> Texts:
    """``(file, text)`` of the overlays beside the rules (``districts/`` of the first
    rules directory), in name order; none if there is no such directory. Raises
    OverlayError for a file that cannot be read."""
    d = default_districts_dir(rules)
    if d is None:
        return []
    return [read_overlay(p) for p in overlay_files([d])]


def read_overlay(p: Path) -> tuple[str, str]:
    """``(file, text)`` of one overlay file; raises OverlayError if it cannot be read."""
    try:
        return str(p), p.read_text(encoding="utf-8")
    except OSError as exc:
        raise OverlayError([f"{p}:0: cannot read: {exc.strerror}"]) from None


def with_stored(files: Overlays, stored: Mapping[str, Overlay]) -> Overlays:
    """The overlays in force: each district's stored active version (trygg rules
    publish/promote --district) where it has one, else its file beside the rules."""
    if not stored:
        return files
    by = {**files.by_district, **stored}
    return Overlays(by_district=dict(sorted(by.items())), warnings=list(files.warnings))


def only_district(registry: Registry, district: str) -> set[str]:
    """The residents of ``district`` (a district's shadow run sees only them)."""
    return {r for r, d in registry.resident_districts().items() if d == district}


def stored_overlay_texts(stored: Mapping[str, tuple[str, str]]) -> Texts:
    """District -> (version, text) as ``(source, text)``: ``<version>/<district>.yaml``,
    so a problem names the stored version it is in."""
    return [(f"{v}/{d}.yaml", text) for d, (v, text) in sorted(stored.items())]


@dataclass
class LiveOverlays:
    """The overlays a running engine applies, and what they were read from.

    ``update`` is called at start-up and on every reload tick with the current
    catalogue, the files beside the rules and the districts' stored active
    versions; it reads them again only when one of these changed, and raises
    OverlayError leaving the overlays in force as they were (a bad new overlay
    never replaces a good one)."""

    overlays: Overlays = field(default_factory=Overlays)
    key: Any = None
    refused: Any = None  # the inputs last refused: not read (nor logged) again each tick

    def update(
        self,
        cat: Catalogue,
        texts: Texts,
        stored: Mapping[str, tuple[str, str]] | None = None,
    ) -> bool:
        stored = dict(stored or {})
        key = (cat.version, tuple(texts), tuple(sorted(stored.items())))
        if key == self.key or key == self.refused:
            return False
        try:
            files = read_overlay_texts(cat, texts)
            kept = read_overlay_texts(cat, stored_overlay_texts(stored))
        except OverlayError:
            self.refused = key
            raise
        self.overlays = with_stored(files, kept.by_district)
        self.overlays.warnings.extend(kept.warnings)
        self.key = key
        return True

    def taken(self) -> tuple[Overlays, Any]:
        """What is in force now, for ``undo`` if the engine refuses the new overlays."""
        return self.overlays, self.key

    def undo(self, before: tuple[Overlays, Any]) -> None:
        """Back to ``before``; the inputs just taken count as refused."""
        self.refused = self.key
        self.overlays, self.key = before

    def registry(self, registry: Registry) -> Registry:
        """What the engine runs with: standard -> overlay -> care plan."""
        return apply_overlays(registry, self.overlays)

    def describe(self) -> dict[str, Any]:
        """For a log line: the districts with an overlay and their number of changes."""
        return {d: len(o.changes) for d, o in self.overlays.by_district.items()}


# the files beside the rules, and district -> (version, text) of the stored active overlays
OverlayInputs = tuple[Texts, dict[str, tuple[str, str]]]


def in_force(cat: Catalogue, files: Overlays, stored: Mapping[str, tuple[str, str]]) -> Overlays:
    """The overlays in force: the files', each district's stored active version
    (district -> (version, text)) in place of its file. OverlayError if a stored
    one no longer fits ``cat``."""
    kept = read_overlay_texts(cat, stored_overlay_texts(stored))
    out = with_stored(files, kept.by_district)
    out.warnings.extend(kept.warnings)
    return out
