"""Points in time as people type them on the command line."""

from __future__ import annotations

from datetime import date, datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo


def parse_when(text: str, timezone: str) -> datetime:
    """An ISO date (local midnight in ``timezone``) or date-time (local if it has
    no offset); ValueError otherwise.

    Reports and back-tests take periods in the site's local time, because
    that is how a care team and an auditor speak of "the night of 3 March".
    """
    zone = ZoneInfo(timezone)
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), dtime(0), zone)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date or time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=zone)


def parse_offset_time(text: str, opt: str) -> datetime:
    """An ISO date-time with an offset, given as option ``opt``; ValueError otherwise,
    its message naming the option (``--until: not an ISO time: 'x'``)."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{opt}: not an ISO time: {text!r}") from None
    if t.tzinfo is None:
        raise ValueError(f"{opt} needs an offset, e.g. 2026-03-30T00:00+02:00")
    return t
