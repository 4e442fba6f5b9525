"""Human durations in configuration files: ``30s``, ``5m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse ``5m`` or ``1h30m`` (or a number of seconds) into a timedelta.

    Raises ValueError with the offending text, so a configuration error can be
    reported where it was written.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return timedelta(seconds=text)
    s = str(text).strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 5m, 1h30m, 2d)")
    return timedelta(seconds=total)


def _duration(v: Any) -> timedelta:
    # pydantic names a union member of this type after the function:
    # "function-before[_duration()]" (trygg.rules.catalogue.specs.UNION_TAGS)
    return parse_duration(v)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A pydantic field type: a timedelta written as ``5m``, ``1h30m`` or seconds."""


def format_duration(d: timedelta) -> str:
    """The inverse of parse_duration for whole seconds: 5400 s -> ``1h30m``."""
    secs = int(d.total_seconds())
    if secs == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, secs = divmod(secs, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)
