"""Problems in plain words: ``file:line: reason``, one line each, all at once.

Shared by the settings, the registry, the routing file, the rule catalogue and
``trygg check``:

- :func:`read_yaml` parses YAML and keeps the line of every key and value (by
  its path of keys and indexes), and notes keys given twice (YAML keeps only
  the last one, silently);
- :func:`checked_yaml` reads YAML text and raises one error with all its
  problems; :func:`read_file` reads a file, or raises ``file: cannot read``;
- :func:`validation_problems` turns a pydantic ``ValidationError`` into one
  line per problem, at the line where it was written, in words a care-team
  administrator reads ("must be a whole number", "unknown field 'nmae' (a
  resident has: id, team, ...)"), without pydantic's "Value error," prefix,
  union member names or documentation links.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

Path_ = tuple[str | int, ...]
Loc = tuple[str, int]  # (file, line); line 0: unknown


class YamlSyntaxError(ValueError):
    """A file that is not YAML; the message is ``file:line: not valid YAML: ...``."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem: ``file:line: text`` (``file: text`` when the line is not known)."""

    source: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{where(self.source, self.line)}: {self.text}"


@dataclass
class YamlDoc:
    data: Any
    locs: dict[Path_, Loc] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # keys given twice


def where(source: str, line: int) -> str:
    return f"{source}:{line}" if line else source


def yaml_error(exc: yaml.YAMLError, source: str) -> str:
    """``file:line: not valid YAML: reason`` for a parser error."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 0
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context and "expected" in str(problem) else str(problem)
    return f"{where(source, line)}: not valid YAML: {text}"


def read_yaml(text: str, source: str) -> YamlDoc:
    """Parse YAML, recording the line of every value; raises YamlSyntaxError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(None)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(yaml_error(exc, source)) from None
    finally:
        loader.dispose()
    doc = YamlDoc(data)
    _walk(node, (), source, doc)
    return doc


def checked_yaml(
    text: str,
    source: str,
    problems: Callable[[Any, str, dict[Path_, Loc]], list[Problem]],
    error: Callable[[str | list[str]], Exception],
) -> Any:
    """The data of a YAML text that has no problems; else raises ``error`` with the
    line of a YAML syntax error, or with every problem (``problems(data, source,
    locs)`` and keys given twice) in file order. The registry's and the routing
    file's reading."""
    try:
        doc = read_yaml(text, source)
    except YamlSyntaxError as exc:
        raise error(str(exc)) from None
    found = sorted([*doc.problems, *problems(doc.data, source, doc.locs)])
    if found:
        raise error([str(p) for p in found])
    return doc.data


def read_file(path: Path, error: Callable[[str], Exception]) -> str:
    """A file's text (UTF-8); raises ``error("file: cannot read: reason")`` if it
    cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[Path_, Loc]]:
    """Parse YAML and record the line of every value (raises yaml.YAMLError)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    doc = YamlDoc(data)
    _walk(node, (), source, doc)
    return data, doc.locs


