"""The rule catalogue: YAML files of lists, macros and rules, validated on load.

A catalogue file is a YAML sequence of items, in the manner of Falco's rule
files::

    - list: activity_events
      items: [motion.detected, door.opened, door.closed]
    - macro: night
      window: "22:00-07:00"
    - rule: bed-exit-no-return
      kind: sequence
      ...

Files are read in the order given (a directory: its ``*.yaml`` files in name
order). A later file changes an earlier definition only explicitly, with
``override: {field: replace|append}`` (or ``append: true`` for every field
given), or switches a rule off with just ``- rule: x`` and ``enabled: false``.
Every problem is reported as ``file:line: reason``.

A rule may mark parameters as *adjustable* by a district, within bounds::

    adjustable:
      wait: {min: 15m, max: 45m}
      window: {}                 # adjustable, no bounds

A district's overlay (trygg.rules.overlays) may change only those, within the
bounds; a care plan may still change any parameter of its kind, but one
outside the bounds only with a ``reason`` (checked by ``trygg rules check
--registry`` and ``trygg check``, not by the engine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from trygg.durations import format_duration, parse_duration
from trygg.model import DeviceKind, EventType, Room, Severity
from trygg.plain import Loc, Path_, line_of, load_yaml_with_lines, plain_message
from trygg.rules.kinds import (
    ALL_TYPES,
    AbsenceRule,
    ClockRule,
    CountRule,
    DeviceAbsenceRule,
    EventRule,
    Matcher,
    Rule,
    SequenceRule,
    ThresholdRule,
)
from trygg.rules.windows import Window, parse_window


class OverrideError(ValueError):
    """A care-plan override that does not fit the catalogue: ``problems`` are
    (parameter, or None for the rule as a whole; message naming rule and parameter)."""

    def __init__(self, problems: Sequence[tuple[str | None, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(msg for _, msg in self.problems))


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message has one ``file:line: reason`` a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ------------------------------------------------------------------ specs --


def _duration(v: Any) -> timedelta:
    return parse_duration(v)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
RULE_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
OneOrMore = str | list[str]


class MatchSpec(BaseModel):
    """Which events: ``type`` (event types, list names or ``any``) and conditions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: OneOrMore
    room: Room | list[Room] | None = None
    not_room: Room | list[Room] | None = None
    kind: DeviceKind | list[DeviceKind] | None = None
    not_kind: DeviceKind | list[DeviceKind] | None = None
    above: float | None = None
    below: float | None = None


MatchRef = str | MatchSpec
WindowRef = str | dict[str, Any]


class Bound(BaseModel):
    """How far a district may move a parameter: ``min``/``max`` in the parameter's
    own unit (a duration, a number), either optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: str | float | None = None
    max: str | float | None = None


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class RuleTexts(BaseModel):
    """A rule's ``description`` and ``reason`` in a language other than the
    catalogue's English (the ``nb:`` block), so that a page in that language
    (the A3 page) has no English paragraphs. Both are required: a half-translated
    rule would mix languages on one page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Text
    reason: Text


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    rule: str = Field(pattern=RULE_ID)
    kind: str
    code: str = Field(min_length=1, max_length=16)
    severity: Severity
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    adjustable: dict[str, Bound | None] | None = None
    # The description and reason in Bokmål; optional (a site's own rules may
    # have none), the English ones stand in for it (``texts``).
    nb: RuleTexts | None = None

    PARAMS: ClassVar[tuple[str, ...]] = ("enabled",)
    # The languages a rule's texts may be given in besides English, as fields.
    TEXT_LANGS: ClassVar[tuple[str, ...]] = ("nb",)

    def translated(self, lang: str) -> RuleTexts | None:
        """The rule's texts given in ``lang`` (None for English or when not given)."""
        return getattr(self, lang) if lang in self.TEXT_LANGS else None

    def texts(self, lang: str) -> tuple[str, str]:
        """``(description, reason)`` in ``lang``, falling back to the catalogue's
        English when the rule has none in that language."""
        t = self.translated(lang)
        if t is None:
            return self.description, self.reason
        return t.description, t.reason


class EventSpec(RuleSpec):
    kind: Literal["event"]
    when: MatchRef
    window: WindowRef | None = None
    cancelled_by: MatchRef | None = None
    guard: Duration = timedelta(0)

    PARAMS = ("enabled", "window", "guard")


