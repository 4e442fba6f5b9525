"""The data of an alert's ``raised`` record: everything that identifies the
alert, as :func:`trygg.alerts.lifecycle.raise_alert` writes it.
:meth:`trygg.alerts.alert.Alert.from_records` reads it back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from trygg.model import Severity

__all__ = ["raised_data"]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def raised_data(
    *,
    resident: str,
    team: str,
    rule: str,
    catalogue_version: str,
    code: str,
    severity: Severity,
    events: tuple[str, ...],
    device: str | None,
    title: str,
    signal_at: datetime | None,
    suppressed_reason: str | None,
    silence_id: str | None,
    held_until: datetime | None,
    held_by: str | None,
    flapping: bool,
) -> dict[str, Any]:
    """The ``data`` of a ``raised`` record: everything that identifies the alert."""
    return {
        "resident": resident,
        "team": team,
        "rule": rule,
        "catalogue_version": catalogue_version,
        "code": code,
        "severity": severity.value,
        "events": list(events),
        "device": device,
        "title": title,
        "signal_at": _iso(signal_at),
        "suppressed_reason": suppressed_reason,
        "silence_id": silence_id,
        "held_until": _iso(held_until),
        "held_by": held_by,
        "flapping": flapping,
    }
