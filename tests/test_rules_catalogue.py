"""The catalogue loader: the standard catalogue, lists/macros/overrides, and
refusals with file, line and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_rules_helpers import RULES, standard
from trygg.model import Severity
from trygg.registry import load_registry
from trygg.rules.careplan import care_plan_problems, care_plan_problems_in_file
from trygg.rules.catalogue import CatalogueError, load_catalogue

EXPECTED = {
    "fall": ("4.1", "red"),
    "button": ("4.13", "red"),
    "pullcord": ("4.14", "red"),
    "fire": ("4.11", "red"),
    "seizure": ("T.5", "red"),
    "water": ("4.17", "yellow"),
    "bed-exit-no-return": ("4.2", "yellow"),
    "left-home-at-night": ("4.21", "red"),
    "inactivity": ("4.9", "yellow"),
    "long-bathroom-stay": ("4.23", "yellow"),
    "dose-missed": ("3.3", "yellow"),
    "dispenser-fault": ("3.4", "yellow"),
    "device-offline": ("T.1", "yellow"),
    "battery-low": ("T.2", "green"),
    "temperature-high": ("T.3", "yellow"),
    "temperature-low": ("T.4", "yellow"),
    # Not in DESIGN's table: trygg's own technical alert for the late-event policy
    # ("such a device is flagged"), docs/rules.md.
    "device-clock": ("T.6", "green"),
    # Not in DESIGN's table: every alarm of SCAIP's device tables has a rule (issue 21).
    "heat": ("4.11", "red"),
    "carbon-monoxide": ("T.7", "red"),
    "gas": ("T.8", "red"),
    "wandering": ("4.21", "red"),
    "local-unit-alarm": ("T.9", "red"),
    "tracker-sos": ("4.13", "red"),
    "inactivity-alarm": ("4.9", "yellow"),
}


def test_standard_catalogue_matches_design() -> None:
    cat = standard()
    assert {s.rule: (s.code, s.severity.value) for s in cat.specs} == EXPECTED
    for s in cat.specs:
        assert s.description and s.reason and s.title
    assert cat.version.startswith("2026.1+")


def test_version_changes_with_content(tmp_path: Path) -> None:
    extra = tmp_path / "site.yaml"
    extra.write_text("- rule: water\n  enabled: false\n")
    a = load_catalogue([RULES])
    b = load_catalogue([RULES, extra])
    assert a.version != b.version
    assert b.compiled[b.position("water")] is None


def test_every_standard_rule_has_its_texts_in_bokmal() -> None:
    """The A3 page is in Bokmål by default: a rule of the standard without an
    ``nb:`` block would put English paragraphs on it."""
    cat = standard()
    missing = [s.rule for s in cat.specs if s.nb is None]
    assert missing == [], f"rules/standard.yaml: add an nb: block to {', '.join(missing)}"
    for s in cat.specs:
        description, reason = s.texts("nb")
        assert (description, reason) != (s.description, s.reason), s.rule
        assert s.texts("en") == (s.description, s.reason)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def refused(paths: list[Path]) -> str:
    with pytest.raises(CatalogueError) as info:
        load_catalogue(paths)
    return str(info.value)


def test_bad_duration_names_file_line_and_reason(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- rule: x
  kind: sequence
  code: "9.9"
  severity: yellow
  title: t
  description: d
  reason: r
  first: bed.vacant
  unless: bed.occupied
  wait: twenty minutes
""",
    )
    msg = refused([p])
    assert f"{p}:10:" in msg and "rule 'x'" in msg and "not a duration" in msg


def test_unknown_event_type_and_missing_field(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- rule: x
  kind: event
  code: "9.9"
  severity: purple
  title: t
  description: d
  reason: r
  when: bed.jumped
""",
    )
    msg = refused([p])
    assert f"{p}:4:" in msg and "severity" in msg


def test_unknown_type_in_match(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- rule: x
  kind: event
  code: "9.9"
  severity: red
  title: t
  description: d
  reason: r
  when: bed.jumped
""",
    )
    msg = refused([p])
    assert f"{p}:8:" in msg and "'bed.jumped' is neither an event type" in msg


