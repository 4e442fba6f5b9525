"""Routing file, shifts and escalation (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, Record, State, Step
from trygg.alerts.contacts import Channel
from trygg.alerts.escalation import Escalator
from trygg.alerts.routing_config import (
    RoutingConfig,
    RoutingError,
    load_routing,
    parse_routing,
    parse_routing_text,
)
from trygg.model import Severity, Signal, SignalAction

EXAMPLE = Path(__file__).resolve().parents[1] / "routing.example.yaml"
OSLO = ZoneInfo("Europe/Oslo")
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 13:00 in Oslo: day shift


def at(s: float, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=s)


@pytest.fixture(scope="module")
def routing() -> RoutingConfig:
    return load_routing(EXAMPLE)


def raised(
    severity: Severity = Severity.RED, now: datetime = T0, team: str = "stovner-nord"
) -> Alert:
    s = Signal(SignalAction.FIRE, "fall", "r-0001", now, "4.1", severity, "v1", ("e-1",))
    return lc.raise_alert(s, alert_id="a-1", team=team, now=now)


def run(esc: Escalator, a: Alert, now: datetime) -> tuple[Alert, list[tuple[str, int]]]:
    """What the I/O layer does at ``now``: record every due step."""
    done = []
    for step in esc.due([a], now):
        a = step.apply(a, now)
        done.append((step.action, step.level))
    return a, done


# ----------------------------------------------------------------- the file


def test_example_file_is_valid(routing: RoutingConfig) -> None:
    assert [s.name for s in routing.shifts] == ["day", "evening", "night"]
    assert routing.shifts[2].start == time(23) and routing.shifts[2].end == time(7)
    assert len(routing.policies[Severity.RED].steps) == 3
    assert routing.gates.inhibition.red_hold_window == timedelta(minutes=15)


def test_defaults_are_valid() -> None:
    r = parse_routing({})
    assert set(r.policies) == set(Severity)


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            lambda d: d["teams"]["stovner-nord"]["on_duty"].update(day=["nobody"]),
            "unknown recipient",
        ),
        (lambda d: d["policies"]["red"]["steps"][2].update(notify=["ghost"]), "notify: unknown"),
        (lambda d: d["policies"]["red"]["steps"][1].update(after="0s"), "must come later"),
        (lambda d: d["policies"].pop("green"), "no policy for green"),
        (lambda d: d["shifts"].pop(), "no shift covers"),
        (lambda d: d["shifts"][0].update(end="16:00"), "overlap at 15:00"),
        (lambda d: d.update(timezone="Mars/Olympus"), "unknown timezone"),
        (lambda d: d["policies"]["yellow"].update(renotify_every="soon"), "not a duration"),
        (lambda d: d["recipients"]["stovner-leader"]["contacts"][1].update(address="x"), "e-mail"),
        (
            lambda d: d["recipients"]["response-centre"]["contacts"][0].update(
                address="https://example.org/hook"
            ),
            "not a URL",
        ),
        (lambda d: d.update(colour="blue"), "colour: unknown field 'colour'"),
        (lambda d: d["gates"]["flapping"].update(max_fires=0), "gates.flapping.max_fires"),
        (lambda d: d.update(default_team="nowhere"), "default_team: unknown team"),
    ],
)
def test_bad_files_name_field_and_reason(patch: Any, message: str) -> None:
    d = _example()
    patch(d)
    with pytest.raises(RoutingError) as ei:
        parse_routing(d, "routing.yaml")
    text = str(ei.value)
    assert text.startswith("routing.yaml: ")
    assert message in text


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match="not valid YAML"):
        parse_routing_text("teams: [", "r.yaml")
    with pytest.raises(RoutingError, match="cannot read"):
        load_routing(tmp_path / "nope.yaml")
    with pytest.raises(RoutingError, match="expected a mapping"):
        parse_routing_text("- 1", "r.yaml")


def test_unquoted_yaml_times_are_understood() -> None:
    r = parse_routing_text(
        "shifts:\n"
        "  - {name: a, start: 07:00, end: 19:00}\n"
        "  - {name: b, start: 19:00, end: 07:00}\n"
        "policies:\n"
        "  red: {steps: [{notify: [team_on_duty]}]}\n"
        "  yellow: {steps: [{notify: [team_on_duty]}]}\n"
        "  green: {steps: [{notify: [team_on_duty]}], only_during: [a]}\n"
    )
    assert r.shifts[1].start == time(19) and r.shifts[0].start == time(7)


# ----------------------------------------------------------------- shifts and DST


def test_shift_lookup_across_dst(routing: RoutingConfig) -> None:
    # the night the clocks go forward (2026-03-29, 02:00 -> 03:00 in Oslo)
    before = datetime(2026, 3, 28, 5, 30, tzinfo=UTC)  # 06:30 CET
    after = datetime(2026, 3, 29, 5, 30, tzinfo=UTC)  # 07:30 CEST
    assert routing.shift_at(before, OSLO).name == "night"  # type: ignore[union-attr]
    assert routing.shift_at(after, OSLO).name == "day"  # type: ignore[union-attr]
    # and when they go back (2026-10-25, 03:00 -> 02:00)
    assert routing.shift_at(datetime(2026, 10, 25, 5, 30, tzinfo=UTC), OSLO).name == "night"  # type: ignore[union-attr]
    assert routing.shift_at(datetime(2026, 10, 25, 6, 0, tzinfo=UTC), OSLO).name == "day"  # type: ignore[union-attr]
    assert routing.shift_at(datetime(2026, 10, 25, 21, 59, tzinfo=UTC), OSLO).name == "evening"  # type: ignore[union-attr]
    assert routing.shift_at(datetime(2026, 10, 25, 22, 0, tzinfo=UTC), OSLO).name == "night"  # type: ignore[union-attr]


def test_next_shift_start_across_dst(routing: RoutingConfig) -> None:
    night = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, just after the gap
    assert routing.next_in_shifts(night, ["day"], OSLO) == datetime(2026, 3, 29, 5, 0, tzinfo=UTC)
    night2 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET (second 02:30)
    assert routing.next_in_shifts(night2, ["day"], OSLO) == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)


def test_shift_starting_in_the_dst_gap() -> None:
    r = parse_routing(
        {
            "shifts": [
                {"name": "a", "start": "02:30", "end": "14:30"},
                {"name": "b", "start": "14:30", "end": "02:30"},
            ],
            "policies": {
                s: {"steps": [{"notify": ["team_on_duty"]}], "only_during": ["a"]}
                for s in ("red", "yellow", "green")
            },
        }
    )
    t = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET on the 29th
    # 02:30 does not exist that night: the shift starts at 03:00 CEST = 01:00 UTC
    assert r.next_in_shifts(t, ["a"], OSLO) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_team_on_duty_follows_the_shift(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    day = esc.recipients("stovner-nord", "team_on_duty", T0)
    assert [w for w, _ in day] == ["team:stovner-nord", "stovner-day-phone"]
    night = esc.recipients("stovner-nord", "team_on_duty", datetime(2026, 3, 10, 23, tzinfo=UTC))
    assert [w for w, _ in night] == ["team:stovner-nord", "stovner-night-phone"]
    leader = esc.recipients("stovner-nord", "team_leader", datetime(2026, 3, 10, 23, tzinfo=UTC))
    assert [w for w, _ in leader] == ["night-coordinator"]
    # an unknown team uses default_team
    assert next(w for w, _ in esc.recipients("elsewhere", "team_on_duty", T0)) == (
        "team:stovner-nord"
    )


# ----------------------------------------------------------------- escalation


def test_red_escalates_at_60_and_180_seconds(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a = raised()
    first = esc.plan(a, T0)
    assert {(n.channel, n.address) for n in first} == {
        (Channel.MQTT, "stovner-nord"),
        (Channel.CONSOLE, "stovner-nord"),
        (Channel.WEBHOOK, "stovner-phones"),
    }
    a, done = run(esc, a, T0)
    assert done == [("notify", 1)] and a.state is State.NOTIFIED
    assert esc.next_deadline([a], T0) == at(60)
    a, done = run(esc, a, at(59))
    assert done == []
    a, done = run(esc, a, at(60))
    assert done == [("escalate", 2)] and a.escalation_level == 2
    assert a.records[-1].data["targets"] == ["team_leader"]
    assert esc.next_deadline([a], at(60)) == at(180)
    a, done = run(esc, a, at(179))
    assert done == []
    a, done = run(esc, a, at(180))
    assert done == [("escalate", 3)]
    # then reminders to everyone told so far, every 2 minutes
    a, done = run(esc, a, at(300))
    assert done == [("renotify", 3)]
    assert a.records[-1].data["targets"] == ["team_on_duty", "team_leader", "response-centre"]


def test_escalation_stops_once_acknowledged(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a, _ = run(esc, raised(), T0)
    a, _ = run(esc, a, at(60))
    a = lc.acknowledge(a, at(90), "nurse-7")
    for t in (180, 300, 3600):
        a, done = run(esc, a, at(t))
        assert done == []
    assert esc.next_deadline([a], at(90)) is None
    assert [r.step for r in a.records].count(Step.ESCALATED) == 1


def test_escalation_stops_when_cancelled_or_suppressed(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a = lc.cancel(raised(), at(10), "system", CancelReason.DEVICE_RESET)
    assert esc.due([a], at(600)) == []
    s = Signal(SignalAction.FIRE, "fall", "r-1", T0, "4.1", Severity.RED, "v1")
    sup = lc.raise_alert(s, alert_id="x", team="t", now=T0, suppressed_reason="silenced")
    assert esc.due([sup], at(600)) == [] and esc.next_deadline([sup], T0) is None


@pytest.mark.parametrize("restart_at", [30, 60, 61, 120, 200])
def test_escalation_survives_a_restart(routing: RoutingConfig, restart_at: float) -> None:
    """Rebuild the alert from its stored records and a new Escalator at any point:
    the same steps happen at the same times, none repeated, none skipped."""
    ticks = [0, 30, 60, 61, 120, 180, 200, 240]
    ref_alert, ref_log = raised(), []
    esc = Escalator(routing)
    for t in ticks:
        ref_alert, done = run(esc, ref_alert, at(t))
        ref_log += [(t, d) for d in done]

    a, log = raised(), []
    esc1 = Escalator(routing)
    for t in ticks:
        if t == restart_at:
            stored = [r.to_dict() for r in a.records]
            a = Alert.from_records(Record.from_dict(d) for d in stored)
            esc1 = Escalator(load_routing(EXAMPLE))
        a, done = run(esc1, a, at(t))
        log += [(t, d) for d in done]
    assert log == ref_log
    assert [(t, d) for t, d in ref_log if d[0] != "renotify"] == [
        (0, ("notify", 1)),
        (60, ("escalate", 2)),
        (180, ("escalate", 3)),
    ]


def test_downtime_sends_due_levels_once_and_skips_none(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a, _ = run(esc, raised(), T0)
    # trygg was down from 10 s to 500 s: both levels are due, each once, in order
    steps = esc.due([a], at(500))
    assert [(s.action, s.level) for s in steps] == [("escalate", 2), ("escalate", 3)]
    a, _ = run(esc, a, at(500))
    assert esc.due([a], at(500)) == []
    # reminders restart from the catch-up, not as a burst
    assert esc.next_deadline([a], at(500)) == at(620)


def test_due_level_is_not_left_behind_by_an_earlier_reminder(routing: RoutingConfig) -> None:
    """Regression (found by the property test): a reminder due at 25 min and the
    level due at 30 min, both overdue at 30 min: the level is sent, nothing is
    left due."""
    esc = Escalator(routing)
    a, _ = run(esc, raised(Severity.YELLOW), T0)
    a, _ = run(esc, a, at(15 * 60))  # reminder 1 (due at 10 min), next due at 25 min
    a, done = run(esc, a, at(30 * 60))
    assert done == [("escalate", 2)]
    assert esc.due([a], at(30 * 60)) == []
    assert esc.next_deadline([a], at(30 * 60)) == at(40 * 60)


def test_yellow_renotify_cadence(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a = raised(Severity.YELLOW)
    log = []
    for m in range(0, 41):
        a, done = run(esc, a, at(m * 60))
        log += [(m, d) for d in done]
    # level 2 (leader) is at 30 min; reminders every 10 min counted from the last message
    assert log == [
        (0, ("notify", 1)),
        (10, ("renotify", 1)),
        (20, ("renotify", 1)),
        (30, ("escalate", 2)),
        (40, ("renotify", 2)),
    ]
    assert a.renotify_count == 3
    assert [r.data["n"] for r in a.records if r.step is Step.RENOTIFIED] == [1, 2, 3]


def test_renotify_max(routing: RoutingConfig) -> None:
    r = routing.model_copy(
        update={
            "policies": {
                **routing.policies,
                Severity.YELLOW: routing.policies[Severity.YELLOW].model_copy(
                    update={"renotify_max": 1}
                ),
            }
        }
    )
    esc = Escalator(r)
    a, _ = run(esc, raised(Severity.YELLOW), T0)
    a, done = run(esc, a, at(600))
    assert done == [("renotify", 1)]
    a, done = run(esc, a, at(1200))
    assert done == []


def test_green_waits_for_the_day_shift_and_is_a_digest(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    night = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the DST night
    a = raised(Severity.GREEN, now=night)
    assert esc.due([a], night) == []
    seven = datetime(2026, 3, 29, 5, 0, tzinfo=UTC)  # 07:00 CEST
    assert esc.next_deadline([a], night) == seven
    [step] = esc.due([a], seven)
    assert step.action == "notify" and all(n.digest for n in step.notifications)
    assert {n.recipient for n in step.notifications} == {"team:stovner-nord", "stovner-day-phone"}


def test_held_alert_escalates_from_its_release(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    s = Signal(SignalAction.FIRE, "water", "r-0001", T0, "4.17", Severity.YELLOW, "v1")
    a = lc.raise_alert(
        s, alert_id="w", team="stovner-nord", now=T0, held_until=at(900), held_by="x"
    )
    assert esc.due([a], at(600)) == [] and esc.next_deadline([a], T0) is None
    a = lc.release(a, at(900), "window ended")
    a, done = run(esc, a, at(900))
    assert done == [("notify", 1)]
    assert esc.next_deadline([a], at(900)) == at(1500)


def test_notification_keys_are_stable(routing: RoutingConfig) -> None:
    esc = Escalator(routing)
    a = raised()
    k1 = [n.key for n in esc.plan(a, T0)]
    k2 = [n.key for n in esc.plan(Alert.from_records(a.records), at(5))]
    assert k1 == k2 and len(set(k1)) == len(k1)
    assert k1[0].startswith("a-1:notify:1:0:")


def test_unknown_team_without_default_goes_to_fallback(routing: RoutingConfig) -> None:
    r = routing.model_copy(update={"default_team": None})
    esc = Escalator(r)
    a = raised(team="nowhere")
    assert {n.recipient for n in esc.plan(a, T0)} == {"response-centre"}
    r2 = routing.model_copy(update={"default_team": None, "fallback": []})
    [step] = Escalator(r2).due([raised(team="nowhere")], T0)
    assert step.unrouted
