"""SCAIP as SS 91100 means it (issue 21): message sessions, reset/restoral/cancel,
every alarm of the spec's tables, and the reply's ``snu``.

A small pipeline without I/O: the decoder, the live dedup (``RecentKeys``, by
device and event id, as in the runner), the rule engine with the standard
catalogue, and the alert gates for the events they act on (``gates.gated``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from tests.test_rules_helpers import standard
from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, CancelReason, State
from trygg.alerts.directory import Directory
from trygg.alerts.gates import Gatekeeper, gated
from trygg.ingest.decode import Decoder
from trygg.ingest.dedup import RecentKeys
from trygg.ingest.scaip import parse_mrs
from trygg.ingest.scaip_codes import DEVICE_TYPES, STATUS_CODES
from trygg.ingest.scaip_mrq import Snu
from trygg.model import Event, EventType
from trygg.registry import parse_registry
from trygg.rules.engine import Engine

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
REG = parse_registry(
    {
        "residents": [{"id": "r-1", "team": "stovner-nord"}, {"id": "r-2", "team": "grorud"}],
        "devices": [
            {"id": "lu-1", "resident": "r-1", "kind": "button", "room": "livingroom"},
            {"id": "smoke-1", "resident": "r-1", "kind": "smoke", "room": "kitchen"},
            # a second alarm unit in the same home (a bedroom unit)
            {"id": "lu-1b", "resident": "r-1", "kind": "button", "room": "bedroom"},
            {"id": "lu-2", "resident": "r-2", "kind": "button", "room": "livingroom"},
        ],
    }
)


def mrq(ref: str | None = "S1", **tags: str) -> bytes:
    fields = {"ref": ref, "cid": "10149471", **tags}
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v is not None)
    return f"<mrq>{body}</mrq>".encode()


@dataclass
class Pipeline:
    decoder: Decoder = field(default_factory=lambda: Decoder("oslo", REG.device_by_id()))
    dedup: RecentKeys = field(default_factory=RecentKeys)
    engine: Engine = field(default_factory=lambda: Engine(standard(), REG))
    gates: Gatekeeper = field(
        default_factory=lambda: Gatekeeper(
            None,
            new_id=(lambda c=itertools.count(1): f"a-{next(c)}"),
            directory=Directory.from_registry(REG),
        )
    )
    stored: list[Event] = field(default_factory=list)
    seen: dict[str, Alert] = field(default_factory=dict)  # every alert, by id, as it is now
    t: float = 0.0

    def send(self, payload: bytes, device: str = "lu-1") -> tuple[str, int, str]:
        """One message on the device's scaip topic -> its reply (ref, snu, ste)."""
        return parse_mrs(self.send_raw(payload, device))

    def send_raw(self, payload: bytes, device: str = "lu-1") -> bytes:
        """One message on the device's scaip topic -> its reply as sent."""
        self.t += 1
        now = T0 + timedelta(seconds=self.t)
        out = self.decoder.decode(f"trygg/oslo/devices/{device}/scaip", payload, now)
        for ev in out.events:
            if self.dedup.seen(ev.key):
                continue  # a re-delivery: dropped before the rules (runner, ingest.dedup)
            self.stored.append(ev)
            decisions = [self.gates.on_signal(sig, now) for sig in self.engine.process(ev, now)]
            if gated(ev):
                decisions += self.gates.on_event(ev, now)
            for d in decisions:
                if d.alert is not None:
                    self.seen[d.alert.id] = d.alert
        assert out.reply is not None and out.reply[0].endswith("/scaip/response")
        return out.reply[1]

    def alerts(self) -> list[Alert]:
        return sorted(self.seen.values(), key=lambda a: a.id)

    def open_rules(self) -> list[str]:
        return sorted(a.rule for a in self.gates.open_alerts())


# ------------------------------------------------------------- sessions (4.3/4.4)


def test_session_me_in_re_three_events_position_updated_alert_aborted() -> None:
    p = Pipeline()
    assert p.send(mrq("S1", dty="3", stc="10"))[:2] == ("S1", 0)
    [alert] = p.gates.open_alerts()
    assert alert.rule == "button" and alert.position is None
    # SS 91100 4.3: an information update carries the session's ref and mandatory data.
    reply = p.send(mrq("S1", mty="IN", dty="3", lge="<geo>59.9139,10.7522</geo>"))
    assert reply[:2] == ("S1", 0)
    [alert] = p.gates.open_alerts()
    assert alert.position == pytest.approx((59.9139, 10.7522))
    # 4.4: the unit aborts its session with a RE of the same ref.
    assert p.send(mrq("S1", mty="RE", dty="3"))[:2] == ("S1", 0)
    assert [e.type for e in p.stored] == [
        EventType.BUTTON_PRESSED,
        EventType.LOCATION,
        EventType.ALARM_ABORTED,
    ]
    assert len({e.id for e in p.stored}) == 3
    assert {e.id.split("~")[0] for e in p.stored} == {"S1"}
    assert p.gates.open_alerts() == []
    [closed] = p.alerts()
    assert closed.state is State.CANCELLED
    assert closed.cancel_reason is CancelReason.ABORTED_BY_UNIT
    assert closed.position == pytest.approx((59.9139, 10.7522))


