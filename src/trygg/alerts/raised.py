"""The data of an alert's ``raised`` record: everything that identifies the
alert, as :func:`trygg.alerts.lifecycle.raise_alert` writes it.
:meth:`trygg.alerts.alert.Alert.from_records` reads it back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trygg.model import Signal

__all__ = ["raised_data"]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def raised_data(
    signal: Signal,
    *,
    team: str,
    suppressed_reason: str | None,
    silence_id: str | None,
    held_until: datetime | None,
    held_by: str | None,
    flapping: bool,
) -> dict[str, Any]:
    """The ``data`` of a ``raised`` record: everything that identifies the alert,
    from the signal that raised it and what the gates decided."""
    return {
        "resident": signal.resident,
        "team": team,
        "rule": signal.rule,
        "catalogue_version": signal.catalogue_version,
        "code": signal.code,
        "severity": signal.severity.value,
        "events": list(signal.events),
        "device": signal.device,
        "title": signal.title,
        "signal_at": _iso(signal.at),
        "suppressed_reason": suppressed_reason,
        "silence_id": silence_id,
        "held_until": _iso(held_until),
        "held_by": held_by,
        "flapping": flapping,
    }