class ThresholdSpec(RuleSpec):
    kind: Literal["threshold"]
    when: MatchRef
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")

    PARAMS = ("enabled", "above", "below", "clear", "for")

    @model_validator(mode="after")
    def _one_side(self) -> ThresholdSpec:
        if (self.above is None) == (self.below is None):
            raise ValueError("a threshold rule needs exactly one of 'above' or 'below'")
        if self.clear is not None:
            if self.above is not None and self.clear > self.above:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or below above ({self.above:g})"
                )
            if self.below is not None and self.clear < self.below:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or above below ({self.below:g})"
                )
        return self


class AbsenceSpec(RuleSpec):
    kind: Literal["absence"]
    of: MatchRef
    for_: Duration | None = Field(default=None, alias="for")
    heartbeats: float | None = Field(default=None, gt=0)
    per: Literal["resident", "device"] = "resident"
    window: WindowRef | None = None

    PARAMS = ("enabled", "for", "heartbeats", "window")

    @model_validator(mode="after")
    def _span(self) -> AbsenceSpec:
        if self.for_ is None and self.heartbeats is None:
            raise ValueError("an absence rule needs 'for' (a duration) or 'heartbeats' (a number)")
        if self.heartbeats is not None and self.per != "device":
            raise ValueError("'heartbeats' needs 'per: device'")
        if self.window is not None and self.per == "device":
            raise ValueError("'window' is only supported with 'per: resident'")
        if self.for_ is not None and self.for_.total_seconds() <= 0:
            raise ValueError("'for' must be longer than 0s")
        return self


class SequenceSpec(RuleSpec):
    kind: Literal["sequence"]
    first: MatchRef
    window: WindowRef | None = None
    wait_starts_on: MatchRef | None = None
    unless: MatchRef
    wait: Duration

    PARAMS = ("enabled", "wait", "window")


class CountSpec(RuleSpec):
    kind: Literal["count"]
    of: MatchRef
    count: int = Field(ge=2)
    within: Duration
    window: WindowRef | None = None

    PARAMS = ("enabled", "count", "within", "window")


class ClockSpec(RuleSpec):
    """A device whose clock runs more than ``ahead`` before the receiver's (live)
    or the home's other devices' (replay). docs/rules.md, late events."""

    kind: Literal["clock"]
    ahead: Duration = timedelta(minutes=2)

    PARAMS = ("enabled", "ahead")

    @model_validator(mode="after")
    def _positive(self) -> ClockSpec:
        if self.ahead.total_seconds() <= 0:
            raise ValueError("'ahead' must be longer than 0s")
        return self


# The unit of each parameter a care plan or an overlay may change: how its bounds read.
_DURATION_PARAMS = ("wait", "for", "within", "guard", "ahead")
_NUMBER_PARAMS = ("above", "below", "clear", "heartbeats", "count")
# A care-plan or overlay entry may carry its reason next to the parameters.
REASON = "reason"


def param_value(spec: RuleSpec, param: str) -> Any:
    """The value of ``param`` (as a care plan names it) in ``spec``."""
    return getattr(spec, "for_" if param == "for" else param)


def format_value(v: Any) -> str:
    if isinstance(v, timedelta):
        return format_duration(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "(none)"
    return str(v)


def _bound_value(param: str, v: Any) -> Any:
    if param in _DURATION_PARAMS:
        return parse_duration(v)
    if param in _NUMBER_PARAMS:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"not a number: {v!r}")
        return float(v)
    raise ValueError(f"{param!r} takes no bounds (write {param}: {{}})")


SPECS: dict[str, type[RuleSpec]] = {
    "event": EventSpec,
    "threshold": ThresholdSpec,
    "absence": AbsenceSpec,
    "sequence": SequenceSpec,
    "count": CountSpec,
    "clock": ClockSpec,
}


# ------------------------------------------------------------- catalogue --


@dataclass
class Entry:
    """A list, macro or rule after merging overrides, with the line of each field."""

    what: str
    name: str
    data: dict[str, Any]
    locs: dict[Path_, Loc]
    origin: Loc


class FieldError(ValueError):
    def __init__(self, path: Sequence[str | int], msg: str) -> None:
        super().__init__(msg)
        self.path = tuple(path)


