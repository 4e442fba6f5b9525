"""Catalogue versions, pure: content from rule files, diffs, and the shadow comparison.

A version's content is its list of ``(file name, YAML text)`` in load order;
``catalogue_of(files)`` rebuilds exactly the catalogue (and version string)
that was stored. The store side is ``trygg.store.versions``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from trygg.alerts.alert import FALSE_OUTCOMES
from trygg.rules.catalogue import Catalogue, load_catalogue_texts, read_catalogue_files

Files = list[tuple[str, str]]


def catalogue_content(paths: Sequence[Path]) -> tuple[Catalogue, Files]:
    """Load the catalogue at ``paths`` and its content as stored in a version.

    Raises CatalogueError like ``load_catalogue``.
    """
    read = read_catalogue_files(paths)
    cat = load_catalogue_texts(read)
    return cat, [(Path(src).name, text) for src, text in read]


def catalogue_of(files: Files, label: str = "") -> Catalogue:
    """The catalogue of a stored version (same version string as when it was stored)."""
    prefix = f"{label}/" if label else ""  # the hash covers the base name only
    return load_catalogue_texts([(f"{prefix}{name}", text) for name, text in files])


def _named(files: Files) -> list[tuple[str, str]]:
    """File names made unique (two directories may both have a standard.yaml)."""
    seen: dict[str, int] = {}
    out = []
    for name, text in files:
        n = seen.get(name, 0) + 1
        seen[name] = n
        out.append((name if n == 1 else f"{name} ({n})", text))
    return out


def unified_diff(a: Files, b: Files, a_label: str, b_label: str) -> str:
    """A unified diff of two versions' files, file by file (names paired)."""
    fa, fb = dict(_named(a)), dict(_named(b))
    names = [n for n, _ in _named(a)] + [n for n, _ in _named(b) if n not in fa]
    out: list[str] = []
    for n in names:
        ta, tb = fa.get(n), fb.get(n)
        if ta == tb:
            continue
        out.extend(
            difflib.unified_diff(
                (ta or "").splitlines(keepends=True),
                (tb or "").splitlines(keepends=True),
                fromfile=f"{a_label}/{n}" if ta is not None else "/dev/null",
                tofile=f"{b_label}/{n}" if tb is not None else "/dev/null",
            )
        )
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
    return "".join(out)


