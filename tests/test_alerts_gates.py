"""Quality gates (pure): dedup, auto-resolve, silences, inhibition, flapping."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, Outcome, State, Step
from trygg.alerts.decisions import DecisionKind
from trygg.alerts.directory import DeviceInfo, Directory
from trygg.alerts.gate_config import FlappingConfig, GateConfig, InhibitionConfig
from trygg.alerts.gates import Gatekeeper
from trygg.alerts.silences import Silence, SilenceScope
from trygg.model import DeviceKind, Event, EventType, Severity, Signal, SignalAction

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
R = "r-0001"

DIRECTORY = Directory(
    teams={R: "stovner-nord", "r-0002": "stovner-sor"},
    devices={
        "motion-1": DeviceInfo(R, DeviceKind.MOTION),
        "bed-1": DeviceInfo(R, DeviceKind.BED),
        "button-1": DeviceInfo(R, DeviceKind.BUTTON),
        "fall-1": DeviceInfo(R, DeviceKind.FALL),
        "smoke-1": DeviceInfo(R, DeviceKind.SMOKE),
        "thermo-1": DeviceInfo(R, DeviceKind.THERMOMETER),
    },
)

SEV = {
    "fall": ("4.1", Severity.RED),
    "button": ("4.13", Severity.RED),
    "fire": ("4.11", Severity.RED),
    "inactivity": ("4.9", Severity.YELLOW),
    "water": ("4.17", Severity.YELLOW),
    "battery-low": ("T.2", Severity.GREEN),
    "device-offline": ("T.1", Severity.YELLOW),
    "temperature-high": ("T.3", Severity.YELLOW),
}


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def fire(rule: str, t: float = 0, *, device: str | None = None, ev: str = "e") -> Signal:
    code, sev = SEV[rule]
    return Signal(SignalAction.FIRE, rule, R, at(t), code, sev, "v1", (ev,), device)


def clear(rule: str, t: float = 0, *, device: str | None = None) -> Signal:
    code, sev = SEV[rule]
    return Signal(SignalAction.CLEAR, rule, R, at(t), code, sev, "v1", (), device)


def gk(config: GateConfig | None = None) -> Gatekeeper:
    counter = itertools.count(1)
    return Gatekeeper(config, new_id=lambda: f"a-{next(counter)}", directory=DIRECTORY)


def reset(t: float, device: str = "button-1", kind: DeviceKind = DeviceKind.BUTTON) -> Event:
    return Event(device, f"rst-{t}", EventType.ALARM_RESET, at(t), R, kind)


# ----------------------------------------------------------------- dedup


def test_new_alert_is_routed_with_team() -> None:
    g = gk()
    d = g.on_signal(fire("fall"), at(0))
    assert d.kind is DecisionKind.RAISED and d.route
    assert d.alert is not None and d.alert.team == "stovner-nord" and d.alert.id == "a-1"
    assert d.previous_version is None and [r.step for r in d.records] == [Step.RAISED]


def test_unknown_resident_gets_default_team() -> None:
    g = gk()
    s = Signal(SignalAction.FIRE, "fall", "r-9", T0, "4.1", Severity.RED, "v1")
    d = g.on_signal(s, T0)
    assert d.alert is not None and d.alert.team == "unassigned"


def test_dedup_counts_repeats_and_does_not_renotify() -> None:
    g = gk()
    g.on_signal(fire("water", ev="e1"), at(0))
    d2 = g.on_signal(fire("water", 30, ev="e2"), at(30))
    d3 = g.on_signal(fire("water", 60, ev="e2"), at(60))
    assert d2.kind is DecisionKind.REPEATED and not d2.route
    assert d3.alert is not None and d3.alert.id == "a-1"
    assert d3.alert.repeat_count == 2
    assert d3.alert.events == ("e1", "e2")
    assert d3.previous_version == 2 and [r.step for r in d3.records] == [Step.REPEATED]
    assert len(g.open_alerts()) == 1


def test_two_offline_devices_give_one_alert_until_the_last_is_back() -> None:
    """DESIGN's gate: one open alert per resident and rule. The alert lists the
    devices still offline and closes when the last one is back."""
    g = gk()
    a = g.on_signal(fire("device-offline", device="motion-1"), at(0))
    b = g.on_signal(fire("device-offline", 1, device="bed-1"), at(1))
    assert a.kind is DecisionKind.RAISED and b.kind is DecisionKind.REPEATED and not b.route
    assert b.alert is not None and b.alert.devices == ("motion-1", "bed-1")
    assert len(g.open_alerts()) == 1
    # a clear for a device that is not in it changes nothing
    assert g.on_signal(clear("device-offline", 2, device="thermo-1"), at(2)).kind is (
        DecisionKind.IGNORED
    )
    c = g.on_signal(clear("device-offline", 3, device="motion-1"), at(3))
    assert c.kind is DecisionKind.UPDATED and c.alert is not None and c.alert.is_open
    assert c.alert.devices == ("bed-1",)
    assert "still: bed-1" in c.alert.records[-1].note
    # inactivity depends on the bed, which is still offline: inhibited
    s = g.on_signal(fire("inactivity", 4), at(4))
    assert s.kind is DecisionKind.SUPPRESSED and "device bed-1 is offline" in s.reason
    d = g.on_signal(clear("device-offline", 5, device="bed-1"), at(5))
    assert (
        d.kind is DecisionKind.CANCELLED and d.alert is not None and d.alert.devices == ("bed-1",)
    )
    assert g.open_for(R, "device-offline") is None
    # the folded alert rebuilds from its records, devices included
    assert Alert.from_records(d.alert.records) == d.alert


def test_dedup_per_device_when_configured() -> None:
    g = gk(GateConfig.model_validate({"dedup": {"per_device": True}}))
    a = g.on_signal(fire("device-offline", device="motion-1"), at(0))
    b = g.on_signal(fire("device-offline", device="bed-1"), at(1))
    assert a.kind is b.kind is DecisionKind.RAISED
    c = g.on_signal(fire("device-offline", 2, device="bed-1"), at(2))
    assert c.kind is DecisionKind.REPEATED
    d = g.on_signal(clear("device-offline", 3, device="bed-1"), at(3))
    assert d.kind is DecisionKind.CANCELLED and g.open_for(R, "device-offline", "motion-1")


def test_dedup_ends_when_alert_closes() -> None:
    g = gk()
    d = g.on_signal(fire("water"), at(0))
    assert d.alert is not None
    g.update(lc.cancel(d.alert, at(10), "nurse-7", CancelReason.FALSE_ALARM))
    d2 = g.on_signal(fire("water", 20), at(20))
    assert d2.kind is DecisionKind.RAISED and d2.alert is not None and d2.alert.id == "a-2"


# ----------------------------------------------------------------- auto-resolve


def test_reset_before_acknowledge_cancels_red_alarm() -> None:
    g = gk()
    g.on_signal(fire("button"), at(0))
    [d] = g.on_event(reset(20), at(20))
    assert d.kind is DecisionKind.CANCELLED and d.alert is not None
    assert d.alert.state is State.CANCELLED
    assert d.alert.cancel_reason is CancelReason.DEVICE_RESET
    assert "alarm.reset from device button-1" in d.alert.records[-1].note
    assert g.open_alerts() == []


def test_reset_after_acknowledge_only_notes_it() -> None:
    g = gk()
    d = g.on_signal(fire("fall"), at(0))
    assert d.alert is not None
    g.update(lc.take(d.alert, at(10), "nurse-7"))
    [d2] = g.on_event(reset(20, "fall-1", DeviceKind.FALL), at(20))
    assert d2.kind is DecisionKind.CLEARED and d2.alert is not None
    assert d2.alert.state is State.ACCEPTED and d2.alert.records[-1].step is Step.CLEARED


def test_reset_from_unrelated_device_kind_does_not_reset() -> None:
    g = gk()
    g.on_signal(fire("fall"), at(0))
    assert g.on_event(reset(20, "smoke-1", DeviceKind.SMOKE), at(20)) == []
    # an older reset (event time before the alarm) does not reset it either
    assert g.on_event(reset(-5), at(21)) == []
    # other events are not the gates' business
    ev = Event("motion-1", "m1", EventType.MOTION_DETECTED, at(3), R, DeviceKind.MOTION)
    assert g.on_event(ev, at(3)) == []


def test_clear_cancels_unacknowledged_alert_as_auto_resolved() -> None:
    g = gk()
    g.on_signal(fire("inactivity"), at(0))
    d = g.on_signal(clear("inactivity", 60), at(60))
    assert d.kind is DecisionKind.CANCELLED and d.alert is not None
    assert d.alert.cancel_reason is CancelReason.AUTO_RESOLVED


def test_clear_resolves_acknowledged_technical_alert() -> None:
    g = gk()
    d = g.on_signal(fire("temperature-high", device="thermo-1"), at(0))
    assert d.alert is not None
    g.update(lc.acknowledge(d.alert, at(5), "nurse-7"))
    d2 = g.on_signal(clear("temperature-high", 60, device="thermo-1"), at(60))
    assert d2.kind is DecisionKind.RESOLVED and d2.alert is not None
    assert d2.alert.outcome is Outcome.AUTO_RESOLVED and d2.alert.records[-1].actor == "system"


def test_clear_leaves_acknowledged_care_alert_with_staff() -> None:
    g = gk()
    d = g.on_signal(fire("inactivity"), at(0))
    assert d.alert is not None
    g.update(lc.take(d.alert, at(5), "nurse-7"))
    d2 = g.on_signal(clear("inactivity", 60), at(60))
    assert d2.kind is DecisionKind.CLEARED and d2.alert is not None
    assert d2.alert.is_open and d2.alert.records[-1].data == {"cause": "rule clear"}


def test_clear_without_open_alert_is_ignored() -> None:
    assert gk().on_signal(clear("water"), at(0)).kind is DecisionKind.IGNORED


# ----------------------------------------------------------------- silences


def silence(scope: SilenceScope, target: str, start: float, end: float, **kw: object) -> Silence:
    return Silence(
        id=f"s-{target}",
        scope=scope,
        target=target,
        start=at(start),
        end=at(end),
        created_by="leader-1",
        reason="in hospital",
        **kw,
    )


def test_resident_silence_suppresses_and_records_who_and_why() -> None:
    g = gk()
    g.add_silence(silence(SilenceScope.RESIDENT, R, 0, 3600))
    d = g.on_signal(fire("inactivity", 60), at(60))
    assert d.kind is DecisionKind.SUPPRESSED and not d.route
    assert d.alert is not None and d.alert.suppressed
    assert d.alert.silence_id == f"s-{R}"
    assert "in hospital" in d.reason and "leader-1" in d.reason
    assert d.alert.records[0].data["suppressed_reason"] == d.reason
    with pytest.raises(lc.TransitionError, match="suppressed"):
        lc.notify(d.alert, at(61))


def test_silence_only_within_its_time_and_rules() -> None:
    g = gk()
    g.add_silence(silence(SilenceScope.RESIDENT, R, 100, 200, rules=("inactivity",)))
    assert g.on_signal(fire("water", 0), at(0)).kind is DecisionKind.RAISED
    assert g.on_signal(fire("fall", 150), at(150)).kind is DecisionKind.RAISED
    assert g.on_signal(fire("inactivity", 150), at(150)).kind is DecisionKind.SUPPRESSED


def test_device_silence_suppresses_its_alerts_and_dependent_rules() -> None:
    g = gk()
    g.add_silence(silence(SilenceScope.DEVICE, "button-1", 0, 3600))
    assert g.on_signal(fire("button", 5), at(5)).kind is DecisionKind.SUPPRESSED
    off = g.on_signal(fire("device-offline", 6, device="button-1"), at(6))
    assert off.kind is DecisionKind.SUPPRESSED
    assert g.on_signal(fire("fall", 7), at(7)).kind is DecisionKind.RAISED


def test_silence_end_releases_still_open_alert() -> None:
    g = gk()
    g.add_silence(silence(SilenceScope.RESIDENT, R, 0, 600))
    g.on_signal(fire("water", 10), at(10))
    assert g.release_due(at(300)) == []
    assert g.next_deadline(at(300)) == at(600)
    [d] = g.release_due(at(600))
    assert d.kind is DecisionKind.RELEASED and d.route
    assert d.alert is not None and not d.alert.suppressed


def test_silence_ended_early() -> None:
    g = gk()
    g.add_silence(silence(SilenceScope.RESIDENT, R, 0, 3600))
    ended = g.end_silence(f"s-{R}", at(100), "nurse-7")
    assert ended.end == at(100) and ended.ended_by == "nurse-7"
    assert g.on_signal(fire("water", 200), at(200)).kind is DecisionKind.RAISED


def test_silence_validation() -> None:
    with pytest.raises(ValidationError):
        silence(SilenceScope.RESIDENT, R, 10, 5)
    with pytest.raises(ValidationError):
        Silence(
            id="s",
            scope=SilenceScope.RESIDENT,
            target=R,
            start=at(0),
            end=at(5),
            created_by="",
            reason="x",
        )


# ----------------------------------------------------------------- inhibition


def test_offline_device_inhibits_inactivity() -> None:
    g = gk()
    off = g.on_signal(fire("device-offline", device="motion-1"), at(0))
    assert off.kind is DecisionKind.RAISED and off.alert is not None
    d = g.on_signal(fire("inactivity", 60), at(60))
    assert d.kind is DecisionKind.SUPPRESSED and d.alert is not None
    assert "motion-1 is offline" in d.reason and off.alert.id in d.reason
    # other rules are not inhibited
    assert g.on_signal(fire("water", 61), at(61)).kind is DecisionKind.RAISED


def test_offline_unrelated_device_does_not_inhibit() -> None:
    g = gk()
    g.on_signal(fire("device-offline", device="smoke-1"), at(0))
    assert g.on_signal(fire("inactivity", 60), at(60)).kind is DecisionKind.RAISED


def test_device_back_online_ends_inhibition() -> None:
    g = gk()
    g.on_signal(fire("device-offline", device="motion-1"), at(0))
    g.on_signal(clear("device-offline", 30, device="motion-1"), at(30))
    assert g.on_signal(fire("inactivity", 60), at(60)).kind is DecisionKind.RAISED


def test_red_holds_back_yellow_and_green_for_the_window_then_stops() -> None:
    g = gk(GateConfig(inhibition=InhibitionConfig(red_hold_window=timedelta(minutes=15))))
    red = g.on_signal(fire("fall"), at(0))
    assert red.alert is not None
    y = g.on_signal(fire("water", 60), at(60))
    gr = g.on_signal(fire("battery-low", 61, device="button-1"), at(61))
    assert y.kind is gr.kind is DecisionKind.HELD
    assert y.alert is not None and y.alert.held_until == at(900)
    assert y.alert.held_by == red.alert.id
    # red alerts are never held
    assert g.on_signal(fire("button", 62), at(62)).kind is DecisionKind.RAISED
    assert g.release_due(at(899)) == []
    assert g.next_deadline(at(899)) == at(900)
    released = g.release_due(at(900))
    assert {d.alert.rule for d in released if d.alert} == {"water", "battery-low"}
    assert all(d.route for d in released)
    # the second red alert (at 62 s) holds new ones until 962 s; after that,
    # a new yellow alert goes straight through
    assert g.on_signal(fire("inactivity", 961), at(961)).kind is DecisionKind.HELD
    assert g.on_signal(fire("temperature-high", 962), at(962)).kind is DecisionKind.RAISED


def test_hold_ends_when_red_alert_closes() -> None:
    g = gk()
    red = g.on_signal(fire("button"), at(0))
    g.on_signal(fire("water", 10), at(10))
    [c] = g.on_event(reset(20), at(20))
    assert c.kind is DecisionKind.CANCELLED and red.alert is not None
    [d] = g.release_due(at(21))
    assert d.alert is not None and d.alert.rule == "water" and d.route


def test_hold_back_can_be_switched_off() -> None:
    g = gk(GateConfig(inhibition=InhibitionConfig(red_holds_back=False)))
    g.on_signal(fire("fall"), at(0))
    assert g.on_signal(fire("water", 60), at(60)).kind is DecisionKind.RAISED


# ----------------------------------------------------------------- flapping


def test_flapping_folds_into_one_alert_and_flags_it() -> None:
    g = gk(GateConfig(flapping=FlappingConfig(max_fires=5, window=timedelta(hours=1))))
    # five fire/clear cycles: five short alerts, each auto-cancelled
    for i in range(5):
        d = g.on_signal(fire("water", i * 60), at(i * 60))
        assert d.kind is DecisionKind.RAISED and d.alert is not None and not d.alert.flapping
        g.on_signal(clear("water", i * 60 + 30), at(i * 60 + 30))
    # the sixth fire within the hour: one flapping alert, routed once
    d6 = g.on_signal(fire("water", 400), at(400))
    assert d6.kind is DecisionKind.RAISED and d6.alert is not None and d6.alert.flapping
    assert "flapping" in d6.reason
    # clears no longer close it, further fires fold into it without routing
    assert g.on_signal(clear("water", 430), at(430)).kind is DecisionKind.CLEARED
    d7 = g.on_signal(fire("water", 460), at(460))
    assert d7.kind is DecisionKind.FOLDED and not d7.route
    assert d7.alert is not None and d7.alert.id == d6.alert.id and d7.alert.repeat_count == 1


def test_flapping_marks_an_open_alert() -> None:
    g = gk(GateConfig(flapping=FlappingConfig(max_fires=3, window=timedelta(minutes=10))))
    kinds = [g.on_signal(fire("water", i), at(i)).kind for i in range(5)]
    assert kinds == [
        DecisionKind.RAISED,
        DecisionKind.REPEATED,
        DecisionKind.REPEATED,
        DecisionKind.FOLDED,
        DecisionKind.FOLDED,
    ]
    [a] = g.open_alerts()
    assert a.flapping and [r.step for r in a.records].count(Step.FLAPPING) == 1


def test_flapping_window_slides() -> None:
    g = gk(GateConfig(flapping=FlappingConfig(max_fires=2, window=timedelta(minutes=10))))
    for i in range(3):  # one fire every 6 minutes: never 3 within 10 minutes
        d = g.on_signal(fire("water", i * 360), at(i * 360))
        assert d.alert is not None and not d.alert.flapping
        g.on_signal(clear("water", i * 360 + 1), at(i * 360 + 1))


# ----------------------------------------------------------------- rebuild


def test_rebuild_from_stored_alerts_keeps_gates() -> None:
    g = gk(GateConfig(flapping=FlappingConfig(max_fires=3, window=timedelta(hours=1))))
    stored: dict[str, Alert] = {}
    g.add_silence(silence(SilenceScope.DEVICE, "bed-1", 0, 7200))
    for i in range(3):
        d = g.on_signal(fire("water", i * 60), at(i * 60))
        assert d.alert is not None
        stored[d.alert.id] = d.alert
        c = g.on_signal(clear("water", i * 60 + 1), at(i * 60 + 1))
        assert c.alert is not None
        stored[c.alert.id] = c.alert
    d = g.on_signal(fire("fall", 300), at(300))
    assert d.alert is not None
    stored[d.alert.id] = d.alert

    # restart: rebuild from the records only
    alerts = [Alert.from_records(a.records) for a in stored.values()]
    n = itertools.count(100)
    g2 = Gatekeeper.rebuild(
        g.config, alerts, g.silences(), new_id=lambda: f"a-{next(n)}", directory=DIRECTORY
    )
    assert [a.id for a in g2.open_alerts()] == [d.alert.id]
    assert g2.on_signal(fire("fall", 310), at(310)).kind is DecisionKind.REPEATED
    # the red hold survives the restart
    held = g2.on_signal(fire("battery-low", 320, device="button-1"), at(320))
    assert held.kind is DecisionKind.HELD
    # flapping history survives the restart: 4th water fire within the hour
    w = g2.on_signal(fire("water", 330), at(330))
    assert w.alert is not None and w.alert.flapping
    # the silence survives too: bed-exit depends on bed-1 (not in SEV, build it)
    s = Signal(SignalAction.FIRE, "bed-exit-no-return", R, at(340), "4.2", Severity.YELLOW, "v1")
    assert g2.on_signal(s, at(340)).kind is DecisionKind.SUPPRESSED


def test_gate_config_from_yaml_like_data() -> None:
    cfg = GateConfig.model_validate(
        {"inhibition": {"red_hold_window": "5m"}, "flapping": {"max_fires": 3, "window": "30m"}}
    )
    assert cfg.inhibition.red_hold_window == timedelta(minutes=5)
    assert cfg.flapping.window == timedelta(minutes=30)
    assert cfg.lookback == timedelta(minutes=30)
    with pytest.raises(ValidationError):
        GateConfig.model_validate({"flapping": {"window": "0s"}})
    with pytest.raises(ValidationError):
        GateConfig.model_validate({"dedup": {"bogus": 1}})
