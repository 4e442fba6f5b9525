"""The alert lifecycle: a pure state machine over append-only records.

::

    raised -> notified -> acknowledged -> assigned -> accepted -> arrived -> resolved
       \\__________\\______________\\___________\\___________\\__________\\--> cancelled

Legal transitions, who may do them and the record each writes are a table,
:data:`trygg.alerts.transitions.TRANSITIONS`; anything else raises
:class:`TransitionError` with a message a nurse can read on a phone.

Concurrency: every function takes ``expected_version`` (the version the
actor saw); the refusals and the version check are
:mod:`trygg.alerts.refusals`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from trygg.alerts.alert import (
    SYSTEM,
    Alert,
    CancelReason,
    Outcome,
    Record,
    State,
    Step,
    append,
)
from trygg.alerts.raised import raised_data
from trygg.alerts.refusals import ConflictError, TransitionError, guard
from trygg.alerts.transitions import ACTIONS, TRANSITIONS, allowed_actions
from trygg.model import Signal, SignalAction

__all__ = [
    "ACTIONS",
    "VKP_EVENT_CODES",
    "ConflictError",
    "TransitionError",
    "accept",
    "acknowledge",
    "act",
    "allowed_actions",
    "arrive",
    "assign",
    "cancel",
    "clear",
    "escalate",
    "flag_flapping",
    "note",
    "notify",
    "raise_alert",
    "release",
    "renotify",
    "repeat",
    "resolve",
    "take",
    "vkp_events",
]


# VKP alarm life-cycle events (vkp-composition-event-v090, REFERENCE.md §1.5):
# step -> (code, name). Steps not listed have no VKP event.
VKP_EVENT_CODES: dict[Step, tuple[int, str]] = {
    Step.RAISED: (0, "hendelse_meldt"),  # registered
    Step.ACKNOWLEDGED: (1, "hendelse_behandles"),  # handling started (the answer)
    Step.ASSIGNED: (4, "hendelse_til_utrykning"),  # handed to the mobile responder
    Step.ACCEPTED: (5, "hendelse_ok_utrykning"),  # responder accepted
    Step.RESOLVED: (3, "hendelse_kvittert"),  # closed (acknowledged/cleared)
    Step.CANCELLED: (3, "hendelse_kvittert"),  # closed without a response
}


def vkp_events(alert: Alert) -> list[tuple[int, str, datetime, str]]:
    """The alert's records as VKP life-cycle events: (code, name, at, actor)."""
    out = []
    for r in alert.records:
        v = VKP_EVENT_CODES.get(r.step)
        if v is not None:
            out.append((v[0], v[1], r.at, r.actor))
    return out


# ------------------------------------------------------------------- raising


def raise_alert(
    signal: Signal,
    *,
    alert_id: str,
    team: str,
    now: datetime,
    suppressed_reason: str | None = None,
    silence_id: str | None = None,
    held_until: datetime | None = None,
    held_by: str | None = None,
    flapping: bool = False,
    note: str = "",
) -> Alert:
    """A new alert from a FIRE signal; its first record is ``raised`` (by ``system``)."""
    if signal.action is not SignalAction.FIRE:
        raise ValueError("only a 'fire' signal raises an alert")
    if not alert_id:
        raise ValueError("an alert needs an id")
    data = raised_data(
        signal,
        team=team,
        suppressed_reason=suppressed_reason,
        silence_id=silence_id,
        held_until=held_until,
        held_by=held_by,
        flapping=flapping,
    )
    return Alert.from_records([Record(alert_id, 0, Step.RAISED, now, SYSTEM, note, data)])


# ---------------------------------------------------------------- transitions


def _record(
    alert: Alert,
    action: str,
    now: datetime,
    actor: str,
    note: str = "",
    data: Mapping[str, Any] | None = None,
    *,
    expected_version: int | None = None,
    **kw: Any,
) -> Alert:
    """The shape of every transition: check ``action``, then write its record."""
    guard(alert, action, actor, expected_version, **kw)
    return append(alert, TRANSITIONS[action].writes, now, actor, note, data)


def _take_first(alert: Alert, now: datetime, actor: str) -> Alert:
    """What ``take`` writes before its ``accepted``: acknowledged and assigned, if not yet."""
    a = alert
    if a.state in (State.RAISED, State.NOTIFIED):
        a = append(a, Step.ACKNOWLEDGED, now, actor, data={"via": "take"})
    if a.state is State.ACKNOWLEDGED:
        a = append(a, Step.ASSIGNED, now, actor, data={"assignee": actor, "via": "take"})
    return a


