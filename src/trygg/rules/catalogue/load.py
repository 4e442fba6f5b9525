"""Loading a catalogue: its files, read, merged and validated in order.

Every problem is collected and reported together, one ``file:line: reason``
a line (:class:`CatalogueError`); a catalogue that loads is complete:
every rule compiles, every list and macro resolves.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trygg.model import EventType
from trygg.plain import line_of, load_yaml_with_lines, plain_message
from trygg.rules.catalogue.catalogue import Catalogue
from trygg.rules.catalogue.checks import check_adjustable, check_macro
from trygg.rules.catalogue.errors import CatalogueError, FieldError
from trygg.rules.catalogue.merge import Entry, merge_item
from trygg.rules.catalogue.specs import SPECS, UNION_TAGS


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """The files of ``paths``: a directory's ``*.yaml`` (and ``*.yml``) in name
    order, a file as given (districts' overlay files are found the same way)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(
                sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml") and x.is_file())
            )
        else:
            out.append(p)
    return out


def read_texts(files: Iterable[Path]) -> tuple[list[tuple[str, str]], list[str]]:
    """Each file's ``(path, text)``, and a ``file:0: cannot read`` problem for each
    that cannot be read (districts' overlay files are read the same way)."""
    out: list[tuple[str, str]] = []
    problems: list[str] = []
    for path in files:
        try:
            out.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            problems.append(f"{path}:0: cannot read: {exc.strerror}")
    return out, problems


def default_rules_dir() -> Path:
    """TRYGG_RULES_DIR, else the repository's top-level rules/ (source tree)."""
    env = os.environ.get("TRYGG_RULES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "rules"


def read_catalogue_files(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """The files ``load_catalogue(paths)`` reads, in its order: ``(path, text)``.

    Raises CatalogueError when there are none or one cannot be read.
    """
    files = rule_files(paths)
    if not files:
        raise CatalogueError([f"{', '.join(map(str, paths)) or '(none)'}: no rule files found"])
    out, problems = read_texts(files)
    if problems:
        raise CatalogueError(problems)
    return out


def load_catalogue(paths: Sequence[Path]) -> Catalogue:
    """Load, merge and validate catalogue files; raises CatalogueError."""
    return load_catalogue_texts(read_catalogue_files(paths))


def load_catalogue_texts(files: Sequence[tuple[str, str]]) -> Catalogue:
    """Load, merge and validate a catalogue from ``(source, text)`` pairs, in order.

    The version hash covers each source's base name and text, so the same
    files give the same version whether read from disk or from a stored
    catalogue version (trygg.store.versions).
    """
    problems: list[str] = []
    entries: dict[tuple[str, str], Entry] = {}
    order: list[str] = []
    declared: str | None = None
    digest = hashlib.sha256()
    if not files:
        raise CatalogueError(["(none): no rule files found"])
    for src, text in files:
        name = Path(src).name
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        try:
            data, locs = load_yaml_with_lines(text, src)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            problems.append(f"{src}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}")
            continue
        if data is None:
            continue
        if not isinstance(data, list):
            problems.append(
                f"{src}:1: a rule file is a list of items (- rule: / - list: / - macro:)"
            )
            continue
        for i, item in enumerate(data):
            here = locs.get((i,), (src, 0))
            item_locs = {k[1:]: v for k, v in locs.items() if k[:1] == (i,) and len(k) > 1}
            try:
                d = merge_item(item, here, item_locs, entries, order)
                if d is not None:
                    declared = d
            except FieldError as exc:
                f, ln = line_of(item_locs, exc.path, here)
                problems.append(f"{f}:{ln}: {exc}")
    if problems:
        raise CatalogueError(problems)

    lists = {n: list(e.data["items"]) for (w, n), e in entries.items() if w == "list"}
    macros = {n: e.data for (w, n), e in entries.items() if w == "macro"}
    h = digest.hexdigest()[:12]
    version = f"{declared}+{h}" if declared else h
    cat = Catalogue(
        version=version,
        files=[src for src, _ in files],
        specs=[],
        raw={},
        lists=lists,
        macros=macros,
    )
    for (w, n), e in entries.items():
        if w == "list":
            try:
                cat.resolve_types(e.data["items"], ("items",))
            except FieldError as exc:
                f, ln = line_of(e.locs, exc.path, e.origin)
                problems.append(f"{f}:{ln}: list {n!r}: {exc}")
        elif w == "macro":
            problems.extend(check_macro(cat, e))
    for name in order:
        e = entries[("rule", name)]
        kind = e.data.get("kind")
        cls = SPECS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            f, ln = line_of(e.locs, ("kind",), e.origin)
            problems.append(
                f"{f}:{ln}: rule {name!r}: 'kind' must be one of {', '.join(SPECS)} (got {kind!r})"
            )
            continue
        try:
            spec = cls.model_validate(e.data)
        except ValidationError as exc:
            for err in exc.errors():
                eloc = [x for x in err["loc"] if not isinstance(x, str) or x not in UNION_TAGS]
                f, ln = line_of(e.locs, eloc, e.origin)
                where = ".".join(str(x) for x in eloc)
                problems.append(
                    f"{f}:{ln}: rule {name!r}: {where + ': ' if where else ''}{plain_message(err)}"
                )
            continue
        try:
            cat.compile(spec, len(cat.specs))
        except FieldError as exc:
            f, ln = line_of(e.locs, exc.path, e.origin)
            problems.append(f"{f}:{ln}: rule {name!r}: {exc.path[0]}: {exc}")
            continue
        bound_problems = check_adjustable(cat, spec, e)
        if bound_problems:
            problems.extend(bound_problems)
            continue
        cat.specs.append(spec)
        cat.raw[name] = e.data
        cat.origins[name] = e.origin
    if problems:
        raise CatalogueError(problems)
    cat.compiled = tuple(cat.compile(s, i) for i, s in enumerate(cat.specs))
    cat.index = build_index(cat)
    return cat


def build_index(cat: Catalogue) -> dict[Any, tuple[int, ...]]:
    """Event type -> indexes of the rules that listen to it (types are not
    overridable, so one index serves every care plan)."""
    idx: dict[Any, list[int]] = {t: [] for t in EventType}
    for i, s in enumerate(cat.specs):
        rule = cat.compile(s.model_copy(update={"enabled": True}), i)
        assert rule is not None
        for t in rule.types:
            idx[t].append(i)
    return {t: tuple(v) for t, v in idx.items()}


def catalogue_summary(cat: Catalogue) -> list[dict[str, Any]]:
    return [json.loads(s.model_dump_json(by_alias=True)) for s in cat.specs]
