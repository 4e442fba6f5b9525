"""A loaded, validated catalogue: its rules, their bounds, and compiling them.

:class:`Catalogue` is what loading (trygg.rules.catalogue.load) makes of the
rule files: the rule specs in definition order, the lists and macros they
name, each rule's adjustable bounds, and the compiled rules. It resolves a
rule's references (list names, macros, windows) when compiling it into its
kind (trygg.rules.kinds), and compiles a care plan's overrides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from trygg.model import DeviceKind, EventType, Room
from trygg.plain import Loc, Path_, plain_message
from trygg.rules.catalogue.errors import FieldError, OverrideError
from trygg.rules.catalogue.specs import (
    REASON,
    SPECS,
    UNION_TAGS,
    AbsenceSpec,
    ClockSpec,
    CountSpec,
    EventSpec,
    MatchRef,
    MatchSpec,
    OneOrMore,
    RuleSpec,
    SequenceSpec,
    ThresholdSpec,
    WindowRef,
    article,
    format_value,
    param_value,
)
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
            takes = f"{article(raw['kind'])} {raw['kind']} rule takes: {', '.join(cls.PARAMS)}"
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
                loc = ".".join(str(x) for x in err["loc"] if str(x) not in UNION_TAGS)
                param = str(err["loc"][0]) if err["loc"] else None
                found.append(
                    (
                        param if param in params else None,
                        f"rule {rid!r}: parameter {loc or '(rule)'!r}: {plain_message(err)}",
                    )
                )
            raise OverrideError(found) from None
