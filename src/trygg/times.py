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
