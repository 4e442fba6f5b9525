"""Catalogue and care-plan versions: immutable content, history and diff on the
command line, care-plan changes recorded, the shadow comparison."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.conftest import REPO, trygg_cli
from trygg.rules.catalogue import load_catalogue
from trygg.tuning.versions import (
    catalogue_content,
    catalogue_of,
    compare,
    false_alarms_by_rule,
    rule_changes,
    unified_diff,
)


def _rules(tmp_path: Path, name: str, site: str | None = None) -> Path:
    d = tmp_path / name
    d.mkdir()
    shutil.copy(REPO / "rules" / "standard.yaml", d / "standard.yaml")
    if site is not None:
        (d / "z-site.yaml").write_text(site)
    return d


LONGER_BED_WAIT = """
- rule: bed-exit-no-return
  wait: 30m
  override: {wait: replace}
"""


def _cli(db: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    return trygg_cli("rules", *args, env={"TRYGG_DATABASE_URL": db}, check=check)


def test_a_stored_version_rebuilds_the_same_catalogue(tmp_path: Path) -> None:
    d = _rules(tmp_path, "a", LONGER_BED_WAIT)
    cat, files = catalogue_content([d])
    assert [n for n, _ in files] == ["standard.yaml", "z-site.yaml"]
    assert cat.version == load_catalogue([d]).version
    assert catalogue_of(files, cat.version).version == cat.version
    base = load_catalogue([REPO / "rules"])
    ch = rule_changes(base, cat)
    assert ch.added == [] and ch.removed == []
    assert ch.changed == {"bed-exit-no-return": [("wait", "PT20M", "PT30M")]}
    diff = unified_diff(
        [("standard.yaml", "a\n")], [("standard.yaml", "b\n"), ("x.yaml", "c\n")], "v1", "v2"
    )
    assert "--- v1/standard.yaml\n+++ v2/standard.yaml\n" in diff
    assert "-a\n+b\n" in diff and "+++ v2/x.yaml" in diff


def test_versions_are_immutable_and_a_change_is_a_new_version(db: str, tmp_path: Path) -> None:
    v1 = load_catalogue([REPO / "rules"]).version
    out = _cli(
        db, "publish", "--rules", str(REPO / "rules"), "--reason", "first", "--author", "ann"
    )
    assert f"published catalogue {v1} (was none)" in out.stdout
    again = _cli(db, "publish", "--rules", str(REPO / "rules"), "--reason", "x", "--author", "ann")
    assert "is the active version already" in again.stdout

    with psycopg.connect(db, autocommit=True) as c:
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            c.execute("UPDATE catalogue_versions SET files = '[]'::jsonb WHERE version = %s", [v1])
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            c.execute("UPDATE catalogue_versions SET reason = 'other' WHERE version = %s", [v1])
        with pytest.raises(psycopg.errors.RaiseException, match="DELETE refused"):
            c.execute("DELETE FROM catalogue_versions WHERE version = %s", [v1])
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            c.execute("UPDATE catalogue_history SET author = 'mallory'")
        with pytest.raises(psycopg.errors.UniqueViolation):  # one active version per kind
            c.execute(
                "INSERT INTO catalogue_versions (version, kind, files, status, author, reason)"
                " VALUES ('x', 'catalogue', '[]', 'active', 'me', 'why')"
            )

    # Changing the catalogue makes a new version; the first one is kept, retired.
    d = _rules(tmp_path, "b", LONGER_BED_WAIT)
    v2 = load_catalogue([d]).version
    out = _cli(db, "publish", "--rules", str(d), "--reason", "more time at night", "--author", "bo")
    assert f"published catalogue {v2} (was {v1})" in out.stdout
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT version, status, author, reason, parent, jsonb_array_length(files)"
            " FROM catalogue_versions ORDER BY created_at"
        ).fetchall()
    assert rows == [
        (v1, "retired", "ann", "first", None, 1),
        (v2, "active", "bo", "more time at night", v1, 2),
    ]

    hist = _cli(db, "history").stdout.splitlines()
    assert hist[0].split() == ["when", "version", "kind", "change", "status", "now", "who", "why"]
    assert v2 in hist[1] and "published (was " + v1 + ")" in hist[1]
    assert "bo" in hist[1] and "more time at night" in hist[1]
    assert v1 in hist[2] and "retired" in hist[2] and "ann" in hist[2]
    # local time with its offset, as every report gives it (a DST night is otherwise ambiguous)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d  ", hist[1]), hist[1]

    diff = _cli(db, "diff", v1[:10], "active").stdout
    assert diff.startswith(f"catalogue {v1} -> {v2}\n")
    assert '~ rule bed-exit-no-return: wait: "PT20M" -> "PT30M"' in diff
    assert f"+++ {v2}/z-site.yaml" in diff and "+  wait: 30m" in diff
    bad = _cli(db, "diff", "nope", v1, check=False)
    assert bad.returncode == 1 and "no version 'nope'" in bad.stderr

    # Rolling back is publishing the old version again: the same row, active again.
    _cli(db, "publish", "--rules", str(REPO / "rules"), "--reason", "roll back", "--author", "cy")
    with psycopg.connect(db) as c:
        assert c.execute(
            "SELECT version FROM catalogue_versions WHERE status = 'active'"
        ).fetchall() == [(v1,)]
        assert c.execute("SELECT count(*) FROM catalogue_versions").fetchone() == (2,)


def test_care_plan_changes_are_versions(db: str, tmp_path: Path) -> None:
    def load(plans: dict[str, dict[str, object]], reason: str) -> None:
        doc = {
            "residents": [
                {"id": r, "team": "a", "overrides": plans.get(r, {})} for r in ("r-1", "r-2")
            ],
            "devices": [{"id": "bed-1", "resident": "r-1", "kind": "bed"}],
        }
        f = tmp_path / "registry.yaml"
        f.write_text(yaml.safe_dump(doc))
        trygg_cli(
            "registry",
            "load",
            str(f),
            "--database-url",
            db,
            "--author",
            "nurse-lead",
            "--reason",
            reason,
        )

    load({}, "no plans yet")
    load({"r-1": {"bed-exit-no-return": {"wait": "30m"}}}, "r-1 is slow at night")
    load({"r-1": {"bed-exit-no-return": {"wait": "30m"}}}, "nothing changed")
    load(
        {"r-1": {"bed-exit-no-return": {"wait": "40m"}}, "r-2": {"inactivity": {"enabled": False}}},
        "review",
    )
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT version, status, author, reason FROM catalogue_versions"
            " WHERE kind = 'care_plans' ORDER BY created_at"
        ).fetchall()
    assert [(s, a, r) for _, s, a, r in rows] == [
        ("retired", "nurse-lead", "r-1 is slow at night"),
        ("active", "nurse-lead", "review"),
    ]
    hist = _cli(db, "history", "--kind", "care_plans").stdout
    assert "care_plans_changed" in hist and "review" in hist
    diff = _cli(db, "diff", rows[0][0], rows[1][0]).stdout
    assert "+ resident r-2" in diff
    assert '~ resident r-1: bed-exit-no-return: {"wait": "30m"} -> {"wait": "40m"}' in diff
    assert "-    wait: 30m\n+    wait: 40m" in diff


def test_shadow_commands_refuse_what_makes_no_sense(db: str, tmp_path: Path) -> None:
    no = _cli(db, "promote", check=False)
    assert no.returncode == 1 and "no catalogue is in shadow" in no.stderr
    _cli(db, "publish", "--rules", str(REPO / "rules"), "--reason", "first")
    same = _cli(db, "shadow", "--candidate", str(REPO / "rules"), "--reason", "x", check=False)
    assert same.returncode == 1 and "is the active catalogue already" in same.stderr
    d = _rules(tmp_path, "c", LONGER_BED_WAIT)
    assert "runs in shadow" in _cli(db, "shadow", "--candidate", str(d), "--reason", "try").stdout
    e = _rules(tmp_path, "e", LONGER_BED_WAIT.replace("30m", "25m"))
    two = _cli(db, "shadow", "--candidate", str(e), "--reason", "try", check=False)
    assert two.returncode == 1 and "in shadow already: promote it or stop it first" in two.stderr
    assert "stopped" in _cli(db, "shadow", "--stop", "--reason", "wrong idea").stdout
    assert "runs in shadow" in _cli(db, "shadow", "--candidate", str(e), "--reason", "b").stdout
    # A candidate the stored care plans do not fit is refused before it is stored.
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        yaml.safe_dump(
            {
                "residents": [{"id": "r-1", "team": "a", "overrides": {"water": {"guard": "1m"}}}],
                "devices": [],
            }
        )
    )
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    f = _rules(tmp_path, "f")
    (f / "standard.yaml").write_text(
        (f / "standard.yaml").read_text().replace("- rule: water\n", "- rule: leak\n")
    )
    refused = _cli(db, "publish", "--rules", str(f), "--reason", "x", check=False)
    assert refused.returncode == 1 and "care plans do not fit" in refused.stderr


@dataclass
class A:
    rule: str
    resident: str
    device: str | None
    raised_at: datetime
    fires: int = 1
    outcome: str | None = None


T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_the_comparison_pairs_alerts_and_counts_false_alarms() -> None:
    m = timedelta(minutes=1)
    active = [
        A("bed-exit-no-return", "r-1", None, T0, outcome="false_alarm"),
        A("bed-exit-no-return", "r-2", None, T0, outcome="helped"),
        A("bed-exit-no-return", "r-3", None, T0, outcome="no_help_needed"),
        A("fall", "r-1", None, T0, fires=3, outcome="helped"),
    ]
    shadow = [
        A("bed-exit-no-return", "r-2", None, T0 + 10 * m),  # the same alert, 10 min later
        A("fall", "r-1", None, T0 + 5 * m),
        A("water", "r-1", None, T0),  # only the candidate
        A("fall", "r-1", None, T0 + 2 * 60 * m),  # too late to be the same
    ]
    rows = {r.rule: r.to_dict() for r in compare(active, shadow, 30 * m)}
    assert rows["bed-exit-no-return"] == {
        "rule": "bed-exit-no-return",
        "active_alerts": 3,
        "active_fires": 3,
        "active_false": 2,
        "active_helped": 1,
        "shadow_alerts": 1,
        "shadow_fires": 1,
        "both": 1,
        "only_active": 2,
        "only_shadow": 0,
        "false_avoided": 2,
        "helped_missed": 0,
    }
    assert (rows["fall"]["active_fires"], rows["fall"]["both"], rows["fall"]["only_shadow"]) == (
        3,
        1,
        1,
    )
    assert rows["water"]["only_shadow"] == 1 and rows["water"]["active_alerts"] == 0
    assert false_alarms_by_rule(active) == {"bed-exit-no-return": (3, 2), "fall": (1, 0)}


def test_shadow_report_json_without_a_shadow_run(db: str) -> None:
    out = _cli(db, "shadow-report", check=False)
    assert out.returncode == 1 and "give --from" in out.stderr
    doc = json.loads(
        _cli(db, "shadow-report", "--from", "2026-01-01T00:00+01:00", "--format", "json").stdout
    )
    assert doc["rules"] == [] and doc["totals"]["shadow_alerts"] == 0
