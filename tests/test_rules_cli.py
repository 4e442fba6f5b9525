"""`trygg rules check | test | replay` end to end (in-process through Typer)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.test_rules_helpers import RULES, standard
from trygg.durations import parse_duration
from trygg.rules.fixtures import parse_local
from trygg.tuning.cli import app

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_rules_test_standard_catalogue_passes() -> None:
    r = run("test", str(RULES / "tests"), "--rules", str(RULES))
    assert r.exit_code == 0, r.output
    assert " 0 failed" in r.output
    # every rule of the catalogue is covered by the fixture files, firing and not firing
    covered_fire: set[str] = set()
    files_rules: set[str] = set()
    quiet_cases = 0
    for f in sorted((RULES / "tests").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        files_rules.update(doc["rules"])
        for case in doc["tests"]:
            covered_fire.update(e["rule"] for e in case.get("expect", []))
            quiet_cases += not case.get("expect")
    assert covered_fire == set(standard().rule_ids)
    assert files_rules == set(standard().rule_ids)
    assert quiet_cases >= 8


def test_rules_test_reports_a_readable_diff_and_fails(tmp_path: Path) -> None:
    f = tmp_path / "wrong.yaml"
    f.write_text(
        """rules: [bed-exit-no-return]
registry:
  residents: [r-1]
  devices:
    - {id: bed-1, resident: r-1, kind: bed, room: bedroom}
tests:
  - name: wrong expectation
    events:
      - {at: "2026-03-29 01:50", device: bed-1, type: bed.vacant}
    eval_until: "2026-03-29 05:00"
    expect:
      - {rule: bed-exit-no-return, resident: r-1, at: "2026-03-29 03:20"}
  - name: a time that does not exist
    events:
      - {at: "2026-03-29 02:30", device: bed-1, type: bed.vacant}
    expect: []
