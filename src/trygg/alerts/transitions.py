"""The alert lifecycle's table of transitions (pure): for each action, the
states it may start from, who may do it, the record it writes and the words
of its refusals, which a nurse reads on a phone (the API and the tests depend
on the words).

Legal transitions (anything else is refused, with a reason):

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

The functions that write the records are in :mod:`trygg.alerts.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trygg.alerts.alert import OPEN_STATES, Alert, CancelReason, State, Step

__all__ = [
    "ACTIONS",
    "STAFF_ACTIONS",
    "TRANSITIONS",
    "Transition",
    "allowed_actions",
    "refusal",
]

# Every action is one row of ``TRANSITIONS``: the states it may start from,
# who may do it (staff or the system; in some states only the assignee), the
# record it writes, and the words of its refusals. ``refusal`` reads the row;
# the functions in trygg.alerts.lifecycle write the record.

_Why = Callable[[Alert, str], str]
"""The words of a refusal, from the alert as it is and the actor."""

_Check = Callable[[Alert, str, Mapping[str, Any]], str | None]
"""A check before the state's: the action's own arguments, or the alert's flags."""


def _closed_msg(alert: Alert) -> str:
    if alert.state is State.CANCELLED:
        why = f" ({alert.cancel_reason.value.replace('_', ' ')})" if alert.cancel_reason else ""
        return f"alert is already cancelled{why}"
    return "alert is already resolved"


def _taken_msg(alert: Alert, actor: str = "") -> str:
    return f"alert is taken by {alert.assignee}"


def _acked_msg(alert: Alert, actor: str = "") -> str:
    if alert.assignee is not None:
        return _taken_msg(alert)
    return f"alert is already acknowledged by {alert.acknowledged_by}"


def _taken_by_you_msg(alert: Alert, actor: str) -> str:
    if alert.assignee == actor:
        return "you have already taken this alert"
    return _taken_msg(alert)


def _says(text: str) -> _Why:
    """A refusal in words that name the assignee (``{assignee}``) or nothing of the alert."""
    return lambda alert, actor: text.format(assignee=alert.assignee)


def _unacknowledged(done: str, instead: str) -> _Why:
    """The refusal of an action that needs someone to have answered first."""
    return _says(f"alert must be acknowledged before it can be {done} ({instead})")


