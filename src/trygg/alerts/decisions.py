"""The gates' decisions: what became of a signal or a gated event (the kinds
are listed in :mod:`trygg.alerts.gates`), with the records to persist."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trygg.alerts.alert import Alert, Record

__all__ = ["Decision", "DecisionKind", "changed"]


class DecisionKind(StrEnum):
    RAISED = "raised"
    SUPPRESSED = "suppressed"
    HELD = "held"
    REPEATED = "repeated"
    FOLDED = "folded"
    RELEASED = "released"
    CANCELLED = "cancelled"
    RESOLVED = "resolved"
    CLEARED = "cleared"
    UPDATED = "updated"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a gate decided. Persist ``records`` (new, append-only) and the alert
    snapshot with compare-and-set on ``previous_version`` (None: a new alert);
    route the alert if ``route``."""

    kind: DecisionKind
    alert: Alert | None
    reason: str = ""
    previous_version: int | None = None
    records: tuple[Record, ...] = ()

    @property
    def route(self) -> bool:
        return self.kind in (DecisionKind.RAISED, DecisionKind.RELEASED)


def changed(kind: DecisionKind, before: Alert | None, after: Alert, reason: str = "") -> Decision:
    n = before.version if before is not None else 0
    return Decision(
        kind=kind,
        alert=after,
        reason=reason,
        previous_version=before.version if before is not None else None,
        records=after.records[n:],
    )