@dataclass
class Catalogue:
    """A loaded, validated catalogue. ``rules`` are in definition order."""

    version: str
    files: list[str]
    specs: list[RuleSpec]
    raw: dict[str, dict[str, Any]]
    lists: dict[str, list[str]]
    macros: dict[str, dict[str, Any]]
    origins: dict[str, Loc] = field(default_factory=dict)
    # rule -> adjustable parameter -> (min, max), parsed; None where unbounded
    adjustable: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    compiled: tuple[Rule | None, ...] = ()
    index: dict[Any, tuple[int, ...]] = field(default_factory=dict)

    @property
    def rule_ids(self) -> list[str]:
        return [s.rule for s in self.specs]

    def spec(self, rule_id: str) -> RuleSpec:
        for s in self.specs:
            if s.rule == rule_id:
                return s
        raise KeyError(rule_id)

    def position(self, rule_id: str) -> int:
        return self.rule_ids.index(rule_id)

    # ------------------------------------------------------------- bounds --
    def bounds_text(self, rule_id: str, param: str) -> str:
        """The standard's bounds of an adjustable parameter, e.g. ``15m-45m``."""
        lo, hi = self.adjustable.get(rule_id, {}).get(param, (None, None))
        if lo is None and hi is None:
            return "any value"
        if hi is None:
            return f"at least {format_value(lo)}"
        if lo is None:
            return f"at most {format_value(hi)}"
        return f"{format_value(lo)}-{format_value(hi)}"

    def out_of_bounds(self, rule_id: str, params: dict[str, Any]) -> list[tuple[str, str]]:
        """The parameters of ``params`` (a care plan's or an overlay's entry for
        ``rule_id``, already valid) that lie outside the standard's bounds:
        ``(parameter, "60m is above the standard's bound 45m (15m-45m)")``."""
        bounds = self.adjustable.get(rule_id, {})
        if not any(p in bounds for p in params):
            return []
        spec = self.override_spec(rule_id, params)
        out = []
        for param in params:
            lo, hi = bounds.get(param, (None, None))
            v = param_value(spec, param)
            if v is None:
                continue
            rng = self.bounds_text(rule_id, param)
            if lo is not None and v < lo:
                out.append(
                    (
                        param,
                        f"{format_value(v)} is below the standard's bound "
                        f"{format_value(lo)} ({rng})",
                    )
                )
            elif hi is not None and v > hi:
                out.append(
                    (
                        param,
                        f"{format_value(v)} is above the standard's bound "
                        f"{format_value(hi)} ({rng})",
                    )
                )
        return out

    # ------------------------------------------------------------ compile --
    def resolve_types(self, value: OneOrMore, path: Path_) -> frozenset[EventType]:
        out: set[EventType] = set()

        def add(name: str, seen: tuple[str, ...]) -> None:
            if name == "any":
                out.update(ALL_TYPES)
            elif name in self.lists:
                if name in seen:
                    raise FieldError(path, f"list {name!r} refers to itself")
                for x in self.lists[name]:
                    add(x, (*seen, name))
            else:
                try:
                    out.add(EventType(name))
                except ValueError:
                    raise FieldError(
                        path, f"{name!r} is neither an event type, a list nor 'any'"
                    ) from None

        for name in [value] if isinstance(value, str) else value:
            add(str(name), ())
        return frozenset(out)

    def matcher(self, ref: MatchRef, path: Path_) -> Matcher:
        if isinstance(ref, str):
            m = self.macros.get(ref)
            if m is not None:
                if "match" not in m:
                    raise FieldError(path, f"macro {ref!r} is a window, not an event match")
                spec = m["match"]
                ref = MatchSpec(type=spec) if isinstance(spec, str | list) else MatchSpec(**spec)
            else:
                ref = MatchSpec(type=ref)

        def rooms(v: Any) -> frozenset[Room] | None:
            return (
                None
                if v is None
                else frozenset(Room(x) for x in ([v] if isinstance(v, str) else v))
            )

        def kinds(v: Any) -> frozenset[DeviceKind] | None:
            if v is None:
                return None
            return frozenset(DeviceKind(x) for x in ([v] if isinstance(v, str) else v))

        return Matcher(
            self.resolve_types(ref.type, path),
            rooms(ref.room),
            rooms(ref.not_room),
            kinds(ref.kind),
            kinds(ref.not_kind),
            ref.above,
            ref.below,
        )

    def window(self, ref: WindowRef | None, path: Path_) -> Window | None:
        if ref is None:
            return None
        if isinstance(ref, str) and ref in self.macros:
            m = self.macros[ref]
            if "window" not in m:
                raise FieldError(path, f"macro {ref!r} is an event match, not a window")
            ref = m["window"]
        if isinstance(ref, str) and ref.strip().lower() in ("always", "all day", "none"):
            return None
        try:
            return parse_window(ref)
        except ValueError as exc:
            hint = "" if not isinstance(ref, str) else " or the name of a window macro"
            raise FieldError(path, f"{exc}{hint}") from None

    def compile(self, spec: RuleSpec, idx: int) -> Rule | None:
        """A runnable rule for ``spec`` (None when it is disabled)."""
        if not spec.enabled:
            return None
        base = (spec.rule, idx, spec.code, spec.severity, spec.title, self.version)
        if isinstance(spec, EventSpec):
            return EventRule(
                *base,
                self.matcher(spec.when, ("when",)),
                self.window(spec.window, ("window",)),
                None
                if spec.cancelled_by is None
                else self.matcher(spec.cancelled_by, ("cancelled_by",)),
                spec.guard.total_seconds(),
            )
        if isinstance(spec, ThresholdSpec):
            up = spec.above is not None
            limit = spec.above if spec.above is not None else spec.below
            assert limit is not None
            return ThresholdRule(
                *base,
                self.matcher(spec.when, ("when",)),
                limit,
                up,
                spec.clear if spec.clear is not None else limit,
                spec.for_.total_seconds(),
            )
        if isinstance(spec, AbsenceSpec):
            of = self.matcher(spec.of, ("of",))
            if spec.per == "device":
                return DeviceAbsenceRule(
                    *base,
                    of,
                    None if spec.for_ is None else spec.for_.total_seconds(),
                    spec.heartbeats,
                )
            assert spec.for_ is not None
            return AbsenceRule(
                *base, of, spec.for_.total_seconds(), self.window(spec.window, ("window",))
            )
        if isinstance(spec, SequenceSpec):
            return SequenceRule(
                *base,
                self.matcher(spec.first, ("first",)),
                self.window(spec.window, ("window",)),
                None
                if spec.wait_starts_on is None
                else self.matcher(spec.wait_starts_on, ("wait_starts_on",)),
                self.matcher(spec.unless, ("unless",)),
                spec.wait.total_seconds(),
            )
        if isinstance(spec, CountSpec):
            return CountRule(
                *base,
                self.matcher(spec.of, ("of",)),
                spec.count,
                spec.within.total_seconds(),
                self.window(spec.window, ("window",)),
            )
        if isinstance(spec, ClockSpec):
            return ClockRule(*base, spec.ahead.total_seconds())
        raise AssertionError(f"unknown rule spec {type(spec).__name__}")

    # ------------------------------------------------------- care plans --
    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> tuple[Rule | None, ...]:
        """The compiled rules of a care plan; raises ValueError naming rule and parameter."""
        if not overrides:
            return self.compiled
        out = list(self.compiled)
        for rid, params in overrides.items():
            spec = self.override_spec(rid, params)
            i = self.position(rid)
            try:
                out[i] = self.compile(spec, i)
            except FieldError as exc:
                param = str(exc.path[0])
                raise OverrideError(
                    [(param, f"rule {rid!r}: parameter {param!r}: {exc}")]
                ) from None
        return tuple(out)

    def override_spec(self, rid: str, params: Any) -> RuleSpec:
        if rid not in self.raw:
            known = ", ".join(self.rule_ids)
            raise OverrideError([(None, f"unknown rule {rid!r} (the catalogue has: {known})")])
        if not isinstance(params, dict):
            raise OverrideError([(None, f"rule {rid!r}: expected a mapping of parameter: value")])
        raw = self.raw[rid]
        cls = SPECS[raw["kind"]]
        params = {k: v for k, v in params.items() if k != REASON}
        unknown = [p for p in params if p not in cls.PARAMS]
        if unknown:
            takes = f"{_article(raw['kind'])} {raw['kind']} rule takes: {', '.join(cls.PARAMS)}"
            raise OverrideError(
                [(str(p), f"rule {rid!r}: unknown parameter {p!r} ({takes})") for p in unknown]
            )
        merged = {**raw, **params}
        if raw["kind"] == "threshold":  # keep the side the catalogue chose
            if "above" in params and raw.get("below") is not None:
                raise OverrideError(
                    [("above", f"rule {rid!r}: parameter 'above': this rule uses 'below'")]
                )
            if "below" in params and raw.get("above") is not None:
                raise OverrideError(
                    [("below", f"rule {rid!r}: parameter 'below': this rule uses 'above'")]
                )
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            found: list[tuple[str | None, str]] = []
            for err in exc.errors():
                loc = ".".join(str(x) for x in err["loc"] if str(x) not in _UNION_TAGS)
                param = str(err["loc"][0]) if err["loc"] else None
                found.append(
                    (
                        param if param in params else None,
                        f"rule {rid!r}: parameter {loc or '(rule)'!r}: {_msg(err)}",
                    )
                )
            raise OverrideError(found) from None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _msg(err: Any) -> str:
    return plain_message(err)


