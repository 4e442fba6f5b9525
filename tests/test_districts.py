"""Districts (issue 19, items 1 and 2): teams in districts in the registry and the
database; the city standard, district overlays within the standard's bounds, and
care plans on top (docs/rules.md, "Districts")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tests.test_rules_helpers import RULES, standard
from trygg.registry import DEFAULT_DISTRICT, RegistryError, load_registry, read_registry_text
from trygg.rules.careplan import care_plan_problems_in_file
from trygg.rules.overlays import OverlayError, apply_overlays, read_overlays
from trygg.store.registry import load_registry as load_from_db
from trygg.store.registry import save_registry
from trygg.tuning.cli import app

runner = CliRunner()

# Two districts, four teams; one resident in each team, each with a bed sensor.
REGISTRY = """
districts:
  - {id: stovner, name: Bydel Stovner}
  - {id: grorud, name: Bydel Grorud}
teams:
  - {id: stovner-nord, district: stovner}
  - {id: stovner-sor, district: stovner}
  - {id: grorud-sentrum, district: grorud}
  - {id: grorud-ost, district: grorud}
residents:
  - {id: r-1, team: stovner-nord}
  - {id: r-2, team: stovner-sor}
  - {id: r-3, team: grorud-sentrum}
  - id: r-4
    team: grorud-ost
    overrides:
      bed-exit-no-return: {wait: 25m}
devices:
  - {id: bed-1, resident: r-1, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-2, resident: r-2, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-3, resident: r-3, kind: bed, room: bedroom, heartbeat: 1h}
  - {id: bed-4, resident: r-4, kind: bed, room: bedroom, heartbeat: 1h}
"""

# Stovner waits 30 minutes for a return to bed (within 15m-45m, with a reason);
# Grorud keeps the standard's 20 minutes.
STOVNER = """\
- rule: bed-exit-no-return
  wait: 30m
  reason: >-
    Night visits to the toilet take 20-25 minutes for most of our residents
    (bed-sensor data, autumn 2026).