def test_re_with_a_new_ref_cancels_nothing_else() -> None:
    p = Pipeline()
    p.send(mrq("S1", dty="3", stc="10"))  # button
    p.send(mrq("S2", dty="5", stc="9"))  # fall
    assert p.open_rules() == ["button", "fall"]
    assert p.send(mrq("S3", mty="RE", dty="3"))[:2] == ("S3", 0)
    assert p.open_rules() == ["button", "fall"]
    # ...and a RE of S2 aborts S2 only.
    p.send(mrq("S2", mty="RE", dty="5"))
    assert p.open_rules() == ["button"]


def test_re_of_another_units_session_with_the_same_ref_cancels_nothing() -> None:
    p = Pipeline()
    p.send(mrq("S1", dty="3", stc="10"), device="lu-1")
    p.send(mrq("S1", mty="RE", dty="3"), device="lu-2")  # another resident's unit
    assert p.open_rules() == ["button"]


def test_resent_identical_message_gets_identical_reply_and_no_second_event() -> None:
    p = Pipeline()
    for body in (
        mrq("S1", dty="23", stc="9"),
        mrq("S1", mty="IN", dty="23", lge="<geo>59.9,10.7</geo>"),
        mrq("S1", mty="RE", dty="23"),
    ):
        n = len(p.stored)
        first = p.decoder.decode("trygg/oslo/devices/lu-1/scaip", body, T0).reply
        assert p.send(body)[:2] == ("S1", 0)
        assert len(p.stored) == n + 1
        again = p.decoder.decode("trygg/oslo/devices/lu-1/scaip", body, T0).reply
        assert p.send(body)[:2] == ("S1", 0)
        assert len(p.stored) == n + 1, "a true repeat is dropped"
        assert first == again, "and answered with the original reply"


def test_an_update_with_new_content_is_a_new_event() -> None:
    p = Pipeline()
    p.send(mrq("S1", dty="51", stc="10", lge="<geo>59.9,10.7</geo>"))
    p.send(mrq("S1", mty="IN", dty="51", lge="<geo>59.91,10.71</geo>"))
    p.send(mrq("S1", mty="IN", dty="51", lge="<geo>59.92,10.72</geo>"))
    assert len(p.stored) == 3
    [alert] = p.gates.open_alerts()
    assert alert.rule == "tracker-sos" and alert.position == pytest.approx((59.92, 10.72))


def test_ame_more_follows_parts_are_events_of_one_session() -> None:
    # 6.2, ame: a request over 1300 bytes is split; "n" = messages still to come.
    p = Pipeline()
    assert p.send(mrq("S1", dty="3", stc="10", ame="1"))[:2] == ("S1", 0)
    assert p.send(mrq("S1", dty="3", stc="10", ame="0", ite="x" * 100))[:2] == ("S1", 0)
    assert len(p.stored) == 2
    [alert] = p.gates.open_alerts()
    assert alert.rule == "button" and alert.repeat_count == 1
    p.send(mrq("S1", mty="RE", dty="3"))
    assert p.gates.open_alerts() == []


# --------------------------------------------------- reset, restoral, cancel


def test_restoral_after_a_fire_alarm_leaves_the_fire_alert_open() -> None:
    p = Pipeline()
    p.send(mrq("F1", dty="23", stc="9"))
    assert p.send(mrq("F2", dty="23", stc="94"))[:2] == ("F2", 0)
    assert p.open_rules() == ["fire"]
    # a smoke detector's own reset does not cancel it either
    p.send(mrq("F3", dty="23", stc="92"))
    assert p.open_rules() == ["fire"]


def test_pendant_cancel_cancels_the_unanswered_button_alert_only() -> None:
    p = Pipeline()
    p.send(mrq("B1", dty="3", stc="10"))
    p.send(mrq("F1", dty="23", stc="9"), device="smoke-1")
    assert p.send(mrq("C1", dty="3", stc="19"))[:2] == ("C1", 0)  # was refused
    assert p.open_rules() == ["fire"]
    [button] = [a for a in p.alerts() if a.rule == "button"]
    assert button.cancel_reason is CancelReason.RESIDENT_CANCELLED


