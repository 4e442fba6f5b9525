"""What loading checks beyond the rule specs: a macro (exactly one match or
one window, naming no other macro) and a rule's ``adjustable`` bounds
(parameters of its kind, in their unit, around the rule's own value). Each
returns its problems as ``file:line: reason``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from trygg.plain import line_of, plain_message
from trygg.rules.catalogue.catalogue import Catalogue
from trygg.rules.catalogue.errors import FieldError
from trygg.rules.catalogue.merge import Entry
from trygg.rules.catalogue.specs import (
    MatchSpec,
    RuleSpec,
    article,
    bound_value,
    format_value,
    param_value,
)


def check_adjustable(cat: Catalogue, spec: RuleSpec, e: Entry) -> list[str]:
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
                f"{where}: not a parameter of {article(spec.kind)} {spec.kind} rule "
                f"(it takes: {', '.join(params)})"
            )
            continue
        lo = hi = None
        try:
            if bound is not None and bound.min is not None:
                lo = bound_value(param, bound.min)
            if bound is not None and bound.max is not None:
                hi = bound_value(param, bound.max)
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


def check_macro(cat: Catalogue, e: Entry) -> list[str]:
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
                    raise FieldError(("match", *err["loc"]), plain_message(err)) from None
                cat.matcher(spec, ("match",))
            elif isinstance(m, str | list):
                cat.resolve_types(m, ("match",))
            else:
                raise FieldError(("match",), "a match is an event type, a list name or a mapping")
    except FieldError as exc:
        f, ln = line_of(e.locs, exc.path, e.origin)
        return [f"{f}:{ln}: macro {e.name!r}: {exc}"]
    return []
