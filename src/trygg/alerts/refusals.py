"""Refusals of the alert lifecycle's actions (:mod:`trygg.alerts.lifecycle`):
:class:`TransitionError`, an action the table of transitions
(:mod:`trygg.alerts.transitions`) does not allow on the alert as it is, with
a message a nurse can read on a phone, and :class:`ConflictError`.

Concurrency: every function takes ``expected_version`` (the version the
actor saw). If records that change the state were appended since, the action
is checked against the alert *as it is now*: if it is no longer allowed the
refusal names why ("alert is taken by nurse-7"); if it would still be allowed
a :class:`ConflictError` asks the actor to look again rather than acting on a
stale view. Informational records appended in between (an escalation, a
repeat) do not count as a conflict. The I/O layer stores with
compare-and-set on ``version``; when that fails it reloads and calls again.
"""

from __future__ import annotations

from typing import Any

from trygg.alerts.alert import Alert
from trygg.alerts.transitions import refusal

__all__ = ["ConflictError", "TransitionError", "guard"]


class TransitionError(ValueError):
    """An action that is not allowed on the alert as it is; ``str()`` is the reason."""

    def __init__(self, message: str, alert: Alert | None = None) -> None:
        super().__init__(message)
        self.alert = alert

    @property
    def reason(self) -> str:
        return str(self)


class ConflictError(TransitionError):
    """The alert changed since the actor saw it; the action may still be allowed,
    but the actor should look at the alert again before doing it."""


def guard(alert: Alert, action: str, actor: str, expected_version: int | None, **kw: Any) -> None:
    """Check ``action`` by ``actor`` on ``alert`` as the actor saw it at
    ``expected_version`` (None: as it is); raises the refusal."""
    msg = refusal(alert, action, actor, **kw)
    if expected_version is not None and expected_version != alert.version:
        if expected_version > alert.version or expected_version < 1:
            raise ConflictError(
                f"alert version {expected_version} is unknown (it is at {alert.version}); "
                "reload it",
                alert,
            )
        since = [r for r in alert.records[expected_version:] if r.step.changes_state]
        if msg is not None:
            raise TransitionError(msg, alert)
        if since:
            last = since[-1]
            raise ConflictError(
                f"alert was {last.step.value} by {last.actor} at {last.at.isoformat()} "
                "since you looked at it; look again",
                alert,
            )
    if msg is not None:
        raise TransitionError(msg, alert)
