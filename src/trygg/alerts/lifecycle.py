"""The alert lifecycle: a pure state machine over append-only records.

::

    raised -> notified -> acknowledged -> assigned -> accepted -> arrived -> resolved
       \\__________\\______________\\___________\\___________\\__________\\--> cancelled

Legal transitions (anything else raises :class:`TransitionError` with a
message a nurse can read on a phone):

=============  ==========================================  ================================
action         from                                        notes
=============  ==========================================  ================================
notify         raised                                      system; not if suppressed/held
acknowledge    raised, notified                            anyone on the team
take           raised, notified, acknowledged,             one tap: acknowledged (if not
               assigned (to the same actor)                yet) + assigned + accepted
assign         acknowledged, assigned, accepted            hand to someone (re-assign too)
accept         assigned                                    only the assignee
arrive         assigned, accepted                          only the assignee
resolve        acknowledged, assigned, accepted, arrived   optional outcome
cancel         any open state                              reason required, outcome optional
escalate       any open state                              system, level must go up
renotify       any open state                              system
note/repeat/…  any open state                              informational records
=============  ==========================================  ================================

Nothing is allowed after ``resolved`` or ``cancelled``.

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
    raised_data,
)
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
        resident=signal.resident,
        team=team,
        rule=signal.rule,
        catalogue_version=signal.catalogue_version,
        code=signal.code,
        severity=signal.severity,
        events=signal.events,
        device=signal.device,
        title=signal.title,
        signal_at=signal.at,
        suppressed_reason=suppressed_reason,
        silence_id=silence_id,
        held_until=held_until,
        held_by=held_by,
        flapping=flapping,
    )
    return Alert.from_records([Record(alert_id, 0, Step.RAISED, now, SYSTEM, note, data)])


# ------------------------------------------------------------------- checks


def _closed_msg(alert: Alert) -> str:
    if alert.state is State.CANCELLED:
        why = f" ({alert.cancel_reason.value.replace('_', ' ')})" if alert.cancel_reason else ""
        return f"alert is already cancelled{why}"
    return "alert is already resolved"


def _taken_msg(alert: Alert) -> str:
    return f"alert is taken by {alert.assignee}"


def _acked_msg(alert: Alert) -> str:
    if alert.assignee is not None:
        return _taken_msg(alert)
    return f"alert is already acknowledged by {alert.acknowledged_by}"


_Check = Callable[[Alert, str, Mapping[str, Any]], str | None]


def _check_open(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    return None if alert.is_open else _closed_msg(alert)


def _check_notify(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if alert.suppressed:
        return f"alert is suppressed ({alert.suppressed_reason}); it is stored, not routed"
    if alert.held_until is not None:
        return f"alert is held back until {alert.held_until.isoformat()} by alert {alert.held_by}"
    if alert.state is State.NOTIFIED:
        return "alert has already been notified (renotify or escalate instead)"
    if alert.state is not State.RAISED:
        return _acked_msg(alert)
    return None


def _check_acknowledge(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if alert.state in (State.RAISED, State.NOTIFIED):
        return None
    return _acked_msg(alert)


def _check_take(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    s = alert.state
    if s in (State.RAISED, State.NOTIFIED, State.ACKNOWLEDGED):
        return None
    if alert.assignee == actor:
        if s is State.ASSIGNED:
            return None
        return "you have already taken this alert"
    return _taken_msg(alert)


def _check_assign(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    assignee = kw.get("assignee")
    if not assignee:
        return "say whom to assign the alert to"
    s = alert.state
    if s in (State.RAISED, State.NOTIFIED):
        return (
            "alert must be acknowledged before it can be assigned "
            "(take acknowledges and takes it in one step)"
        )
    if s is State.ARRIVED:
        return f"{alert.assignee} has already arrived; the alert cannot be reassigned"
    if s in (State.ASSIGNED, State.ACCEPTED) and alert.assignee == assignee:
        return f"alert is already assigned to {assignee}"
    return None


def _check_accept(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    s = alert.state
    if s is State.ASSIGNED:
        if alert.assignee != actor:
            return f"alert is assigned to {alert.assignee}; only they can accept it"
        return None
    if s in (State.ACCEPTED, State.ARRIVED):
        return f"alert is already accepted by {alert.assignee}"
    return "alert is not assigned to anyone yet"


def _check_arrive(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    s = alert.state
    if s in (State.ASSIGNED, State.ACCEPTED):
        if alert.assignee != actor:
            return _taken_msg(alert)
        return None
    if s is State.ARRIVED:
        return f"{alert.assignee} has already arrived"
    return "alert must be taken before arrival can be recorded"


def _check_resolve(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if alert.state in (State.RAISED, State.NOTIFIED):
        return (
            "alert must be acknowledged before it can be resolved "
            "(cancel it, with a reason, if it needs no response)"
        )
    return None


def _check_cancel(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if kw.get("reason") is None:
        return "say why the alert is cancelled"
    return None


def _check_escalate(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    level = int(kw.get("level", 0))
    if level < 2:
        return "escalation levels start at 2 (level 1 is the first notification)"
    if level <= alert.escalation_level:
        return f"escalation level {level} has already been done"
    return None


_CHECKS: dict[str, _Check] = {
    "notify": _check_notify,
    "acknowledge": _check_acknowledge,
    "take": _check_take,
    "assign": _check_assign,
    "accept": _check_accept,
    "arrive": _check_arrive,
    "resolve": _check_resolve,
    "cancel": _check_cancel,
    "escalate": _check_escalate,
}

ACTIONS: tuple[str, ...] = (
    "notify",
    "acknowledge",
    "take",
    "assign",
    "accept",
    "arrive",
    "resolve",
    "cancel",
    "escalate",
    "renotify",
    "note",
    "repeat",
    "flag_flapping",
    "clear",
    "release",
)
STAFF_ACTIONS: tuple[str, ...] = (
    "acknowledge",
    "take",
    "assign",
    "accept",
    "arrive",
    "resolve",
    "cancel",
    "note",
)


def refusal(alert: Alert, action: str, actor: str, **kw: Any) -> str | None:
    """Why ``actor`` may not do ``action`` on ``alert`` now, or None if allowed."""
    if action not in ACTIONS:
        return f"unknown action {action!r}"
    if not actor:
        return "an action needs an actor"
    msg = _check_open(alert, actor, kw)
    if msg is not None:
        return msg
    check = _CHECKS.get(action)
    return check(alert, actor, kw) if check is not None else None


def allowed_actions(alert: Alert, actor: str) -> list[str]:
    """The staff actions ``actor`` may take now (for enabling buttons in the console).

    ``assign`` is listed when assigning to someone other than the current
    assignee would be allowed.
    """
    out = []
    for a in STAFF_ACTIONS:
        kw: dict[str, Any] = {}
        if a == "assign":
            kw["assignee"] = f"{alert.assignee}~other"
        elif a == "cancel":
            kw["reason"] = CancelReason.OTHER
        if refusal(alert, a, actor, **kw) is None:
            out.append(a)
    return out


def _guard(alert: Alert, action: str, actor: str, expected_version: int | None, **kw: Any) -> None:
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


# ---------------------------------------------------------------- transitions


def notify(
    alert: Alert,
    now: datetime,
    *,
    targets: list[str] | None = None,
    actor: str = SYSTEM,
    expected_version: int | None = None,
) -> Alert:
    """Level 1 of the escalation policy has been sent: ``raised -> notified``."""
    _guard(alert, "notify", actor, expected_version)
    return append(alert, Step.NOTIFIED, now, actor, data={"level": 1, "targets": targets or []})


def acknowledge(
    alert: Alert,
    now: datetime,
    actor: str,
    *,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """Someone answers the alert (VKP ``hendelse_behandles``); escalation stops."""
    _guard(alert, "acknowledge", actor, expected_version)
    return append(alert, Step.ACKNOWLEDGED, now, actor, note)


def take(
    alert: Alert,
    now: datetime,
    actor: str,
    *,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """One tap "I take it": acknowledge (if not yet), assign to self and accept.

    If two staff press take at once, the first to be stored wins; the second
    gets ``TransitionError("alert is taken by <first>")``.
    """
    _guard(alert, "take", actor, expected_version)
    a = alert
    if a.state in (State.RAISED, State.NOTIFIED):
        a = append(a, Step.ACKNOWLEDGED, now, actor, data={"via": "take"})
    if a.state is State.ACKNOWLEDGED:
        a = append(a, Step.ASSIGNED, now, actor, data={"assignee": actor, "via": "take"})
    return append(a, Step.ACCEPTED, now, actor, note, data={"via": "take"})


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
    _guard(alert, "assign", actor, expected_version, assignee=assignee)
    data: dict[str, Any] = {"assignee": assignee}
    if alert.assignee is not None:
        data["previous"] = alert.assignee
    return append(alert, Step.ASSIGNED, now, actor, note, data)


def accept(
    alert: Alert,
    now: datetime,
    actor: str,
    *,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """The assignee accepts (VKP ``ok_utrykning``)."""
    _guard(alert, "accept", actor, expected_version)
    return append(alert, Step.ACCEPTED, now, actor, note)


def arrive(
    alert: Alert,
    now: datetime,
    actor: str,
    *,
    note: str = "",
    expected_version: int | None = None,
) -> Alert:
    """The assignee is with the resident (time to arrival)."""
    _guard(alert, "arrive", actor, expected_version)
    return append(alert, Step.ARRIVED, now, actor, note)


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
    _guard(alert, "resolve", actor, expected_version)
    data = {"outcome": outcome.value} if outcome is not None else {}
    return append(alert, Step.RESOLVED, now, actor, note, data)


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
    _guard(alert, "cancel", actor, expected_version, reason=reason)
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
    _guard(alert, "escalate", actor, expected_version, level=level)
    return append(
        alert, Step.ESCALATED, now, actor, data={"level": level, "targets": targets or []}
    )


def renotify(
    alert: Alert,
    now: datetime,
    *,
    targets: list[str] | None = None,
    actor: str = SYSTEM,
    expected_version: int | None = None,
) -> Alert:
    """A reminder was sent because the alert is still unacknowledged."""
    _guard(alert, "renotify", actor, expected_version)
    data: dict[str, Any] = {
        "level": alert.escalation_level,
        "n": alert.renotify_count + 1,
        "targets": targets or [],
    }
    return append(alert, Step.RENOTIFIED, now, actor, data=data)


def note(
    alert: Alert,
    now: datetime,
    actor: str,
    text: str,
    *,
    expected_version: int | None = None,
) -> Alert:
    """A free-text comment on an open alert."""
    _guard(alert, "note", actor, expected_version)
    return append(alert, Step.NOTE, now, actor, text)


def update_position(
    alert: Alert, now: datetime, position: tuple[float, float], event_id: str
) -> Alert:
    """The alarm's unit sent a new position within its message session (SCAIP IN):
    a ``note`` by the system whose data carries it (``Alert.position``)."""
    _guard(alert, "note", SYSTEM, None)
    lat, lon = position
    return append(
        alert,
        Step.NOTE,
        now,
        SYSTEM,
        f"position updated by the unit: {lat:.6f},{lon:.6f}",
        {"position": {"lat": lat, "lon": lon}, "events": [event_id]},
    )


def repeat(alert: Alert, now: datetime, signal: Signal) -> Alert:
    """The alert's rule fired again: count it, keep its events, do not re-notify."""
    _guard(alert, "repeat", SYSTEM, None)
    return append(
        alert,
        Step.REPEATED,
        now,
        SYSTEM,
        data={
            "events": list(signal.events),
            "signal_at": signal.at.isoformat(),
            **({"device": signal.device} if signal.device is not None else {}),
        },
    )