def _walk(n: yaml.Node, path: Path_, source: str, doc: YamlDoc) -> None:
    doc.locs[path] = (source, n.start_mark.line + 1)
    if isinstance(n, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in n.value:
            key: Any = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            line = k.start_mark.line + 1
            if isinstance(k, yaml.ScalarNode) and key != "<<":
                if key in seen:
                    doc.problems.append(
                        Problem(
                            source,
                            line,
                            f"{key!r} is given twice (also on line {seen[key]}); "
                            "only the last one counts",
                        )
                    )
                seen[key] = line
            _walk(v, (*path, key), source, doc)
            doc.locs[(*path, key)] = (source, line)
    elif isinstance(n, yaml.SequenceNode):
        for i, v in enumerate(n.value):
            _walk(v, (*path, i), source, doc)


def line_of(locs: Mapping[Path_, Loc], path: Sequence[str | int], default: Loc) -> Loc:
    """The line of ``path``, or of the nearest enclosing value that has one."""
    p = tuple(path)
    while p:
        if p in locs:
            return locs[p]
        p = p[:-1]
    return locs.get((), default)


def dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


# ------------------------------------------------------------ messages --

_NOUN = {
    "string_type": "a text",
    "string_sub_type": "a text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "mapping_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "time_type": 'a time of day ("HH:MM", quoted)',
    "time_parsing": 'a time of day ("HH:MM", quoted)',
    "timedelta_type": "a duration (30s, 5m, 1h30m)",
    "timedelta_parsing": "a duration (30s, 5m, 1h30m)",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "datetime_type": "a date and time",
    "datetime_parsing": "a date and time",
    "none_required": "empty",
}

# Regular expressions of ids, as words (a pydantic pattern error shows the pattern).
PATTERN_WORDS: dict[str, str] = {
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$": "up to 64 letters, digits, '.', '_', ':' or '-', "
    "starting with a letter or digit",
    r"^[a-z0-9][a-z0-9._-]{0,63}$": "lower case letters, digits, '.', '_' or '-'",
}


def shown(value: Any) -> str:
    """A value as it reads in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def plain_message(err: Mapping[str, Any]) -> str:
    """One pydantic error detail in plain words (without its location)."""
    t = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if t in _NOUN:
        return f"must be {_NOUN[t]}, not {shown(value)}"
    if t == "missing":
        return "is missing (required)"
    if t == "extra_forbidden":
        return "unknown field"
    if t in ("enum", "literal_error"):
        return f"must be one of {_choices(str(ctx.get('expected', '')))}, not {shown(value)}"
    if t == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        words = PATTERN_WORDS.get(pattern, f"of the form {pattern}")
        return f"{shown(value)} is not allowed: must be {words}"
    if t == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must have at least {n} characters"
    if t == "string_too_long":
        return f"must have at most {ctx.get('max_length')} characters"
    if t == "too_short":
        n = ctx.get("min_length", 1)
        return f"must have at least {n} {'entry' if n == 1 else 'entries'}"
    if t == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if t == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, not {shown(value)}"
    if t == "greater_than":
        return f"must be more than {ctx.get('gt')}, not {shown(value)}"
    if t == "less_than_equal":
        return f"must be at most {ctx.get('le')}, not {shown(value)}"
    if t == "less_than":
        return f"must be less than {ctx.get('lt')}, not {shown(value)}"
    msg = str(err.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    return msg


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" -> "a, b, c"."""
    items = re.findall(r"'([^']*)'", expected)
    return ", ".join(items) if items else expected


# ------------------------------------------------------- locations & types --


def _strip(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _member_for(tp: Any, tag: str) -> Any:
    """The member of a union that pydantic names ``tag`` in a location."""
    members = [a for a in get_args(tp) if a is not type(None)]
    for m in members:
        name = getattr(m, "__name__", None)
        if name == tag:
            return m
        origin = get_origin(m)
        if origin is not None and tag.startswith(getattr(origin, "__name__", "?") + "["):
            return m
    return None


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        out[info.alias or name] = info.annotation
    return out


def _resolve(model: Any, loc: Sequence[str | int]) -> tuple[Path_, Any, Any]:
    """Walk ``loc`` through the model's types: (the location without union member
    tags, the model at the parent of the last element, the type at the end)."""
    out: list[str | int] = []
    tp: Any = model
    parent: Any = None
    for p in loc:
        tp = _strip(tp)
        if _is_union(tp) and isinstance(p, str):
            tp = _member_for(tp, p)
            continue
        if p == "[key]":
            tp = None
            continue
        parent = tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
        out.append(p)
        if parent is not None:
            tp = _model_fields(parent).get(str(p))
        elif get_origin(tp) is dict and isinstance(p, str):
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple, set) and isinstance(p, int):
            tp = get_args(tp)[0]
        else:
            tp = None
    return tuple(out), parent, tp


def _unknown_field(name: str, model: Any) -> str:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"unknown field {name!r}"
    known = list(_model_fields(model))
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown field {name!r} ({hint}known here: {', '.join(known)})"


Subject = Callable[[Path_], tuple[str, Path_]]


def _by_path(path: Path_) -> tuple[str, Path_]:
    return "", path


def validation_problems(
    exc: ValidationError,
    model: Any,
    source: str,
    locs: Mapping[Path_, Loc] | None = None,
    subject: Subject = _by_path,
    base: Path_ = (),
) -> list[Problem]:
    """Every error of ``exc`` as ``file:line: [subject: ]field: reason``.

    ``model``: the validated model (for field names and union members);
    ``base``: where the validated data sits in the file; ``subject(path)``
    names what a location belongs to (``device 'bed-1'``) and returns the rest
    of the path to show."""
    locs = locs or {}
    errs: list[tuple[Path_, str, str]] = []  # (path, type, message)
    for err in exc.errors():
        path, parent, _ = _resolve(model, err["loc"])
        if err["type"] == "extra_forbidden" and path:
            msg = _unknown_field(str(path[-1]), parent)
        else:
            msg = plain_message(err)
        errs.append((path, str(err["type"]), msg))
    # A union reports each member's error; when one member got further (the
    # value has its shape), the others' "must be a ..." says nothing.
    deeper = {p[:i] for p, _, _ in errs for i in range(len(p))}
    kept = [e for e in errs if not (e[1] in _NOUN and e[0] in deeper)]
    grouped: dict[Path_, list[tuple[str, str]]] = {}
    for path, t, msg in kept:
        grouped.setdefault(path, []).append((t, msg))
    out: list[Problem] = []
    for path, items in grouped.items():
        full = (*base, *path)
        _, line = line_of(locs, full, (source, 0))
        who, rest = subject(full)
        if len(items) > 1 and all(t in _NOUN for t, _ in items):
            nouns = [_NOUN[t] for t, _ in items]
            value = next(
                (e.get("input") for e in exc.errors() if _resolve(model, e["loc"])[0] == path),
                None,
            )
            msg = f"must be {' or '.join(dict.fromkeys(nouns))}, not {shown(value)}"
        else:
            msg = "; or ".join(dict.fromkeys(m for _, m in items))
        parts = [p for p in (who, dotted(rest)) if p]
        out.append(Problem(source, line, ": ".join([*parts, msg])))
    return out