def test_unknown_kind_and_unknown_field(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- rule: x
  kind: magic
  code: "1"
  severity: red
  title: t
  description: d
  reason: r
- rule: y
  kind: event
  code: "1"
  severity: red
  title: t
  description: d
  reason: r
  when: button.pressed
  colour: blue
""",
    )
    msg = refused([p])
    assert f"{p}:2:" in msg and "'kind' must be one of" in msg
    assert f"{p}:16:" in msg and "colour" in msg


def test_yaml_on_is_a_boolean_key(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.yaml", "- rule: x\n  kind: event\n  on: button.pressed\n")
    msg = refused([p])
    assert f"{p}:1:" in msg and "quote the key" in msg


def test_not_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.yaml", "- rule: x\n  kind: [event\n")
    msg = refused([p])
    assert f"{p}:" in msg and "not valid YAML" in msg


def test_redefinition_needs_override(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "site.yaml",
        """- rule: inactivity
  kind: absence
  code: "4.9"
  severity: red
  title: t
  description: d
  reason: r
  of: activity
  for: 2h
""",
    )
    msg = refused([RULES, p])
    assert f"{p}:1:" in msg and "already defined at" in msg and "override" in msg


def test_override_replace_and_append(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "site.yaml",
        """- rule: inactivity
  for: 6h
  severity: red
  override:
    for: replace
    severity: replace
- list: activity_events
  items: [dose.taken]
  override:
    items: append
- macro: night
  window: "21:00-08:00"
  override: {window: replace}
""",
    )
    cat = load_catalogue([RULES, p])
    spec = cat.spec("inactivity")
    assert spec.for_.total_seconds() == 6 * 3600  # type: ignore[attr-defined]
    assert spec.severity is Severity.RED
    assert "dose.taken" in cat.lists["activity_events"]
    rule = cat.compiled[cat.position("bed-exit-no-return")]
    assert rule is not None and rule.window.start == 21 * 3600  # type: ignore[attr-defined]


def test_override_field_not_listed(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "site.yaml",
        """- rule: inactivity
  for: 6h
  severity: red
  override:
    for: replace
""",
    )
    msg = refused([RULES, p])
    assert f"{p}:3:" in msg and "'severity' is not listed in override" in msg


def test_override_of_unknown_rule(tmp_path: Path) -> None:
    p = write(tmp_path, "site.yaml", "- rule: nope\n  wait: 5m\n  override: {wait: replace}\n")
    msg = refused([RULES, p])
    assert f"{p}:1:" in msg and "not defined in an earlier file" in msg


def test_macro_and_list_problems(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- list: things
  items: [motion.detected, teleport]
- macro: night
  window: "22:00-31:00"
""",
    )
    msg = refused([p])
    assert f"{p}:2:" in msg and "teleport" in msg
    assert f"{p}:4:" in msg and "not a time of day" in msg


def test_threshold_needs_one_side(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        """- rule: x
  kind: threshold
  code: "1"
  severity: red
  title: t
  description: d
  reason: r
  when: temperature
  above: 28
  below: 10
""",
    )
    assert "exactly one of 'above' or 'below'" in refused([p])


# ------------------------------------------------------------ care plans --