"""


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ------------------------------------------------------------------ registry --


def test_teams_belong_to_districts() -> None:
    reg = read_registry_text(REGISTRY, "reg.yaml")
    assert reg.district_ids() == ["stovner", "grorud"]
    assert reg.team_districts() == {
        "stovner-nord": "stovner",
        "stovner-sor": "stovner",
        "grorud-sentrum": "grorud",
        "grorud-ost": "grorud",
    }
    assert reg.resident_districts() == {
        "r-1": "stovner",
        "r-2": "stovner",
        "r-3": "grorud",
        "r-4": "grorud",
    }


def test_a_registry_without_districts_has_one_default_district() -> None:
    reg = read_registry_text("residents:\n  - {id: r-1, team: a}\n  - {id: r-2, team: b}\n")
    assert reg.district_ids() == [DEFAULT_DISTRICT]
    assert reg.team_districts() == {"a": DEFAULT_DISTRICT, "b": DEFAULT_DISTRICT}


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "{id: grorud-ost, district: grorud}",
            "{id: grorud-ost, district: alna}",
            "reg.yaml:9: team 'grorud-ost' is in unknown district 'alna'",
        ),
        (
            "{id: r-3, team: grorud-sentrum}",
            "{id: r-3, team: alna-x}",
            "reg.yaml:13: resident 'r-3' is of team 'alna-x', which is in no district",
        ),
        ("{id: grorud, name", "{id: stovner, name", "reg.yaml:4: district 'stovner' is listed"),
        ("{id: stovner-sor,", "{id: stovner-nord,", "reg.yaml:7: team 'stovner-nord' is listed"),
        ("{id: stovner, name", "{id: Stovner!, name", "reg.yaml:3: district 'Stovner!': id"),
    ],
)
def test_district_mistakes_are_refused_with_their_line(old: str, new: str, message: str) -> None:
    assert old in REGISTRY
    with pytest.raises(RegistryError) as err:
        read_registry_text(REGISTRY.replace(old, new, 1), "reg.yaml")
    assert message in str(err.value)


def test_districts_and_teams_are_stored_and_read_back(db: str) -> None:
    reg = read_registry_text(REGISTRY, "reg.yaml")
    with psycopg.connect(db) as conn:
        counts = save_registry(conn, reg)
        assert (counts.teams, counts.districts) == (4, 2)
        # a later file of one team's homes without districts keeps the team's district
        save_registry(conn, read_registry_text("residents:\n  - {id: r-9, team: grorud-ost}\n"))
        back = load_from_db(conn)
        rows = conn.execute("SELECT id, district FROM teams ORDER BY id").fetchall()
        names = dict(conn.execute("SELECT id, name FROM districts").fetchall())
    assert rows == [
        ("grorud-ost", "grorud"),
        ("grorud-sentrum", "grorud"),
        ("stovner-nord", "stovner"),
        ("stovner-sor", "stovner"),
    ]
    assert names == {"default": None, "stovner": "Bydel Stovner", "grorud": "Bydel Grorud"}
    assert back.resident_districts()["r-9"] == "grorud"
    assert back.resident_districts()["r-1"] == "stovner"


# ----------------------------------------------------------------- overlays --


def test_an_overlay_within_the_bounds_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, "districts/stovner.yaml", STOVNER)
    reg = write(tmp_path, "reg.yaml", REGISTRY)
    r = runner.invoke(
        app,
        ["check", "--rules", str(RULES), "--districts", str(tmp_path / "districts"),
         "--registry", str(reg)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "district overlays: 1 (stovner), 1 change within the standard's bounds" in r.stdout
    assert "warning" not in r.stderr


def test_an_overlay_outside_the_bounds_is_refused_with_file_line_and_bound(
    tmp_path: Path,
) -> None:
    bad = write(
        tmp_path,
        "districts/grorud.yaml",
        "- rule: inactivity\n  for: 3h\n  reason: fewer calls\n"
        "- rule: bed-exit-no-return\n  wait: 60m\n  reason: fewer calls\n",
    )
    r = runner.invoke(app, ["check", "--rules", str(RULES), "--districts", str(bad)])
    assert r.exit_code == 1
    assert "The district overlays were refused:" in r.stderr
    assert (
        f"{bad}:5: district 'grorud': rule 'bed-exit-no-return': wait: 1h is above the "
        "standard's bound 45m (15m-45m)"
    ) in r.stderr
    assert ":2:" not in r.stderr  # the change within its bounds is fine


@pytest.mark.parametrize(
    "text, message",
    [
        ("- rule: button\n  enabled: false\n  reason: x\n", ":2: district 'grorud': rule "
         "'button': parameter 'enabled' is not adjustable by a district (the standard marks: "
         "none)"),
        ("- rule: fall\n  guard: soon\n  reason: x\n", ":2: district 'grorud': rule 'fall': "
         "parameter 'guard': not a duration"),
        ("- rule: teleport\n  wait: 1m\n", ":1: district 'grorud': rule 'teleport': no such rule"),
        ("- rule: temperature-low\n  below: 12\n  reason: x\n", ":2: district 'grorud': rule "
         "'temperature-low': below: 12 is below the standard's bound 14 (14-18)"),
    ],
)  # fmt: skip
def test_overlay_mistakes(tmp_path: Path, text: str, message: str) -> None:
    bad = write(tmp_path, "grorud.yaml", text)
    with pytest.raises(OverlayError) as err:
        read_overlays(standard(), [bad])
    assert f"{bad}{message}" in str(err.value)


def test_a_change_without_a_reason_is_a_warning(tmp_path: Path) -> None:
    f = write(tmp_path, "grorud.yaml", "- rule: inactivity\n  for: 3h\n")
    r = runner.invoke(app, ["check", "--rules", str(RULES), "--districts", str(f)])
    assert r.exit_code == 0, r.output
    assert (
        f"warning: {f}:1: district 'grorud': rule 'inactivity': no reason given for the change"
    ) in r.stderr


def test_bounds_must_hold_the_standards_own_value(tmp_path: Path) -> None:
    site = write(
        tmp_path,
        "site.yaml",
        "- rule: bed-exit-no-return\n  adjustable: {wait: {min: 25m, max: 45m}}\n"
        "  override: {adjustable: replace}\n",
    )
    r = runner.invoke(app, ["check", "--rules", str(RULES), "--rules", str(site)])
    assert r.exit_code == 1
    assert f"{site}:2: rule 'bed-exit-no-return': adjustable: 'wait': the standard's own " in (
        r.stderr
    )


# --------------------------------------------------------------- care plans --


def test_a_care_plan_outside_the_bounds_needs_a_reason(tmp_path: Path) -> None:
    text = REGISTRY.replace("{wait: 25m}", "{wait: 60m}")
    reg = write(tmp_path, "reg.yaml", text)
    problems = care_plan_problems_in_file(standard(), load_registry(reg), reg)
    assert problems == [
        f"{reg}:17: resident 'r-4': rule 'bed-exit-no-return': parameter 'wait': 1h is above "
        "the standard's bound 45m (15m-45m); a care plan outside the standard's bounds needs "
        "a reason (add reason: ... to the rule's entry)"
    ]
    reg = write(
        tmp_path, "reg.yaml", text.replace("{wait: 60m}", "{wait: 60m, reason: slow walker}")
    )
    assert care_plan_problems_in_file(standard(), load_registry(reg), reg) == []


def test_layers_standard_then_overlay_then_care_plan(tmp_path: Path) -> None:
    write(tmp_path, "districts/stovner.yaml", STOVNER)
    write(tmp_path, "districts/grorud.yaml", "- rule: inactivity\n  for: 3h\n  reason: x\n")
    overlays = read_overlays(standard(), [tmp_path / "districts"])
    reg = apply_overlays(read_registry_text(REGISTRY), overlays)
    plans = {r.id: r.overrides for r in reg.residents}
    assert plans["r-1"] == plans["r-2"] == {"bed-exit-no-return": {"wait": "30m"}}
    assert plans["r-3"] == {"inactivity": {"for": "3h"}}
    assert plans["r-4"] == {"inactivity": {"for": "3h"}, "bed-exit-no-return": {"wait": "25m"}}


# ------------------------------------------------------------------ replay --


def _events(tmp: Path) -> Path:
    """Each resident out of bed at 01:00 and back at 01:27 (r-1 to r-4)."""
    lines = []
    for n in range(1, 5):
        lines.append({"device": f"bed-{n}", "id": f"v{n}", "type": "bed.vacant",
                      "time": "2026-03-10T01:00:00+01:00"})  # fmt: skip
        lines.append({"device": f"bed-{n}", "id": f"o{n}", "type": "bed.occupied",
                      "time": "2026-03-10T01:27:00+01:00"})  # fmt: skip
    lines.sort(key=lambda x: x["time"])
    p = tmp / "events.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def _replay(tmp: Path, *extra: str) -> list[dict[str, Any]]:
    reg = write(tmp, "reg.yaml", REGISTRY)
    args = ["replay", "--events", str(_events(tmp)), "--registry", str(reg)]
    args += ["--rules", str(RULES), "--until", "2026-03-10T03:00:00+01:00", *extra]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    alerts = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    return [a for a in alerts if a["rule"] == "bed-exit-no-return"]


def test_replay_uses_each_districts_value(tmp_path: Path) -> None:
    # Without overlays: 20 minutes for all but r-4 (care plan 25 minutes): all four
    # are paged, r-4 at 01:25.
    plain = {(a["resident"], a["at"]) for a in _replay(tmp_path)}
    assert plain == {
        ("r-1", "2026-03-10T01:20:00+01:00"),
        ("r-2", "2026-03-10T01:20:00+01:00"),
        ("r-3", "2026-03-10T01:20:00+01:00"),
        ("r-4", "2026-03-10T01:25:00+01:00"),
    }
    # Stovner waits 30 minutes: its residents came back at 01:27, nobody paged;
    # Grorud keeps 20 minutes, and r-4's care plan (25 minutes) is on top of it.
    d = write(tmp_path, "districts/stovner.yaml", STOVNER).parent
    layered = {(a["resident"], a["at"]) for a in _replay(tmp_path, "--districts", str(d))}
    assert layered == {
        ("r-3", "2026-03-10T01:20:00+01:00"),
        ("r-4", "2026-03-10T01:25:00+01:00"),
    }
    # a care plan on top of the overlay wins for its resident: r-4's 25 minutes
    # over a Grorud overlay of 40 minutes
    write(tmp_path, "districts/grorud.yaml", "- rule: bed-exit-no-return\n  wait: 40m\n"
          "  reason: x\n")  # fmt: skip
    both = {(a["resident"], a["at"]) for a in _replay(tmp_path, "--districts", str(d))}
    assert both == {("r-4", "2026-03-10T01:25:00+01:00")}