# ----------------------------------------------------------------- loading --

_ITEM_KINDS = ("rule", "list", "macro", "version")


def _files(paths: Sequence[Path]) -> list[Path]:
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


def default_rules_dir() -> Path:
    """TRYGG_RULES_DIR, else the repository's top-level rules/ (source tree)."""
    env = os.environ.get("TRYGG_RULES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "rules"


def read_catalogue_files(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """The files ``load_catalogue(paths)`` reads, in its order: ``(path, text)``.

    Raises CatalogueError when there are none or one cannot be read.
    """
    files = _files(paths)
    if not files:
        raise CatalogueError([f"{', '.join(map(str, paths)) or '(none)'}: no rule files found"])
    out: list[tuple[str, str]] = []
    problems: list[str] = []
    for path in files:
        try:
            out.append((str(path), path.read_text(encoding="utf-8")))
        except OSError as exc:
            problems.append(f"{path}:0: cannot read: {exc.strerror}")
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
                d = _merge_item(item, here, item_locs, entries, order)
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
            problems.extend(_check_macro(cat, e))
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
                eloc = [x for x in err["loc"] if not isinstance(x, str) or x not in _UNION_TAGS]
                f, ln = line_of(e.locs, eloc, e.origin)
                where = ".".join(str(x) for x in eloc)
                problems.append(
                    f"{f}:{ln}: rule {name!r}: {where + ': ' if where else ''}{_msg(err)}"
                )
            continue
        try:
            cat.compile(spec, len(cat.specs))
        except FieldError as exc:
            f, ln = line_of(e.locs, exc.path, e.origin)
            problems.append(f"{f}:{ln}: rule {name!r}: {exc.path[0]}: {exc}")
            continue
        bound_problems = _check_adjustable(cat, spec, e)
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


# pydantic puts the union member into an error's location; drop it for lines.
_UNION_TAGS = {"str", "MatchSpec", "dict[str,any]", "list[str]", "function-before[_duration()]"}


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


def _check_adjustable(cat: Catalogue, spec: RuleSpec, e: Entry) -> list[str]:
    """Parse the rule's ``adjustable`` bounds into ``cat.adjustable``: each a
    parameter of its kind, bounds in its unit, min <= default <= max."""
    if not spec.adjustable:
        return []
    out: list[str] = []
    parsed: dict[str, tuple[Any, Any]] = {}
    params = type(spec).PARAMS
    for param, bound in spec.adjustable.items():
        f, ln = line_of(e.locs, ("adjustable", param), e.origin)
        where = f"{f}:{ln}: rule {spec.rule!r}: adjustable: {param!r}"
        if param not in params:
            out.append(
                f"{where}: not a parameter of {_article(spec.kind)} {spec.kind} rule "
                f"(it takes: {', '.join(params)})"
            )
            continue
        lo = hi = None
        try:
            if bound is not None and bound.min is not None:
                lo = _bound_value(param, bound.min)
            if bound is not None and bound.max is not None:
                hi = _bound_value(param, bound.max)
        except ValueError as exc:
            out.append(f"{where}: {exc}")
            continue
        if lo is not None and hi is not None and lo > hi:
            out.append(f"{where}: min {format_value(lo)} is above max {format_value(hi)}")
            continue
        v = param_value(spec, param)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            out.append(f"{where}: the standard's own value {format_value(v)} is outside its bounds")
            continue
        parsed[param] = (lo, hi)
    if not out:
        cat.adjustable[spec.rule] = parsed
    return out


def _check_macro(cat: Catalogue, e: Entry) -> list[str]:
    d = e.data
    keys = {"match", "window"} & set(d)
    f, ln = e.origin
    if len(keys) != 1:
        return [f"{f}:{ln}: macro {e.name!r}: needs exactly one of 'match' or 'window'"]
    try:
        if "window" in d:
            if isinstance(d["window"], str) and d["window"] in cat.macros:
                raise FieldError(("window",), "a window macro cannot name another macro")
            cat.window(d["window"], ("window",))
        else:
            m = d["match"]
            if isinstance(m, str) and m in cat.macros:
                raise FieldError(("match",), "a match macro cannot name another macro")
            if isinstance(m, dict):
                try:
                    spec = MatchSpec.model_validate(m)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    raise FieldError(("match", *err["loc"]), _msg(err)) from None
                cat.matcher(spec, ("match",))
            elif isinstance(m, str | list):
                cat.resolve_types(m, ("match",))
            else:
                raise FieldError(("match",), "a match is an event type, a list name or a mapping")
    except FieldError as exc:
        f, ln = line_of(e.locs, exc.path, e.origin)
        return [f"{f}:{ln}: macro {e.name!r}: {exc}"]
    return []


def _merge_item(
    item: Any,
    here: Loc,
    locs: dict[Path_, Loc],
    entries: dict[tuple[str, str], Entry],
    order: list[str],
) -> str | None:
    if not isinstance(item, dict):
        raise FieldError((), "each item must be a mapping starting with rule:, list: or macro:")
    whats = [k for k in _ITEM_KINDS if k in item]
    if len(whats) != 1:
        raise FieldError((), "each item needs exactly one of rule:, list:, macro: or version:")
    for k in item:
        if not isinstance(k, str):
            hint = (
                " (YAML reads on/off/yes/no as true/false: quote the key)"
                if isinstance(k, bool)
                else ""
            )
            raise FieldError((), f"key {k!r} is not a text{hint}")
    what = whats[0]
    if what == "version":
        if len(item) != 1:
            raise FieldError((), "a version item has only 'version'")
        return str(item["version"])
    name = item[what]
    if not isinstance(name, str) or not name:
        raise FieldError((what,), f"the {what} name must be a text")
    if what == "rule" and not re.match(RULE_ID, name):
        raise FieldError((what,), f"rule id {name!r} must be lower case letters, digits, '.', '-'")
    key = (what, name)
    override = item.get("override")
    append = item.get("append", False)
    fields = {k: v for k, v in item.items() if k not in (what, "override", "append")}
    existing = entries.get(key)
    toggle = what == "rule" and set(fields) == {"enabled"} and override is None and not append
    if existing is None:
        if override is not None or append or toggle:
            raise FieldError(
                (what,),
                f"{what} {name!r} is not defined in an earlier file, so it cannot be changed here",
            )
        if what == "list":
            items = fields.get("items")
            if set(fields) != {"items"} or not isinstance(items, list):
                raise FieldError((what,), f"list {name!r} needs 'items:' and nothing else")
        if what == "macro" and not ({"match", "window"} & set(fields)):
            raise FieldError((what,), f"macro {name!r} needs 'match:' or 'window:'")
        entries[key] = Entry(what, name, {what: name, **fields}, dict(locs), here)
        if what == "rule":
            order.append(name)
        return None
    if toggle:
        existing.data["enabled"] = fields["enabled"]
        existing.locs[("enabled",)] = locs.get(("enabled",), here)
        return None
    if override is None and not append:
        f, ln = existing.origin
        raise FieldError(
            (what,),
            f"{what} {name!r} is already defined at {f}:{ln}; "
            "to change it, add 'override: {field: replace}' (or append)",
        )
    if override is not None and not isinstance(override, dict):
        raise FieldError(("override",), "override must map each field to replace or append")
    for fname, value in fields.items():
        mode = "append" if append else None
        if override is not None:
            mode = override.get(fname)
        if mode not in ("replace", "append"):
            raise FieldError(
                (fname,), f"field {fname!r} is not listed in override (as replace or append)"
            )
        if mode == "replace":
            existing.data[fname] = value
            # the earlier file's lines inside the replaced value no longer apply:
            # a problem in the new value is reported at the new file's lines
            for k in [k for k in existing.locs if k[:1] == (fname,)]:
                del existing.locs[k]
        else:
            old = existing.data.get(fname)
            if isinstance(old, list):
                value = value if isinstance(value, list) else [value]
                existing.data[fname] = old + value
            elif isinstance(old, dict) and isinstance(value, dict):
                existing.data[fname] = {**old, **value}
            elif old is None:
                existing.data[fname] = value
            else:
                raise FieldError(
                    (fname,), f"cannot append to {fname!r}: it is not a list or mapping"
                )
        for k, v in locs.items():
            if k[:1] == (fname,):
                existing.locs[k] = v
    if override is not None:
        for fname in override:
            if fname not in fields:
                raise FieldError(
                    ("override", fname), f"override names {fname!r} but gives no value"
                )
    return None


def catalogue_summary(cat: Catalogue) -> list[dict[str, Any]]:
    return [json.loads(s.model_dump_json(by_alias=True)) for s in cat.specs]