def device_cleared(alert: Alert, now: datetime, device: str, cause: str) -> Alert:
    """One of the alert's devices is well again while others are not (one
    device-offline alert for the resident while any device is offline): the
    alert stays open and no longer lists ``device``."""
    _guard(alert, "note", SYSTEM, None)
    rest = [d for d in alert.devices if d != device]
    return append(
        alert,
        Step.NOTE,
        now,
        SYSTEM,
        f"{cause}; still: {', '.join(rest)}",
        data={"device_cleared": device},
    )


def flag_flapping(alert: Alert, now: datetime, fires: int, window_s: float) -> Alert:
    """Mark the alert as flapping (flagged for the innovation specialist)."""
    _guard(alert, "flag_flapping", SYSTEM, None)
    return append(alert, Step.FLAPPING, now, SYSTEM, data={"fires": fires, "window_s": window_s})


def clear(alert: Alert, now: datetime, cause: str, note_text: str = "") -> Alert:
    """Record that the condition went away while staff handle the alert."""
    _guard(alert, "clear", SYSTEM, None)
    return append(alert, Step.CLEARED, now, SYSTEM, note_text, data={"cause": cause})


def release(alert: Alert, now: datetime, reason: str) -> Alert:
    """Route a held-back or suppressed alert after all."""
    _guard(alert, "release", SYSTEM, None)
    return append(alert, Step.RELEASED, now, SYSTEM, data={"reason": reason})


# ---------------------------------------------------------------- dispatcher


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
    if action == "acknowledge":
        return acknowledge(alert, now, actor, note=note_text, expected_version=ev)
    if action == "take":
        return take(alert, now, actor, note=note_text, expected_version=ev)
    if action == "assign":
        return assign(alert, now, actor, assignee or "", note=note_text, expected_version=ev)
    if action == "accept":
        return accept(alert, now, actor, note=note_text, expected_version=ev)
    if action == "arrive":
        return arrive(alert, now, actor, note=note_text, expected_version=ev)
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
