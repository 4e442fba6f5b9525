"""Property tests: any sequence of actions keeps records append-only and the
alert consistent with its records."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, Record, State, Step
from trygg.alerts.directory import DeviceInfo, Directory
from trygg.alerts.escalation import Escalator
from trygg.alerts.gates import Gatekeeper
from trygg.alerts.lifecycle import TransitionError
from trygg.alerts.routing_config import load_routing
from trygg.model import DeviceKind, Event, EventType, Severity, Signal, SignalAction

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
ACTORS = ["nurse-1", "nurse-2", "leader", "system"]
STAFF = ["acknowledge", "take", "assign", "accept", "arrive", "resolve", "cancel", "note"]
SYSTEM_ACTIONS = ["notify", "escalate", "renotify", "repeat", "clear", "release", "flap"]

action_st = st.tuples(
    st.sampled_from(STAFF + SYSTEM_ACTIONS),
    st.sampled_from(ACTORS),
    st.integers(min_value=-5, max_value=600),  # seconds after the previous action
    st.sampled_from([None, "false_alarm", "helped", "device_reset"]),
    st.integers(min_value=0, max_value=4),  # escalation level / version lag
)


def _apply(a: Alert, action: str, actor: str, now: datetime, extra: str | None, n: int) -> Alert:
    sig = Signal(SignalAction.FIRE, a.rule, a.resident, now, a.code, a.severity, "v1", ("e",))
    ev = max(1, a.version - n) if n else None
    if action == "notify":
        return lc.notify(a, now)
    if action == "escalate":
        return lc.escalate(a, now, n)
    if action == "renotify":
        return lc.renotify(a, now)
    if action == "repeat":
        return lc.repeat(a, now, sig)
    if action == "clear":
        return lc.clear(a, now, "rule clear")
    if action == "release":
        return lc.release(a, now, "test")
    if action == "flap":
        return lc.flag_flapping(a, now, 6, 3600)
    reason = extra if action == "cancel" and extra in ("false_alarm", "device_reset") else None
    outcome = extra if extra in ("false_alarm", "helped") and action == "resolve" else None
    return lc.act(
        a,
        action,
        now,
        actor,
        expected_version=ev,
        assignee="nurse-2" if actor == "nurse-1" else "nurse-1",
        outcome=outcome,
        reason=reason or ("other" if action == "cancel" else None),
        note_text="x",
    )


def _state_from_last_record(a: Alert) -> State:
    last = [r for r in a.records if r.step.changes_state][-1]
    return State(last.step.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(action_st, max_size=30), st.sampled_from(list(Severity)))
def test_any_action_sequence_keeps_records_append_only(
    actions: list[tuple[str, str, int, str | None, int]], severity: Severity
) -> None:
    s = Signal(SignalAction.FIRE, "fall", "r-1", T0, "4.1", severity, "v1", ("e0",))
    a = lc.raise_alert(s, alert_id="a-1", team="t", now=T0)
    now = T0
    for action, actor, dt, extra, n in actions:
        now = now + timedelta(seconds=dt)
        before = a
        try:
            a = _apply(a, action, actor, now, extra, n)
        except TransitionError as exc:
            assert str(exc)  # every refusal says why
            assert a is before
            continue
        # append-only: the old records are a prefix, something was added
        assert a.records[: before.version] == before.records
        assert a.version > before.version
        assert before.state not in (State.RESOLVED, State.CANCELLED)
        # the record sequence is well formed
        assert [r.seq for r in a.records] == list(range(a.version))
        assert all(x.at <= y.at for x, y in itertools.pairwise(a.records))
        assert all(r.alert_id == a.id for r in a.records)
        # the state is the one the last state-changing record says
        assert a.state is _state_from_last_record(a)
        # the alert is exactly the fold of its records, also through JSON
        assert Alert.from_records(a.records) == a
        assert Alert.from_records(Record.from_dict(r.to_dict()) for r in a.records) == a
        if a.state in (State.ASSIGNED, State.ACCEPTED, State.ARRIVED):
            assert a.assignee is not None
        if a.state is State.RESOLVED:
            assert a.acknowledged_by is not None
    # a closed alert refuses everything
    if not a.is_open:
        for act in STAFF:
            try:
                lc.act(a, act, now, "nurse-1", reason="other", assignee="x")
            except TransitionError as exc:
                assert "already" in str(exc)
            else:  # pragma: no cover
                raise AssertionError(f"{act} allowed on a closed alert")


RULES = {
    "fall": ("4.1", Severity.RED, None),
    "water": ("4.17", Severity.YELLOW, None),
    "inactivity": ("4.9", Severity.YELLOW, None),
    "device-offline": ("T.1", Severity.YELLOW, "motion-1"),
    "battery-low": ("T.2", Severity.GREEN, "button-1"),
}

gate_op = st.tuples(
    st.sampled_from(["fire", "clear", "reset", "ack", "resolve", "tick"]),
    st.sampled_from(sorted(RULES)),
    st.integers(min_value=0, max_value=900),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(gate_op, max_size=40))
def test_gatekeeper_and_escalator_invariants(ops: list[tuple[str, str, int]]) -> None:
    directory = Directory(
        teams={"r-1": "stovner-nord"},
        devices={
            "motion-1": DeviceInfo("r-1", DeviceKind.MOTION),
            "button-1": DeviceInfo("r-1", DeviceKind.BUTTON),
        },
    )
    routing = load_routing(Path(__file__).resolve().parents[1] / "routing.example.yaml")
    esc = Escalator(routing)
    ids = itertools.count()
    g = Gatekeeper(routing.gates, new_id=lambda: f"a-{next(ids)}", directory=directory)
    store: dict[str, Alert] = {}  # what the I/O layer would hold
    now = T0
    sent: set[str] = set()

    def persist(before_version: int | None, alert: Alert, new: tuple[Record, ...]) -> None:
        old = store.get(alert.id)
        assert (old.version if old else None) == before_version  # compare-and-set holds
        assert alert.records[len(alert.records) - len(new) :] == new
        store[alert.id] = alert

    for op, rule, dt in ops:
        now = now + timedelta(seconds=dt)
        code, sev, dev = RULES[rule]
        decisions = []
        if op in ("fire", "clear"):
            action = SignalAction.FIRE if op == "fire" else SignalAction.CLEAR
            s = Signal(action, rule, "r-1", now, code, sev, "v1", (f"e{dt}",), dev)
            decisions.append(g.on_signal(s, now))
        elif op == "reset":
            e = Event("button-1", f"r{dt}", EventType.ALARM_RESET, now, "r-1", DeviceKind.BUTTON)
            decisions += g.on_event(e, now)
        elif op in ("ack", "resolve"):
            for a in g.open_alerts():
                try:
                    b = lc.take(a, now, "nurse-1") if op == "ack" else lc.resolve(a, now, "n")
                except TransitionError:
                    continue
                persist(a.version, b, b.records[a.version :])
                g.update(b)
        decisions += g.release_due(now)
        for d in decisions:
            if d.alert is not None:
                persist(d.previous_version, d.alert, d.records)
        # escalate what is due, exactly once per step key
        for step in esc.due(g.open_alerts(), now):
            assert step.key not in sent
            sent.add(step.key)
            a = store[step.alert_id]
            b = step.apply(a, now)
            persist(a.version, b, b.records[a.version :])
            g.update(b)
        # invariants
        open_keys = [a.dedup_key for a in g.open_alerts()]
        assert len(open_keys) == len(set(open_keys))  # one open alert per key
        for a in g.open_alerts():
            assert store[a.id] == a
            assert Alert.from_records(a.records) == a
            if not a.routed:
                assert not any(r.step is Step.NOTIFIED for r in a.records)
        deadline = esc.next_deadline(g.open_alerts(), now)
        assert deadline is None or deadline > now  # nothing left due