def test_care_plan_problems_name_resident_rule_parameter(tmp_path: Path) -> None:
    reg = write(
        tmp_path,
        "registry.yaml",
        """residents:
  - id: r-0001
    team: a
    overrides:
      bed-exit-no-return:
        wait: soon
      inactivity: {enabled: false, colour: red}
      teleport: {enabled: true}
      temperature-high: {below: 10}
devices: []
""",
    )
    cat = standard()
    problems = care_plan_problems_in_file(cat, load_registry(reg), reg)
    text = "\n".join(problems)
    assert f"{reg}:6: resident 'r-0001': rule 'bed-exit-no-return': parameter 'wait'" in text
    assert "not a duration" in text
    assert f"{reg}:7:" in text and "unknown parameter 'colour'" in text
    assert "unknown rule 'teleport'" in text
    assert "this rule uses 'above'" in text
    assert len(care_plan_problems(cat, load_registry(reg))) == 4


def test_good_care_plan_accepted(tmp_path: Path) -> None:
    reg = write(
        tmp_path,
        "registry.yaml",
        """residents:
  - id: r-0001
    team: a
    overrides:
      bed-exit-no-return: {wait: 30m, window: "21:00-08:00"}
      inactivity: {for: 3h, window: {from: "08:00", to: "20:00", days: [mon, tue, wed]}}
      temperature-high: {above: 26, clear: 25, for: 5m}
      device-offline: {heartbeats: 4}
devices: []
""",
    )
    assert care_plan_problems_in_file(standard(), load_registry(reg), reg) == []


SITE_RULE = """- rule: night-call
  kind: event
  code: "4.13"
  severity: red
  title: Night call
  description: The resident called at night.
  reason: Our own rule.
  when: button.pressed
"""


def test_a_site_rule_without_bokmal_texts_falls_back_to_english(tmp_path: Path) -> None:
    cat = load_catalogue([RULES, write(tmp_path, "site.yaml", SITE_RULE)])
    spec = cat.spec("night-call")
    assert spec.nb is None and spec.translated("nb") is None
    assert spec.texts("nb") == ("The resident called at night.", "Our own rule.")


def test_a_site_may_replace_the_bokmal_texts(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "site.yaml",
        """- rule: fall
  nb:
    description: Fallsensoren har meldt fall. Ring Bydel Nord sin nattpatrulje.
    reason: Avtalt med bydelen.
  override: {nb: replace}
""",
    )
    spec = load_catalogue([RULES, p]).spec("fall")
    assert spec.texts("nb") == (
        "Fallsensoren har meldt fall. Ring Bydel Nord sin nattpatrulje.",
        "Avtalt med bydelen.",
    )
    assert spec.texts("en") == standard().spec("fall").texts("en")


def test_a_bad_bokmal_block_is_refused_with_file_and_line(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "bad.yaml",
        SITE_RULE
        + """  nb:
    description: Beboeren ringte om natten.
    grunn: Vår egen regel.
- rule: day-call
  kind: event
  code: "4.13"
  severity: red
  title: Day call
  description: The resident called by day.
  reason: Our own rule.
  nb: Beboeren ringte.
  when: button.pressed
- rule: evening-call
  kind: event
  code: "4.13"
  severity: red
  title: Evening call
  description: The resident called in the evening.
  reason: Our own rule.
  nb:
    description: "  "
    reason: Vår egen regel.
  when: button.pressed
""",
    )
    lines = refused([p]).splitlines()
    assert f"{p}:9: rule 'night-call': nb.reason: is missing (required)" in lines
    assert f"{p}:11: rule 'night-call': nb.grunn: unknown field" in lines
    assert any(x.startswith(f"{p}:19: rule 'day-call': nb: must be a mapping") for x in lines)
    assert f"{p}:29: rule 'evening-call': nb.description: must not be empty" in lines


def test_a_bad_bokmal_block_in_an_override_names_the_overriding_file(tmp_path: Path) -> None:
    """A replaced block is checked as written in the later file: its problems are
    reported at that file's lines, not at the standard's."""
    p = write(
        tmp_path,
        "site.yaml",
        """- rule: fall
  nb:
    description: Fallsensoren har meldt fall.
  override: {nb: replace}
""",
    )
    assert refused([RULES, p]) == f"{p}:2: rule 'fall': nb.reason: is missing (required)"