def _notify_first(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if alert.suppressed:
        return f"alert is suppressed ({alert.suppressed_reason}); it is stored, not routed"
    if alert.held_until is not None:
        return f"alert is held back until {alert.held_until.isoformat()} by alert {alert.held_by}"
    return None


def _assign_first(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    assignee = kw.get("assignee")
    if not assignee:
        return "say whom to assign the alert to"
    if alert.state in (State.ASSIGNED, State.ACCEPTED) and alert.assignee == assignee:
        return f"alert is already assigned to {assignee}"
    return None


def _cancel_first(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    if kw.get("reason") is None:
        return "say why the alert is cancelled"
    return None


def _escalate_first(alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
    level = int(kw.get("level", 0))
    if level < 2:
        return "escalation levels start at 2 (level 1 is the first notification)"
    if level <= alert.escalation_level:
        return f"escalation level {level} has already been done"
    return None


@dataclass(frozen=True, slots=True)
class Transition:
    """One action of the lifecycle: a row of ``TRANSITIONS``."""

    writes: Step
    """The record it writes (``take`` may write acknowledged and assigned first)."""
    who: str = "system"
    """``staff`` (a staff action, offered in the console) or ``system``."""
    allowed: frozenset[State] = OPEN_STATES
    """The states it may start from."""
    assignee_only: frozenset[State] = frozenset()
    """Of ``allowed``, the states in which only the assignee may do it..."""
    not_assignee: _Why = _taken_msg
    """...and what anyone else is told there."""
    refused: Mapping[State, _Why] = field(default_factory=dict)
    """What the actor is told in a state it may not start from..."""
    otherwise: _Why = _acked_msg
    """...and in any other open state not allowed."""
    first: _Check | None = None
    """Checked before the state: the action's arguments, a suppressed or held alert."""

    def refusal(self, alert: Alert, actor: str, kw: Mapping[str, Any]) -> str | None:
        """Why ``actor`` may not do it on the open ``alert``, or None if allowed."""
        if self.first is not None and (msg := self.first(alert, actor, kw)) is not None:
            return msg
        s = alert.state
        if s not in self.allowed:
            return self.refused.get(s, self.otherwise)(alert, actor)
        if s in self.assignee_only and alert.assignee != actor:
            return self.not_assignee(alert, actor)
        return None


_UNANSWERED = (State.RAISED, State.NOTIFIED)

TRANSITIONS: dict[str, Transition] = {
    "notify": Transition(
        Step.NOTIFIED,
        allowed=frozenset({State.RAISED}),
        refused={
            State.NOTIFIED: _says("alert has already been notified (renotify or escalate instead)")
        },
        first=_notify_first,
    ),
    "acknowledge": Transition(Step.ACKNOWLEDGED, "staff", allowed=frozenset(_UNANSWERED)),
    "take": Transition(
        Step.ACCEPTED,
        "staff",
        allowed=frozenset({*_UNANSWERED, State.ACKNOWLEDGED, State.ASSIGNED}),
        assignee_only=frozenset({State.ASSIGNED}),
        otherwise=_taken_by_you_msg,
    ),
    "assign": Transition(
        Step.ASSIGNED,
        "staff",
        allowed=frozenset({State.ACKNOWLEDGED, State.ASSIGNED, State.ACCEPTED}),
        refused={
            **dict.fromkeys(
                _UNANSWERED,
                _unacknowledged("assigned", "take acknowledges and takes it in one step"),
            ),
            State.ARRIVED: _says("{assignee} has already arrived; the alert cannot be reassigned"),
        },
        first=_assign_first,
    ),
    "accept": Transition(
        Step.ACCEPTED,
        "staff",
        allowed=frozenset({State.ASSIGNED}),
        assignee_only=frozenset({State.ASSIGNED}),
        not_assignee=_says("alert is assigned to {assignee}; only they can accept it"),
        refused=dict.fromkeys(
            (State.ACCEPTED, State.ARRIVED), _says("alert is already accepted by {assignee}")
        ),
        otherwise=_says("alert is not assigned to anyone yet"),
    ),
    "arrive": Transition(
        Step.ARRIVED,
        "staff",
        allowed=frozenset({State.ASSIGNED, State.ACCEPTED}),
        assignee_only=frozenset({State.ASSIGNED, State.ACCEPTED}),
        refused={State.ARRIVED: _says("{assignee} has already arrived")},
        otherwise=_says("alert must be taken before arrival can be recorded"),
    ),
    "resolve": Transition(
        Step.RESOLVED,
        "staff",
        allowed=OPEN_STATES - set(_UNANSWERED),
        otherwise=_unacknowledged("resolved", "cancel it, with a reason, if it needs no response"),
    ),
    "cancel": Transition(Step.CANCELLED, "staff", first=_cancel_first),
    "escalate": Transition(Step.ESCALATED, first=_escalate_first),
    "renotify": Transition(Step.RENOTIFIED),
    "note": Transition(Step.NOTE, "staff"),
    "repeat": Transition(Step.REPEATED),
    "flag_flapping": Transition(Step.FLAPPING),
    "clear": Transition(Step.CLEARED),
    "release": Transition(Step.RELEASED),
}

ACTIONS: tuple[str, ...] = tuple(TRANSITIONS)
STAFF_ACTIONS: tuple[str, ...] = tuple(a for a, t in TRANSITIONS.items() if t.who == "staff")


def refusal(alert: Alert, action: str, actor: str, **kw: Any) -> str | None:
    """Why ``actor`` may not do ``action`` on ``alert`` now, or None if allowed."""
    if action not in ACTIONS:
        return f"unknown action {action!r}"
    if not actor:
        return "an action needs an actor"
    if not alert.is_open:
        return _closed_msg(alert)
    return TRANSITIONS[action].refusal(alert, actor, kw)


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