def test_an_alarm_that_reuses_a_ref_is_not_dropped_as_a_repeat() -> None:
    """A unit whose ref counter restarted sends a fire alarm with the ref of an
    earlier button press: a new message, so a new event and a fire alert. The
    same fire message sent again is still a repeat."""
    p = Pipeline()
    p.send(mrq("S1", dty="3", stc="10"))
    assert p.send(mrq("S1", dty="23", stc="9"))[:2] == ("S1", 0)
    assert p.open_rules() == ["button", "fire"]
    assert p.send(mrq("S1", dty="23", stc="9"))[:2] == ("S1", 0)
    assert [e.type for e in p.stored] == [EventType.BUTTON_PRESSED, EventType.SMOKE_DETECTED]


def test_cancel_from_another_unit_of_the_home_cancels_nothing() -> None:
    """Only the unit that raised the alarm can cancel it: the alert names the
    devices that fired it (``Alert.devices``)."""
    p = Pipeline()
    p.send(mrq("B1", dty="3", stc="10"))
    [a] = p.gates.open_alerts()
    assert a.devices == ("lu-1",)
    assert p.send(mrq("C1", dty="3", stc="19"), device="lu-1b")[:2] == ("C1", 0)
    assert p.open_rules() == ["button"]
    # the unit that raised it can
    p.send(mrq("C2", dty="3", stc="19"))
    assert p.open_rules() == []


def test_cancel_does_not_cancel_an_acknowledged_alert() -> None:
    p = Pipeline()
    p.send(mrq("B1", dty="3", stc="10"))
    [a] = p.gates.open_alerts()
    p.gates.update(lc.acknowledge(a, T0 + timedelta(seconds=5), "nurse-7"))
    p.send(mrq("C1", dty="3", stc="93"))
    [a] = p.gates.open_alerts()
    assert a.state is State.ACKNOWLEDGED and a.records[-1].step.value == "cleared"


# What each code does: the table in docs/ingest.md ("Reset, restoral and cancel").
@pytest.mark.parametrize(
    ("dty", "stc", "mty", "event", "cancels_button"),
    [
        ("3", None, "RE", EventType.ALARM_ABORTED, False),  # another session
        ("3", "19", None, EventType.ALARM_CANCELLED, True),
        ("3", "92", None, EventType.ALARM_CANCELLED, True),
        ("3", "93", None, EventType.ALARM_CANCELLED, True),
        ("48", "19", None, EventType.ALARM_CANCELLED, True),
        ("2", "93", None, EventType.ALARM_CANCELLED, True),
        ("51", "19", None, EventType.ALARM_CANCELLED, True),
        ("5", "19", None, EventType.FALL_CANCELLED, False),  # the fall rule's guard
        ("5", "2", None, EventType.FALL_CANCELLED, False),
        ("5", "93", None, EventType.ALARM_CANCELLED, True),
        ("3", "94", None, EventType.HEARTBEAT, False),  # restoral
        ("23", "94", None, EventType.HEARTBEAT, False),
        ("23", "92", None, EventType.HEARTBEAT, False),  # a sensor's own reset
        ("23", "19", None, EventType.HEARTBEAT, False),
    ],
)
def test_cancel_table_code_by_code(
    dty: str, stc: str | None, mty: str | None, event: EventType, cancels_button: bool
) -> None:
    p = Pipeline()
    p.send(mrq("B1", dty="3", stc="10"))
    tags = {"dty": dty, **({"stc": stc} if stc else {}), **({"mty": mty} if mty else {})}
    assert p.send(mrq("X1", **tags))[:2] == ("X1", 0)
    assert p.stored[-1].type is event
    assert p.open_rules() == ([] if cancels_button else ["button"])


# ------------------------------------------------------------ every alarm