"""
    )
    r = run("test", str(f))
    assert r.exit_code == 1
    assert "FAIL" in r.output and "wrong expectation" in r.output
    assert "- bed-exit-no-return r-1 at 2026-03-29 03:20:00 +02:00" in r.output
    assert "+ bed-exit-no-return r-1 at 2026-03-29 03:10:00 +02:00" in r.output
    assert "'2026-03-29 02:30' does not exist in Europe/Oslo" in r.output
    assert "2 failed" in r.output


def test_check_ok_and_refusals(tmp_path: Path) -> None:
    r = run("check", "--rules", str(RULES))
    assert r.exit_code == 0 and "24 rules" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: water\n  enabled: maybe\n")
    r = run("check", "--rules", str(RULES), "--rules", str(bad))
    assert r.exit_code == 1
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        "residents:\n  - id: r-1\n    team: a\n    overrides:\n      inactivity: {for: 2 hours}\n"
        "devices: []\n"
    )
    r = run("check", "--rules", str(RULES), "--registry", str(reg))
    assert r.exit_code == 1
    assert f"{reg}:5: resident 'r-1': rule 'inactivity': parameter 'for'" in r.output


def test_bad_catalogue_message_has_file_line_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: inactivity\n  for: forever\n  override: {for: replace}\n")
    r = run("check", "--rules", str(RULES), "--rules", str(bad))
    assert r.exit_code == 1
    assert f"{bad}:2: rule 'inactivity': for: not a duration" in r.output


# ------------------------------------------------------------- replay --


def _cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for f in sorted((RULES / "tests").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for case in doc["tests"]:
            out.append((f"{f.stem}: {case['name']}", doc, case))
    return out


@pytest.mark.parametrize("name,doc,case", _cases(), ids=[c[0][:60] for c in _cases()])
def test_replay_matches_every_fixture(
    tmp_path: Path, name: str, doc: dict[str, Any], case: dict[str, Any]
) -> None:
    """Every fixture case, run through `trygg rules replay --raw` on JSONL, fires exactly
    the alerts the fixture expects (firing and not firing for every rule): the rule
    fixtures test the engine's signals, before the gates (tests/test_replay_gates.py)."""
    reg = case.get("registry", doc["registry"])
    residents = [
        {"team": "t", **({"id": r} if isinstance(r, str) else r)} for r in reg["residents"]
    ]
    devices = reg["devices"]
    (tmp_path / "registry.yaml").write_text(
        yaml.safe_dump({"residents": residents, "devices": devices})
    )
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Oslo")
    lines = []
    times = []
    for n, e in enumerate(case["events"], 1):
        at = parse_local(e["at"], tz)
        times.append(at)
        obj = {
            "id": e.get("id", f"e{n}"),
            "type": e["type"],
            "time": at.isoformat(),
            "device": e["device"],
        }
        if "value" in e:
            obj["value"] = e["value"]
        if "received" in e:
            obj["received"] = parse_local(e["received"], tz).isoformat()
        lines.append(json.dumps(obj))
    lines.insert(1, "this is not json")
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    last = max(times, key=lambda t: t.timestamp())
    eu = case.get("eval_until")
    if eu is None and any("received" in e for e in case["events"]):
        # The end by trygg's clock: a device clock ahead does not move it.
        until = max(parse_local(e["received"], tz) for e in case["events"] if "received" in e)
    elif eu is None:
        until = last
    elif str(eu).startswith("+"):
        until = last + parse_duration(eu[1:])
    else:
        until = parse_local(eu, tz)
    r = runner.invoke(
        app,
        [
            "replay",
            "--events",
            str(tmp_path / "events.jsonl"),
            "--registry",
            str(tmp_path / "registry.yaml"),
            "--until",
            until.isoformat(),
            "--raw",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "line 2:" in r.stderr
    rules = set(case.get("rules", doc["rules"]))
    signals = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    got_objs = [o for o in signals if o["action"] == "fire"]
    ats = [datetime.fromisoformat(o["at"]).timestamp() for o in got_objs]
    assert ats == sorted(ats)
    got = sorted(
        (o["rule"], o["resident"], datetime.fromisoformat(o["at"]).timestamp())
        for o in got_objs
        if o["rule"] in rules
    )
    want = sorted(
        (e["rule"], e["resident"], parse_local(e["at"], tz).timestamp())
        for e in case.get("expect", [])
    )
    assert got == want
    for o in signals:
        assert set(o) == {
            "at",
            "action",
            "rule",
            "resident",
            "device",
            "code",
            "severity",
            "events",
        }


def test_replay_reports_bad_lines_and_unknown_devices(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text(
        "residents: [{id: r-1, team: a}]\ndevices: [{id: b-1, resident: r-1, kind: button}]\n"
    )
    (tmp_path / "ev.jsonl").write_text(
        '{"id":"1","type":"button.pressed","time":"2026-05-05T10:00:00+02:00","device":"b-1"}\n'
        '{"id":"2","type":"button.pressed","time":"2026-05-05T10:00:00","device":"b-1"}\n'
        '{"id":"3","type":"button.pressed","time":"2026-05-05T10:01:00+02:00","device":"zz"}\n'
        '{"id":"4","type":"teleport","time":"2026-05-05T10:02:00+02:00","device":"b-1"}\n'
        "[1,2]\n"
    )
    r = run(
        "replay",
        "--events",
        str(tmp_path / "ev.jsonl"),
        "--registry",
        str(tmp_path / "registry.yaml"),
    )
    assert r.exit_code == 0
    assert "line 2:" in r.stderr and "time" in r.stderr
    assert "line 3: unknown device 'zz'" in r.stderr
    assert "line 4:" in r.stderr and "type" in r.stderr
    assert "line 5:" in r.stderr
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert objs[0] == {
        "at": "2026-05-05T10:00:00+02:00",
        "rule": "button",
        "resident": "r-1",
        "code": "4.13",
        "severity": "red",
        "events": ["1"],
    }
    # the clock stops at the last event: what is still waiting is listed, not alerted
    assert [o["rule"] for o in objs] == ["button"]
    assert (
        "pending at the end: device-offline for r-1 (device b-1), due 2026-05-05T10:15:00+02:00"
        in r.stderr
    )
    assert "pending at the end: inactivity for r-1, due 2026-05-05T14:00:00+02:00" in r.stderr
    assert "clock run to 2026-05-05T08:00:00+00:00" in r.stderr


def test_trygg_console_script_runs_the_rule_tests() -> None:
    """The installed `trygg` command mounts these commands as `trygg rules`."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "trygg"
    if not exe.exists():
        pytest.skip("the trygg console script is not installed in this environment")
    r = subprocess.run(
        [str(exe), "rules", "test", str(RULES / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