class _StaffStep:
    """A staff action whose only arguments are the actor and a note: it checks the
    action, writes what comes ``first`` (``take``: the steps it skips), then its
    record, from the row of ``TRANSITIONS``. One class, so the four actions of this
    shape share one signature; ``act`` calls them by name."""

    def __init__(
        self,
        action: str,
        doc: str,
        first: Callable[[Alert, datetime, str], Alert] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.action = self.__name__ = self.__qualname__ = action
        self.__doc__ = doc
        self._first = first
        self._data = data

    def __call__(
        self,
        alert: Alert,
        now: datetime,
        actor: str,
        *,
        note: str = "",
        expected_version: int | None = None,
    ) -> Alert:
        guard(alert, self.action, actor, expected_version)
        a = alert if self._first is None else self._first(alert, now, actor)
        return append(a, TRANSITIONS[self.action].writes, now, actor, note, self._data)


class _Notice:
    """A notification the system has sent for the alert (level 1, or a reminder):
    its record carries the escalation level, ``what`` else the alert says, and the
    targets. One class, so the two of this shape share one signature."""

    def __init__(self, action: str, doc: str, what: Callable[[Alert], dict[str, Any]]) -> None:
        self.action = self.__name__ = self.__qualname__ = action
        self.__doc__ = doc
        self._what = what

    def __call__(
        self,
        alert: Alert,
        now: datetime,
        *,
        targets: list[str] | None = None,
        actor: str = SYSTEM,
        expected_version: int | None = None,
    ) -> Alert:
        data = {**self._what(alert), "targets": targets or []}
        ev = expected_version
        return _record(alert, self.action, now, actor, data=data, expected_version=ev)


notify = _Notice(
    "notify",
    "Level 1 of the escalation policy has been sent: ``raised -> notified``.",
    lambda alert: {"level": 1},
)

acknowledge = _StaffStep(
    "acknowledge", "Someone answers the alert (VKP ``hendelse_behandles``); escalation stops."
)


take = _StaffStep(
    "take",
    """One tap "I take it": acknowledge (if not yet), assign to self and accept.

    If two staff press take at once, the first to be stored wins; the second
    gets ``TransitionError("alert is taken by <first>")``.
    """,
    first=_take_first,
    data={"via": "take"},
)


def assign(
    alert: Alert,
    now: datetime,
    actor: str,
    assignee: str,
    *,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """Hand the alert to ``assignee`` (VKP ``til_utrykning``); re-assigning is allowed
    until the assignee has arrived."""
    data: dict[str, Any] = {"assignee": assignee}
    if alert.assignee is not None:
        data["previous"] = alert.assignee
    ev = expected_version
    return _record(alert, "assign", now, actor, note, data, expected_version=ev, assignee=assignee)


accept = _StaffStep("accept", "The assignee accepts (VKP ``ok_utrykning``).")

arrive = _StaffStep("arrive", "The assignee is with the resident (time to arrival).")


def resolve(
    alert: Alert,
    now: datetime,
    actor: str,
    *,
    outcome: Outcome | None = None,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """Close an answered alert; ``outcome`` feeds the false-alarm statistics."""
    data = {"outcome": outcome.value} if outcome is not None else {}
    return _record(alert, "resolve", now, actor, note, data, expected_version=expected_version)


def cancel(
    alert: Alert,
    now: datetime,
    actor: str,
    reason: CancelReason,
    *,
    outcome: Outcome | None = None,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """Close an alert without a response, with a reason (device reset, false alarm…)."""
    guard(alert, "cancel", actor, expected_version, reason=reason)
    if outcome is None and reason is CancelReason.FALSE_ALARM:
        outcome = Outcome.FALSE_ALARM
    if outcome is None and reason is CancelReason.TEST:
        outcome = Outcome.TEST
    data: dict[str, Any] = {"reason": CancelReason(reason).value}
    if outcome is not None:
        data["outcome"] = outcome.value
    return append(alert, Step.CANCELLED, now, actor, note, data)


def escalate(
    alert: Alert,
    now: datetime,
    level: int,
    *,
    targets: list[str] | None = None,
    actor: str = SYSTEM,
    expected_version: int | None = None,
) -> Alert:
    """Escalation level ``level`` (>= 2) has been sent."""
    data = {"level": level, "targets": targets or []}
    ev = expected_version
    return _record(alert, "escalate", now, actor, data=data, expected_version=ev, level=level)


renotify = _Notice(
    "renotify",
    "A reminder was sent because the alert is still unacknowledged.",
    lambda alert: {"level": alert.escalation_level, "n": alert.renotify_count + 1},
)


def note(
    alert: Alert,
    now: datetime,
    actor: str,
    text: str,
    *,
    expected_version: int | None = None,
) -> Alert:
    """A free-text comment on an open alert."""
    return _record(alert, "note", now, actor, text, expected_version=expected_version)


def update_position(
    alert: Alert, now: datetime, position: tuple[float, float], event_id: str
) -> Alert:
    """The alarm's unit sent a new position within its message session (SCAIP IN):
    a ``note`` by the system whose data carries it (``Alert.position``)."""
    lat, lon = position
    text = f"position updated by the unit: {lat:.6f},{lon:.6f}"
    return _record(
        alert,
        "note",
        now,
        SYSTEM,
        text,
        {"position": {"lat": lat, "lon": lon}, "events": [event_id]},
    )


def repeat(alert: Alert, now: datetime, signal: Signal) -> Alert:
    """The alert's rule fired again: count it, keep its events, do not re-notify."""
    data = {
        "events": list(signal.events),
        "signal_at": signal.at.isoformat(),
        **({"device": signal.device} if signal.device is not None else {}),
    }
    return _record(alert, "repeat", now, SYSTEM, data=data)


def device_cleared(alert: Alert, now: datetime, device: str, cause: str) -> Alert:
    """One of the alert's devices is well again while others are not (one
    device-offline alert for the resident while any device is offline): the
    alert stays open and no longer lists ``device``."""
    rest = [d for d in alert.devices if d != device]
    text = f"{cause}; still: {', '.join(rest)}"
    return _record(alert, "note", now, SYSTEM, text, {"device_cleared": device})


def flag_flapping(alert: Alert, now: datetime, fires: int, window_s: float) -> Alert:
    """Mark the alert as flapping (flagged for the innovation specialist)."""
    return _record(alert, "flag_flapping", now, SYSTEM, data={"fires": fires, "window_s": window_s})


def clear(alert: Alert, now: datetime, cause: str, note_text: str = "") -> Alert:
    """Record that the condition went away while staff handle the alert."""
    return _record(alert, "clear", now, SYSTEM, note_text, {"cause": cause})


def release(alert: Alert, now: datetime, reason: str) -> Alert:
    """Route a held-back or suppressed alert after all."""
    return _record(alert, "release", now, SYSTEM, data={"reason": reason})


# ---------------------------------------------------------------- dispatcher

_PLAIN: dict[str, _StaffStep] = {a.action: a for a in (acknowledge, take, accept, arrive)}
"""The staff actions that take nothing but a note, by name."""


def act(
    alert: Alert,
    action: str,
    now: datetime,
    actor: str,
    *,
    expected_version: int | None = None,
    assignee: str | None = None,
    outcome: Outcome | str | None = None,
    reason: CancelReason | str | None = None,
    note_text: str = "",
) -> Alert:
    """Apply a staff action by name (what the HTTP API receives).

    Raises TransitionError (or ConflictError) with the reason when refused.
    """
    ev = expected_version
    out = Outcome(outcome) if outcome is not None else None
    plain = _PLAIN.get(action)
    if plain is not None:
        return plain(alert, now, actor, note=note_text, expected_version=ev)
    if action == "assign":
        return assign(alert, now, actor, assignee or "", note=note_text, expected_version=ev)
    if action == "resolve":
        return resolve(alert, now, actor, outcome=out, note=note_text, expected_version=ev)
    if action == "cancel":
        if reason is None:
            raise TransitionError("say why the alert is cancelled", alert)
        return cancel(
            alert,
            now,
            actor,
            CancelReason(reason),
            outcome=out,
            note=note_text,
            expected_version=ev,
        )
    if action == "note":
        return note(alert, now, actor, note_text, expected_version=ev)
    raise TransitionError(f"unknown action {action!r}", alert)
