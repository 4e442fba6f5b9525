"""The alert lifecycle state machine (pure)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, Outcome, Record, State, Step
from trygg.alerts.lifecycle import ConflictError, TransitionError
from trygg.model import Severity, Signal, SignalAction

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def sig(rule: str = "fall", severity: Severity = Severity.RED) -> Signal:
    return Signal(SignalAction.FIRE, rule, "r-0001", T0, "4.1", severity, "v1", ("e-1",))


def new(alert_id: str = "a-1") -> Alert:
    return lc.raise_alert(sig(), alert_id=alert_id, team="stovner-nord", now=T0)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def in_state(state: State) -> Alert:
    """An alert brought to ``state`` by nurse-7 along the main path."""
    a = new()
    path: list[tuple[State, Callable[[Alert], Alert]]] = [
        (State.NOTIFIED, lambda a: lc.notify(a, at(1))),
        (State.ACKNOWLEDGED, lambda a: lc.acknowledge(a, at(2), "nurse-7")),
        (State.ASSIGNED, lambda a: lc.assign(a, at(3), "leader-1", "nurse-7")),
        (State.ACCEPTED, lambda a: lc.accept(a, at(4), "nurse-7")),
        (State.ARRIVED, lambda a: lc.arrive(a, at(5), "nurse-7")),
        (State.RESOLVED, lambda a: lc.resolve(a, at(6), "nurse-7", outcome=Outcome.HELPED)),
    ]
    if state is State.RAISED:
        return a
    if state is State.CANCELLED:
        return lc.cancel(a, at(1), "nurse-7", CancelReason.FALSE_ALARM)
    for s, f in path:
        a = f(a)
        if s is state:
            return a
    raise AssertionError(state)


def test_raise_builds_alert_from_signal() -> None:
    a = new()
    assert a.state is State.RAISED
    assert (a.resident, a.team, a.rule, a.code, a.severity) == (
        "r-0001",
        "stovner-nord",
        "fall",
        "4.1",
        Severity.RED,
    )
    assert a.catalogue_version == "v1"
    assert a.events == ("e-1",)
    assert a.version == 1
    assert a.records[0].step is Step.RAISED and a.records[0].actor == "system"


def test_clear_signal_cannot_raise() -> None:
    s = Signal(SignalAction.CLEAR, "fall", "r-0001", T0, "4.1", Severity.RED, "v1")
    with pytest.raises(ValueError):
        lc.raise_alert(s, alert_id="a", team="t", now=T0)


def test_full_main_path_and_records() -> None:
    a = in_state(State.RESOLVED)
    assert [r.step for r in a.records] == [
        Step.RAISED,
        Step.NOTIFIED,
        Step.ACKNOWLEDGED,
        Step.ASSIGNED,
        Step.ACCEPTED,
        Step.ARRIVED,
        Step.RESOLVED,
    ]
    assert [r.seq for r in a.records] == list(range(7))
    assert a.acknowledged_by == "nurse-7"
    assert a.assignee == "nurse-7"
    assert a.outcome is Outcome.HELPED
    assert a.closed_at == at(6)
    assert a.records[3].actor == "leader-1"
    assert Alert.from_records(a.records) == a


# every legal transition: (from state, action, kwargs, to state)
LEGAL = [
    (State.RAISED, "notify", {}, State.NOTIFIED),
    (State.RAISED, "acknowledge", {}, State.ACKNOWLEDGED),
    (State.NOTIFIED, "acknowledge", {}, State.ACKNOWLEDGED),
    (State.RAISED, "take", {}, State.ACCEPTED),
    (State.NOTIFIED, "take", {}, State.ACCEPTED),
    (State.ACKNOWLEDGED, "take", {}, State.ACCEPTED),
    (State.ASSIGNED, "take", {}, State.ACCEPTED),  # the assignee takes = accepts
    (State.ACKNOWLEDGED, "assign", {"assignee": "nurse-9"}, State.ASSIGNED),
    (State.ASSIGNED, "assign", {"assignee": "nurse-9"}, State.ASSIGNED),
    (State.ACCEPTED, "assign", {"assignee": "nurse-9"}, State.ASSIGNED),
    (State.ASSIGNED, "accept", {}, State.ACCEPTED),
    (State.ASSIGNED, "arrive", {}, State.ARRIVED),
    (State.ACCEPTED, "arrive", {}, State.ARRIVED),
    (State.ACKNOWLEDGED, "resolve", {}, State.RESOLVED),
    (State.ASSIGNED, "resolve", {}, State.RESOLVED),
    (State.ACCEPTED, "resolve", {}, State.RESOLVED),
    (State.ARRIVED, "resolve", {"outcome": "no_help_needed"}, State.RESOLVED),
    *[(s, "cancel", {"reason": "false_alarm"}, State.CANCELLED) for s in State if s.is_open],
    *[(s, "note", {"note_text": "called her"}, s) for s in State if s.is_open],
]


@pytest.mark.parametrize(("state", "action", "kw", "to"), LEGAL)
def test_legal_transitions(state: State, action: str, kw: dict[str, str], to: State) -> None:
    a = in_state(state)
    now = at(10)
    b = lc.notify(a, now) if action == "notify" else lc.act(a, action, now, "nurse-7", **kw)  # type: ignore[arg-type]
    assert b.state is to
    assert b.records[: a.version] == a.records  # append-only
    assert b.version > a.version
    assert Alert.from_records(b.records) == b


# illegal: (state, actor, action, kwargs, message)
ILLEGAL = [
    (State.RESOLVED, "nurse-7", "acknowledge", {}, "alert is already resolved"),
    (State.RESOLVED, "nurse-7", "take", {}, "alert is already resolved"),
    (State.RESOLVED, "nurse-7", "note", {}, "alert is already resolved"),
    (State.RESOLVED, "nurse-7", "cancel", {"reason": "other"}, "alert is already resolved"),
    (State.CANCELLED, "nurse-7", "resolve", {}, "alert is already cancelled (false alarm)"),
    (State.CANCELLED, "nurse-7", "acknowledge", {}, "alert is already cancelled (false alarm)"),
    (State.ACKNOWLEDGED, "nurse-3", "acknowledge", {}, "already acknowledged by nurse-7"),
    (State.ASSIGNED, "nurse-3", "acknowledge", {}, "alert is taken by nurse-7"),
    (State.ASSIGNED, "nurse-3", "take", {}, "alert is taken by nurse-7"),
    (State.ACCEPTED, "nurse-3", "take", {}, "alert is taken by nurse-7"),
    (State.ACCEPTED, "nurse-7", "take", {}, "you have already taken this alert"),
    (State.RAISED, "leader-1", "assign", {"assignee": "n"}, "must be acknowledged before"),
    (State.NOTIFIED, "leader-1", "assign", {"assignee": "n"}, "must be acknowledged before"),
    (State.ASSIGNED, "leader-1", "assign", {"assignee": "nurse-7"}, "already assigned to"),
    (State.ARRIVED, "leader-1", "assign", {"assignee": "nurse-9"}, "has already arrived"),
    (State.ACKNOWLEDGED, "leader-1", "assign", {}, "say whom to assign"),
    (State.ASSIGNED, "nurse-3", "accept", {}, "assigned to nurse-7; only they can accept"),
    (State.ACKNOWLEDGED, "nurse-7", "accept", {}, "not assigned to anyone yet"),
    (State.ACCEPTED, "nurse-7", "accept", {}, "already accepted by nurse-7"),
    (State.NOTIFIED, "nurse-7", "arrive", {}, "must be taken before arrival"),
    (State.ACCEPTED, "nurse-3", "arrive", {}, "alert is taken by nurse-7"),
    (State.ARRIVED, "nurse-7", "arrive", {}, "nurse-7 has already arrived"),
    (State.RAISED, "nurse-7", "resolve", {}, "must be acknowledged before it can be resolved"),
    (State.NOTIFIED, "nurse-7", "resolve", {}, "must be acknowledged before it can be resolved"),
    (State.NOTIFIED, "nurse-7", "cancel", {}, "say why the alert is cancelled"),
    (State.NOTIFIED, "nurse-7", "fly", {}, "unknown action"),
]


@pytest.mark.parametrize(("state", "actor", "action", "kw", "message"), ILLEGAL)
def test_illegal_transitions(
    state: State, actor: str, action: str, kw: dict[str, str], message: str
) -> None:
    a = in_state(state)
    with pytest.raises(TransitionError) as ei:
        lc.act(a, action, at(10), actor, **kw)  # type: ignore[arg-type]
    assert message in str(ei.value)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (State.NOTIFIED, "already been notified"),
        (State.ACKNOWLEDGED, "already acknowledged by nurse-7"),
        (State.RESOLVED, "already resolved"),
    ],
)
def test_notify_refusals(state: State, message: str) -> None:
    with pytest.raises(TransitionError, match=message):
        lc.notify(in_state(state), at(10))


def test_escalation_levels_only_go_up() -> None:
    a = lc.notify(new(), at(1))
    a = lc.escalate(a, at(60), 2)
    assert a.escalation_level == 2 and a.state is State.NOTIFIED
    with pytest.raises(TransitionError, match="level 2 has already been done"):
        lc.escalate(a, at(61), 2)
    with pytest.raises(TransitionError, match="start at 2"):
        lc.escalate(a, at(61), 1)


def test_take_is_acknowledge_assign_accept_in_one_tap() -> None:
    a = lc.take(lc.notify(new(), at(1)), at(5), "nurse-7")
    assert [r.step for r in a.records[2:]] == [Step.ACKNOWLEDGED, Step.ASSIGNED, Step.ACCEPTED]
    assert all(r.at == at(5) and r.actor == "nurse-7" for r in a.records[2:])
    assert a.assignee == "nurse-7" and a.acknowledged_by == "nurse-7"


def test_concurrent_take_first_wins_second_told_who_has_it() -> None:
    seen = lc.notify(new(), at(1))
    v = seen.version
    first = lc.take(seen, at(5), "nurse-7", expected_version=v)
    # the second press was made on the same version; the store has the first
    with pytest.raises(TransitionError) as ei:
        lc.take(first, at(5), "nurse-3", expected_version=v)
    assert str(ei.value) == "alert is taken by nurse-7"
    assert not isinstance(ei.value, ConflictError)


def test_concurrent_acknowledge_names_the_first() -> None:
    seen = new()
    first = lc.acknowledge(seen, at(5), "nurse-7", expected_version=1)
    with pytest.raises(TransitionError, match="already acknowledged by nurse-7"):
        lc.acknowledge(first, at(5), "nurse-3", expected_version=1)


def test_stale_but_still_legal_action_is_a_conflict() -> None:
    seen = lc.acknowledge(new(), at(2), "nurse-7")
    v = seen.version
    now = lc.assign(seen, at(3), "leader-1", "nurse-9")
    with pytest.raises(ConflictError, match="assigned by leader-1"):
        lc.assign(now, at(4), "leader-2", "nurse-3", expected_version=v)


def test_informational_records_in_between_are_no_conflict() -> None:
    seen = lc.notify(new(), at(1))
    v = seen.version
    now = lc.escalate(seen, at(60), 2)  # the escalator wrote in between
    a = lc.acknowledge(now, at(61), "nurse-7", expected_version=v)
    assert a.state is State.ACKNOWLEDGED


def test_unknown_future_version_is_a_conflict() -> None:
    with pytest.raises(ConflictError, match="unknown"):
        lc.acknowledge(new(), at(1), "nurse-7", expected_version=9)


def test_cancel_reasons_and_outcomes() -> None:
    a = lc.cancel(new(), at(1), "nurse-7", CancelReason.FALSE_ALARM)
    assert a.cancel_reason is CancelReason.FALSE_ALARM and a.outcome is Outcome.FALSE_ALARM
    b = lc.cancel(new(), at(1), "system", CancelReason.DEVICE_RESET)
    assert b.outcome is None and b.records[-1].data == {"reason": "device_reset"}


def test_reassign_records_previous() -> None:
    a = lc.assign(in_state(State.ACCEPTED), at(9), "leader-1", "nurse-9")
    assert a.assignee == "nurse-9" and a.state is State.ASSIGNED
    assert a.records[-1].data == {"assignee": "nurse-9", "previous": "nurse-7"}
    with pytest.raises(TransitionError, match="alert is taken by nurse-9"):
        lc.take(a, at(10), "nurse-7")


def test_allowed_actions() -> None:
    assert lc.allowed_actions(new(), "nurse-3") == ["acknowledge", "take", "cancel", "note"]
    acc = in_state(State.ACCEPTED)
    assert lc.allowed_actions(acc, "nurse-7") == ["assign", "arrive", "resolve", "cancel", "note"]
    assert "arrive" not in lc.allowed_actions(acc, "nurse-3")
    assert lc.allowed_actions(in_state(State.RESOLVED), "nurse-7") == []


def test_record_time_never_goes_back() -> None:
    a = lc.acknowledge(new(), T0 - timedelta(seconds=5), "nurse-7")
    assert a.records[-1].at == T0


def test_vkp_codes() -> None:
    a = in_state(State.RESOLVED)
    codes = [(c, n) for c, n, _, _ in lc.vkp_events(a)]
    assert codes == [
        (0, "hendelse_meldt"),
        (1, "hendelse_behandles"),
        (4, "hendelse_til_utrykning"),
        (5, "hendelse_ok_utrykning"),
        (3, "hendelse_kvittert"),
    ]


def test_records_round_trip_as_json() -> None:
    a = in_state(State.ARRIVED)
    dicts = [r.to_dict() for r in a.records]
    back = Alert.from_records(Record.from_dict(d) for d in dicts)
    assert back == a
    snap = a.to_dict()
    assert snap["state"] == "arrived" and snap["version"] == a.version


def test_from_records_refuses_bad_sequences() -> None:
    a = in_state(State.ACKNOWLEDGED)
    with pytest.raises(ValueError):
        Alert.from_records(a.records[1:])
    with pytest.raises(ValueError):
        Alert.from_records([a.records[0], a.records[2]])
    with pytest.raises(ValueError):
        Alert.from_records([])
