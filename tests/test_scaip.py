"""SCAIP <mrq> -> events and the <mrs> reply, through the decoder (no broker)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trygg.ingest import credentials
from trygg.ingest.decode import Decoder
from trygg.ingest.scaip import build_mrs, handle_mrq, parse_mrs
from trygg.ingest.scaip_mrq import Snu
from trygg.model import EventType, Room
from trygg.registry import parse_registry

NOW = datetime(2026, 3, 29, 1, 50, tzinfo=UTC)
REG = parse_registry(
    {
        "residents": [{"id": "r-1", "team": "stovner-nord"}, {"id": "r-2", "team": "grorud-sor"}],
        "devices": [
            {"id": "lu-1", "resident": "r-1", "kind": "button", "room": "livingroom"},
            {"id": "bed-1", "resident": "r-1", "kind": "bed", "room": "bedroom"},
            {"id": "gps-2", "resident": "r-2", "kind": "gps"},
        ],
    }
)
TOPIC = "trygg/oslo/devices/lu-1/scaip"


def mrq(ref: str = "A1", **tags: str) -> bytes:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in {"ref": ref, "cid": "10149471", **tags}.items())
    return f"<mrq>{body}</mrq>".encode()


def decode(payload: bytes, topic: str = TOPIC):  # type: ignore[no-untyped-def]
    return Decoder("oslo", REG.device_by_id()).decode(topic, payload, NOW)


# Real message shapes from Essence/Possum/Telealarm units (REFERENCE.md 1.1).
def test_real_heartbeat_and_alarm_samples() -> None:
    out = decode(b"<mrq><ref>0815</ref><mty>PI</mty><cid>10149471</cid><dty>2</dty></mrq>")
    [e] = out.events
    assert (e.type, e.id, e.device, e.resident, e.time) == (
        EventType.HEARTBEAT,
        "0815",
        "lu-1",
        "r-1",
        NOW,
    )
    assert out.dead == []
    assert out.reply is not None
    assert out.reply[0] == TOPIC + "/response"
    assert parse_mrs(out.reply[1]) == ("0815", 0, "OK")

    out = decode(
        b"<mrq><ref>4711</ref><cid>10149471</cid><dty>3</dty><stc>10</stc>"
        b"<crd>gsm:+4712345678</crd></mrq>"
    )
    [e] = out.events
    assert e.type is EventType.BUTTON_PRESSED and e.room is Room.LIVINGROOM
    assert out.reply is not None and parse_mrs(out.reply[1])[:2] == ("4711", 0)


@pytest.mark.parametrize("code", ["3", "03", "0003", " 3 "])
def test_codes_arrive_unpadded(code: str) -> None:
    [e] = decode(mrq(dty=code, stc="10")).events
    assert e.type is EventType.BUTTON_PRESSED


@pytest.mark.parametrize(
    ("tags", "expected", "value"),
    [
        ({"mty": "PI", "dty": "2"}, EventType.HEARTBEAT, None),
        ({"mty": "RE", "dty": "3"}, EventType.ALARM_ABORTED, None),
        ({"dty": "3", "stc": "93"}, EventType.ALARM_CANCELLED, None),
        ({"dty": "5", "stc": "92"}, EventType.ALARM_CANCELLED, None),
        ({"dty": "3"}, EventType.BUTTON_PRESSED, None),
        ({"dty": "48", "stc": "10"}, EventType.BUTTON_PRESSED, None),
        ({"dty": "4", "stc": "10"}, EventType.PULLCORD_PULLED, None),
        ({"dty": "5", "stc": "9"}, EventType.FALL_DETECTED, None),
        ({"dty": "5", "stc": "10"}, EventType.BUTTON_PRESSED, None),
        ({"dty": "5", "stc": "19"}, EventType.FALL_CANCELLED, None),
        ({"dty": "30"}, EventType.FALL_DETECTED, None),
        ({"dty": "23", "stc": "9"}, EventType.SMOKE_DETECTED, None),
        ({"dty": "25"}, EventType.HEAT_DETECTED, None),
        ({"dty": "33", "stc": "9"}, EventType.WATER_DETECTED, None),
        ({"dty": "17", "stc": "9"}, EventType.SEIZURE_DETECTED, None),
        ({"dty": "12", "stc": "3"}, EventType.BED_VACANT, None),
        ({"dty": "13", "stc": "117"}, EventType.BED_OCCUPIED, None),
        ({"dty": "14", "stc": "76"}, EventType.DOOR_OPENED, None),
        ({"dty": "14", "stc": "21"}, EventType.DOOR_CLOSED, None),
        ({"dty": "10", "stc": "119"}, EventType.MOTION_DETECTED, None),
        ({"dty": "18"}, EventType.MOTION_DETECTED, None),
        ({"dty": "44", "stc": "3"}, EventType.CHAIR_VACANT, None),
        ({"dty": "11", "stc": "81"}, EventType.DOSE_MISSED, None),
        ({"dty": "11", "stc": "83"}, EventType.DOSE_TAKEN, None),
        ({"dty": "11", "stc": "67"}, EventType.DISPENSER_FAULT, None),
        ({"dty": "11", "stc": "16"}, EventType.BATTERY, 10.0),
        ({"dty": "3", "stc": "14"}, EventType.BATTERY, 0.0),
        ({"dty": "3", "stc": "15"}, EventType.BATTERY, 100.0),
        ({"dty": "3", "stc": "16", "ite": "battery at 12 %"}, EventType.BATTERY, 12.0),
        ({"dty": "20", "stc": "100"}, EventType.TEMPERATURE, 30.0),
        ({"dty": "20", "stc": "101", "ite": "12,5 C"}, EventType.TEMPERATURE, 12.5),
        ({"dty": "2", "stc": "70"}, EventType.HEARTBEAT, None),
        ({"dty": "2", "stc": "75"}, EventType.HEARTBEAT, None),
        ({"mty": "IN", "dty": "2", "stc": "102"}, EventType.HEARTBEAT, None),
    ],
)
def test_mapping(tags: dict[str, str], expected: EventType, value: float | None) -> None:
    out = decode(mrq(**tags))
    assert out.dead == [], out.dead[0].reason if out.dead else ""
    [e] = out.events
    assert (e.type, e.value) == (expected, value)


def test_location_codes_name_the_room_and_geo_gives_position_and_time() -> None:
    [e] = decode(mrq(dty="33", stc="9", lco="011")).events
    assert e.room is Room.BATHROOM
    body = mrq(
        "G1",
        dty="51",
        lge="<geo>59.9127,10.7461</geo><tim>2026-03-29T02:45:00+01</tim>",
    )
    out = decode(body, "trygg/oslo/devices/gps-2/scaip")
    [e] = out.events
    assert e.type is EventType.LOCATION and e.position == (59.9127, 10.7461)
    assert e.time == NOW - timedelta(minutes=5)
    # An alarm from a mobile unit carries its position with it.
    gga = "$GPGGA,014500.00,5954.762,N,01044.766,E,1,08,0.9,12.0,M,40.0,M,,*47"
    [e] = decode(mrq(dty="3", stc="10", lge=f"<gga>{gga}</gga>")).events
    assert e.type is EventType.BUTTON_PRESSED and e.position is not None
    assert e.position == pytest.approx((59.9127, 10.7461), abs=1e-4)


@pytest.mark.parametrize(
    ("payload", "snu", "reason", "ref"),
    [
        (b"not xml at all", Snu.INVALID_FORMAT, "not XML", ""),
        (b'{"id": "x"}', Snu.INVALID_FORMAT, "not XML", ""),
        (b"<mrs><ref>A1</ref><snu>0</snu></mrs>", Snu.INVALID_FORMAT, "expected an <mrq>", "A1"),
        (
            b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<mrq><ref>&b;</ref></mrq>",
            Snu.INVALID_FORMAT,
            "DTDForbidden",
            "",
        ),
        (b"<mrq><ref>A1</ref><dty>3</dty></mrq>", Snu.MANDATORY_TAG_MISSING, "cid", "A1"),
        (b"<mrq><cid>1</cid><dty>3</dty></mrq>", Snu.REFERENCE_MISSING, "ref", ""),
        (mrq("A1", dty=""), Snu.MANDATORY_TAG_MISSING, "dty", "A1"),
        (mrq("A1", dty="x3"), Snu.WRONG_DATA_CONTENT, "dty 'x3'", "A1"),
        (mrq("A1", dty="3", stc="12345"), Snu.WRONG_DATA_CONTENT, "stc", "A1"),
        (mrq("A1", dty="3", mty="XX"), Snu.WRONG_DATA_CONTENT, "mty", "A1"),
        (mrq("A1", dty="3", stc="9999"), Snu.NOT_TREATED, "stc 9999 (unspecified", "A1"),
        (mrq("A1", dty="23", stc="65"), Snu.NOT_TREATED, "maintenance needed", "A1"),
        (mrq("bad ref!", dty="3"), Snu.WRONG_DATA_CONTENT, "ref", ""),
        (mrq("A1", dty="3", lge="<geo>91,10</geo>"), Snu.WRONG_DATA_CONTENT, "Earth", "A1"),
        (
            mrq("A1", dty="51", lge="<geo>59,10</geo><tim>2026-03-19T02:45:00+01</tim>"),
            Snu.WRONG_DATA_CONTENT,
            "old",
            "A1",
        ),
        (
            mrq("A1", dty="51", lge="<geo>59,10</geo><tim>2026-03-29T02:45:00</tim>"),
            Snu.WRONG_DATA_CONTENT,
            "UTC offset",
            "A1",
        ),
        (b"<mrq>" + b"x" * 300_000 + b"</mrq>", Snu.MESSAGE_TOO_LONG, "exceeds", ""),
    ],
)
def test_bad_messages_are_dead_letters_with_the_right_status(
    payload: bytes, snu: Snu, reason: str, ref: str
) -> None:
    out = decode(payload)
    assert out.events == []
    [d] = out.dead
    assert reason in d.reason and d.reason.startswith("scaip: ")
    # A dead letter keeps the first 64 KiB, and the size and hash of the whole.
    assert d.payload == payload[: 64 * 1024] and d.device == "lu-1"
    assert d.size == len(payload) and d.sha256 == hashlib.sha256(payload).digest()
    assert out.reply is not None
    got_ref, got_snu, ste = parse_mrs(out.reply[1])
    assert (got_ref, got_snu) == (ref, snu)
    assert reason in ste or len(ste) == 128


def test_unknown_device_gets_not_treated() -> None:
    out = decode(mrq(dty="3"), "trygg/oslo/devices/nobody/scaip")
    assert out.events == [] and "unknown device 'nobody'" in out.dead[0].reason
    assert out.reply is not None and out.reply[0] == "trygg/oslo/devices/nobody/scaip/response"
    assert parse_mrs(out.reply[1])[1] == Snu.NOT_TREATED


def test_events_channel_has_no_reply_and_other_channels_stay_dead_letters() -> None:
    out = decode(b"{}", "trygg/oslo/devices/lu-1/events")
    assert out.reply is None and out.dead
    out = decode(mrq(dty="3"), "trygg/oslo/devices/lu-1/other")
    assert out.reply is None and "not handled" in out.dead[0].reason


def test_namespaced_mrq_and_reply_escaping() -> None:
    body = b'<s:mrq xmlns:s="urn:scaip"><s:ref>N1</s:ref><s:cid>1</s:cid><s:dty>3</s:dty></s:mrq>'
    assert handle_mrq(body).snu is Snu.OK
    reply = build_mrs("R1", 3, "a <b> & \x01 c" + "x" * 300)
    ref, snu, ste = parse_mrs(reply)
    assert (ref, snu) == ("R1", 3) and ste.startswith("a <b> &   c") and len(ste) == 128


# --- credentials -------------------------------------------------------------


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto_passwd")
    if exe is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "pw"
    subprocess.run([exe, "-c", "-b", str(pw), "dev-1", "s3cret"], check=True)
    hashed = pw.read_text().strip().split(":", 1)[1]
    assert hashed.startswith("$7$")
    assert credentials.check_password("s3cret", hashed)
    assert not credentials.check_password("wrong", hashed)
    _, _, it, salt, digest = hashed.split("$")
    ours = credentials.hash_password("s3cret", base64.b64decode(salt), int(it))
    assert ours == hashed
    raw = hashlib.pbkdf2_hmac("sha512", b"s3cret", base64.b64decode(salt), int(it), 64)
    assert base64.b64encode(raw).decode() == digest


def test_generate_keeps_passwords_unless_rotated(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    first = credentials.generate(REG, "oslo", out)
    users = {c.user: c.role for c in first.credentials}
    assert users == {
        "trygg": "service",
        "staff-grorud-sor": "staff",
        "staff-stovner-nord": "staff",
        "lu-1": "device",
        "bed-1": "device",
        "gps-2": "device",
    }
    assert stat.S_IMODE((out / "credentials.csv").stat().st_mode) == 0o600
    passwd = (out / "passwd").read_text()
    acl = (out / "acl").read_text()
    assert "pattern write trygg/oslo/devices/%u/events" in acl
    assert "pattern read trygg/oslo/devices/%u/scaip/response" in acl
    assert "user staff-grorud-sor\ntopic read trygg/oslo/teams/grorud-sor/alerts" in acl
    again = credentials.generate(REG, "oslo", out)
    assert again.created == [] and len(again.kept) == 6
    assert (out / "passwd").read_text() == passwd
    assert {c.user: c.password for c in again.credentials} == {
        c.user: c.password for c in first.credentials
    }
    rotated = credentials.generate(REG, "oslo", out, rotate=True)
    assert len(rotated.created) == 6
    old = {c.user: c.password for c in first.credentials}
    assert all(old[c.user] != c.password for c in rotated.credentials)


def test_generate_refuses_a_device_named_like_the_service(tmp_path: Path) -> None:
    reg = parse_registry(
        {
            "residents": [{"id": "r-1", "team": "a"}],
            "devices": [{"id": "trygg", "resident": "r-1", "kind": "button"}],
        }
    )
    with pytest.raises(credentials.CredentialsError, match="both"):
        credentials.generate(reg, "oslo", tmp_path)