@pytest.mark.parametrize(
    ("tags", "event", "rule"),
    [
        ({"dty": "26", "stc": "9"}, EventType.CO_DETECTED, "carbon-monoxide"),
        ({"dty": "26"}, EventType.CO_DETECTED, "carbon-monoxide"),
        ({"dty": "21", "stc": "9"}, EventType.GAS_DETECTED, "gas"),
        ({"dty": "21"}, EventType.GAS_DETECTED, "gas"),
        ({"dty": "0", "stc": "9"}, EventType.UNIT_ALARM, "local-unit-alarm"),
        ({"dty": "1"}, EventType.UNIT_ALARM, "local-unit-alarm"),
        ({"dty": "2", "stc": "9"}, EventType.UNIT_ALARM, "local-unit-alarm"),
        ({"dty": "45"}, EventType.UNIT_ALARM, "local-unit-alarm"),
        ({"dty": "48", "stc": "9"}, EventType.UNIT_ALARM, "local-unit-alarm"),
        ({"dty": "48", "stc": "10"}, EventType.BUTTON_PRESSED, "button"),
        ({"dty": "51", "stc": "10"}, EventType.SOS_PRESSED, "tracker-sos"),
        ({"dty": "51", "stc": "9"}, EventType.SOS_PRESSED, "tracker-sos"),
        ({"dty": "15", "stc": "9"}, EventType.WANDERING_DETECTED, "wandering"),
        ({"dty": "25", "stc": "9"}, EventType.HEAT_DETECTED, "heat"),
        ({"dty": "25", "stc": "100"}, EventType.HEAT_DETECTED, "heat"),
        ({"dty": "25", "stc": "126"}, EventType.HEAT_DETECTED, "heat"),
        ({"dty": "10", "stc": "9"}, EventType.INACTIVITY_DETECTED, "inactivity-alarm"),
        ({"dty": "23", "stc": "9"}, EventType.SMOKE_DETECTED, "fire"),
    ],
)
def test_every_alarm_raises_an_alert(tags: dict[str, str], event: EventType, rule: str) -> None:
    p = Pipeline()
    assert p.send(mrq("A1", **tags))[:2] == ("A1", 0)
    assert [e.type for e in p.stored] == [event]
    assert p.open_rules() == [rule]


def test_activity_detector_movement_is_still_motion() -> None:
    p = Pipeline()
    p.send(mrq("M1", dty="10", stc="119"))
    assert p.stored[-1].type is EventType.MOTION_DETECTED and p.open_rules() == []


# ------------------------------------------------------------------ replies


def test_snu_5_for_a_well_formed_message_trygg_cannot_treat() -> None:
    p = Pipeline()
    ref, snu, ste = p.send(mrq("N1", dty="23", stc="65"))  # smoke detector maintenance
    assert (ref, snu) == ("N1", Snu.NOT_TREATED)
    assert "65 (maintenance needed)" in ste and "23 (smoke detector)" in ste
    assert p.stored == []


def test_snu_10_for_a_missing_ref() -> None:
    assert Pipeline().send(mrq(None, dty="3"))[:2] == ("", Snu.REFERENCE_MISSING)


def test_snu_7_for_a_missing_mandatory_tag() -> None:
    ref, snu, ste = Pipeline().send(b"<mrq><ref>M7</ref><dty>3</dty></mrq>")
    assert (ref, snu) == ("M7", Snu.MANDATORY_TAG_MISSING) and "cid" in ste


def test_unknown_device_reply_echoes_the_ref() -> None:
    ref, snu, _ = Pipeline().send(mrq("U1", dty="3", stc="10"), device="nobody")
    assert (ref, snu) == ("U1", Snu.NOT_TREATED)


def test_cve_answers_a_newer_version() -> None:
    p = Pipeline()
    out = p.decoder.decode("trygg/oslo/devices/lu-1/scaip", mrq("V1", ver="02.00", dty="3"), T0)
    assert out.reply is not None and b"<cve>01.00</cve>" in out.reply[1]
    assert parse_mrs(out.reply[1])[:2] == ("V1", 0)
    out = p.decoder.decode("trygg/oslo/devices/lu-1/scaip", mrq("V2", ver="01.00", dty="3"), T0)
    assert out.reply is not None and b"<cve>" not in out.reply[1]


def test_every_allocated_code_has_its_name() -> None:
    # SS 91100 Annex A: device types 0000-0051; Annex C: status codes 0000-0127.
    assert set(DEVICE_TYPES) == set(range(52))
    assert set(STATUS_CODES) == set(range(128))
    assert STATUS_CODES[49] == "inactive" and STATUS_CODES[50] == "initiated"
    _, _, ste = Pipeline().send(mrq("N2", dty="38", stc="106"))
    assert "dty 38 (tamper)" in ste and "stc 106 (trespass)" in ste
    _, _, ste = Pipeline().send(mrq("N3", dty="3", stc="950"))
    assert "950 (vendor-specific)" in ste


def test_an_alarms_own_position_is_on_its_alert_at_once() -> None:
    p = Pipeline()
    p.send(mrq("T1", dty="51", stc="10", lge="<geo>59.9,10.7</geo>"))
    [alert] = p.gates.open_alerts()
    assert alert.rule == "tracker-sos" and alert.position == pytest.approx((59.9, 10.7))
    # a position report of another session (a tracker's own, no stc) leaves it alone
    p.send(mrq("T2", dty="51", lge="<geo>60.0,11.0</geo>"))
    [alert] = p.gates.open_alerts()
    assert alert.position == pytest.approx((59.9, 10.7))
