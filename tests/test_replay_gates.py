"""`trygg rules replay` answers "who would have been paged": the cases in
tests/replay_gates.yaml (written to be read by a care specialist), run through
the command; and the gates' counts and the back-test's use of them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner

from tests.test_rules_helpers import registry as make_registry
from tests.test_rules_helpers import standard
from trygg.durations import parse_duration
from trygg.rules.fixtures import parse_local
from trygg.tuning.cli import app
from trygg.tuning.replay import replay

CASES = Path(__file__).with_name("replay_gates.yaml")
OSLO = ZoneInfo("Europe/Oslo")
DOC = yaml.safe_load(CASES.read_text())
ALERT_KEYS = {"at", "rule", "resident", "code", "severity", "events"}
RAW_KEYS = ALERT_KEYS | {"action", "device"}


def expand(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The case's events as replay lines, in time order (a stable sort, so that
    events at the same time keep the order they are written in)."""
    out: list[tuple[datetime, dict[str, Any]]] = []
    for e in events:
        if "every" in e:
            step = parse_duration(e["every"])
            t, end = parse_local(e["from"], OSLO), parse_local(e["to"], OSLO)
            while t <= end:
                out.append((t, {"device": e["device"], "type": e["type"]}))
                t += step
        else:
            out.append((parse_local(e["at"], OSLO), e))
    out.sort(key=lambda x: x[0].timestamp())
    lines = []
    for n, (t, e) in enumerate(out, 1):
        line = {
            "id": str(e.get("id", f"e{n}")),
            "type": e["type"],
            "time": t.isoformat(),
            "device": e["device"],
        }
        if "value" in e:
            line["value"] = e["value"]
        lines.append(line)
    return lines


def write_case(tmp: Path, case: dict[str, Any]) -> tuple[Path, Path]:
    reg = case.get("registry", DOC["registry"])
    residents = [{"id": r, "team": "t"} for r in reg["residents"]]
    (tmp / "registry.yaml").write_text(
        yaml.safe_dump({"residents": residents, "devices": reg["devices"]})
    )
    (tmp / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in expand(case["events"])))
    return tmp / "events.jsonl", tmp / "registry.yaml"


def at(text: str) -> float:
    return parse_local(text, OSLO).timestamp()


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["name"][:70] for c in DOC["cases"]])
def test_replay_case(tmp_path: Path, case: dict[str, Any]) -> None:
    events, reg = write_case(tmp_path, case)
    args = ["replay", "--events", str(events), "--registry", str(reg)]
    if "until" in case:
        args += ["--until", parse_local(case["until"], OSLO).isoformat()]
    if case.get("raw"):
        args.append("--raw")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    printed = [json.loads(x) for x in r.stdout.splitlines()]
    times = [datetime.fromisoformat(o["at"]).timestamp() for o in printed]
    assert times == sorted(times)
    if case.get("raw"):
        # each expected signal names the fields it checks (device only where given)
        want = case["signals"]
        got = [
            {k: (at_ if k == "at" else o[k]) for k in w}
            for o, at_, w in zip(printed, times, want, strict=False)
        ]
        assert len(printed) == len(want), r.stdout
        assert got == [{**w, "at": at(w["at"])} for w in want]
        for o in printed:
            assert set(o) == RAW_KEYS
    else:
        got_alerts = [(o["rule"], o["resident"], t) for o, t in zip(printed, times, strict=True)]
        want_alerts = [(a["rule"], a["resident"], at(a["at"])) for a in case["paged"]]
        assert got_alerts == want_alerts
        for o in printed:  # the contract's shape, exactly
            assert set(o) == ALERT_KEYS
    for line in case.get("stderr", []):
        assert line in r.stderr, r.stderr
    for line in case.get("stderr_not", []):
        assert line not in r.stderr, r.stderr


def test_counts_of_what_the_gates_held_back() -> None:
    """The gates say what they did: repeated lines, inhibited and folded fires."""
    case = next(c for c in DOC["cases"] if c["name"].startswith("no inactivity"))
    reg = make_registry(
        case["registry"]["devices"], [{"id": r, "team": "t"} for r in case["registry"]["residents"]]
    )
    lines = [json.dumps(x) for x in expand(case["events"])]
    lines.insert(3, lines[2])  # one line sent twice
    fired, stats = replay(lines, reg, standard())
    assert [(s.rule, s.resident) for s in fired] == [
        ("device-offline", "r-1"),
        ("inactivity", "r-2"),
    ]
    assert (stats.repeated, stats.inhibited, stats.folded) == (1, 1, 0)
    raw, raw_stats = replay(lines, reg, standard(), raw=True)
    assert ("inactivity", "r-1") in [(s.rule, s.resident) for s in raw]
    assert raw_stats.repeated == 0 and raw_stats.events == stats.events + 1