@dataclass
class Changes:
    """What changed between two versions, item by item."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # item -> [(field, old, new)]
    changed: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self, what: str) -> list[str]:
        out = [f"+ {what} {x}" for x in self.added]
        out += [f"- {what} {x}" for x in self.removed]
        for item, fields in self.changed.items():
            for name, old, new in fields:
                out.append(f"~ {what} {item}: {name}: {_short(old)} -> {_short(new)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": {
                k: [{"field": f, "old": o, "new": n} for f, o, n in v]
                for k, v in self.changed.items()
            },
        }


def _short(v: Any) -> str:
    if v is None:
        return "(none)"
    s = json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def _compare(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> Changes:
    ch = Changes(
        added=[k for k in b if k not in a],
        removed=[k for k in a if k not in b],
    )
    for k in a:
        if k not in b:
            continue
        fields = [
            (f, a[k].get(f), b[k].get(f))
            for f in sorted(set(a[k]) | set(b[k]))
            if a[k].get(f) != b[k].get(f)
        ]
        if fields:
            ch.changed[k] = fields
    return ch


def _spec(cat: Catalogue) -> dict[str, dict[str, Any]]:
    return {
        s.rule: json.loads(s.model_dump_json(by_alias=True, exclude={"rule"})) for s in cat.specs
    }


def rule_changes(a: Catalogue, b: Catalogue) -> Changes:
    """Rules added, removed, and the fields (parameters, texts) that changed."""
    return _compare(_spec(a), _spec(b))


def care_plan_changes(a: Files, b: Files) -> Changes:
    """Residents whose care plan was added, removed or changed (per rule)."""

    def plans(files: Files) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for _, text in files:
            doc = yaml.safe_load(text) or {}
            out.update({str(k): dict(v or {}) for k, v in doc.items()})
        return out

    return _compare(plans(a), plans(b))


# ------------------------------------------------------------------ shadow report


class AlertLike(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def resident(self) -> str: ...
    @property
    def device(self) -> str | None: ...
    @property
    def raised_at(self) -> datetime: ...
    @property
    def fires(self) -> int: ...
    @property
    def outcome(self) -> str | None: ...


A = TypeVar("A", bound=AlertLike)


def match_alerts(
    active: Iterable[A], shadow: Iterable[A], within: timedelta
) -> tuple[list[tuple[A, A]], list[A], list[A]]:
    """Pair each active alert with a shadow alert of the same rule, resident and
    device raised within ``within`` of it (nearest first, each used once).
    Returns ``(pairs, only_active, only_shadow)``."""
    pool: dict[tuple[str, str, str | None], list[A]] = {}
    for s in sorted(shadow, key=lambda x: x.raised_at):
        pool.setdefault((s.rule, s.resident, s.device), []).append(s)
    pairs: list[tuple[A, A]] = []
    only_active: list[A] = []
    for a in sorted(active, key=lambda x: x.raised_at):
        cands = pool.get((a.rule, a.resident, a.device), [])
        best = min(
            (s for s in cands if abs(s.raised_at - a.raised_at) <= within),
            key=lambda s: abs(s.raised_at - a.raised_at),
            default=None,
        )
        if best is None:
            only_active.append(a)
        else:
            cands.remove(best)
            pairs.append((a, best))
    only_shadow = sorted((s for c in pool.values() for s in c), key=lambda x: x.raised_at)
    return pairs, only_active, only_shadow


@dataclass
class RuleComparison:
    rule: str
    active_alerts: int = 0
    active_fires: int = 0
    active_false: int = 0  # outcome false_alarm or no_help_needed
    active_helped: int = 0
    shadow_alerts: int = 0
    shadow_fires: int = 0
    both: int = 0
    only_active: int = 0
    only_shadow: int = 0
    false_avoided: int = 0  # active false alarms the candidate did not raise
    helped_missed: int = 0  # active alerts where help was given that the candidate missed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare(
    active: Sequence[AlertLike], shadow: Sequence[AlertLike], within: timedelta
) -> list[RuleComparison]:
    """Per rule: the active catalogue's alerts (with their false-alarm feedback)
    beside the candidate's, and which appear in only one of them."""
    rows: dict[str, RuleComparison] = {}

    def row(rule: str) -> RuleComparison:
        return rows.setdefault(rule, RuleComparison(rule))

    for a in active:
        r = row(a.rule)
        r.active_alerts += 1
        r.active_fires += a.fires
        r.active_false += a.outcome in FALSE_OUTCOMES
        r.active_helped += a.outcome == "helped"
    for s in shadow:
        r = row(s.rule)
        r.shadow_alerts += 1
        r.shadow_fires += s.fires
    pairs, only_a, only_s = match_alerts(active, shadow, within)
    for a, _ in pairs:
        row(a.rule).both += 1
    for a in only_a:
        r = row(a.rule)
        r.only_active += 1
        r.false_avoided += a.outcome in FALSE_OUTCOMES
        r.helped_missed += a.outcome == "helped"
    for s in only_s:
        row(s.rule).only_shadow += 1
    return [rows[k] for k in sorted(rows)]


def false_alarms_by_rule(alerts: Iterable[AlertLike]) -> dict[str, tuple[int, int]]:
    """Per rule: ``(alerts, of which false)`` — false = outcome false_alarm or
    no_help_needed given by staff."""
    out: dict[str, tuple[int, int]] = {}
    for a in alerts:
        n, f = out.get(a.rule, (0, 0))
        out[a.rule] = (n + 1, f + (a.outcome in FALSE_OUTCOMES))
    return out
