"""Versions, shadow mode and back-test of one district's overlay (issue 19, item 2;
docs/rules.md, "Versions per district").

Stovner proposes to wait 3 s instead of its 8 s (the catalogue of
tests/test_district_overlays_live.py: the standard's bed-exit wait in seconds).
It runs the candidate in shadow in a live ``trygg run``: only Stovner's residents
get shadow alerts, at 3 s, while the live alerts stay at 8 s for Stovner and the
standard's 2 s for Grorud. It back-tests the candidate on the stored events of
its own residents, then promotes it: the history says who, when and why, and the
running trygg alerts by 3 s without a restart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from tests.test_district_overlays_live import REGISTRY, SITE, STOVNER, rules_dir

CANDIDATE = STOVNER.replace("8s", "3s").replace(
    "take longer", "take 2-3 minutes, and we would rather look in early"
)


def _cli(db: str, rules: Path, *args: str) -> Any:
    return trygg_cli(*args, "--database-url", db, env={"TRYGG_RULES_DIR": str(rules)})


def test_a_district_shadows_backtests_and_promotes_its_overlay(
    tmp_path: Path, broker: Any, db: str
) -> None:
    rules = rules_dir(tmp_path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    cand = tmp_path / "stovner-candidate.yaml"
    cand.write_text(CANDIDATE)
    env = {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": db,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "trygg-district-shadow",
        "TRYGG_RULES_DIR": str(rules),
        "TRYGG_REGISTRY_RELOAD_SECONDS": "0.5",
    }
    with WebhookReceiver() as hook, TryggProcess({**env, "TRYGG_WEBHOOK_URL": hook.url}) as t:
        t.wait_connected()
        out = _cli(db, rules, "rules", "shadow", "--district", "stovner", "--candidate",
                   str(cand), "--reason", "fewer falls found late", "--author", "kari")  # fmt: skip
        assert "runs in shadow for stovner's 2 residents" in out.stdout
        wait_until(lambda: "district shadow started" in t.output(), timeout=15)
        t0 = datetime.now(UTC).replace(microsecond=0)

        def send(script: list[tuple[str, str, float]]) -> None:
            publish(
                broker.port,
                [
                    (
                        f"trygg/{SITE}/devices/{d}/events",
                        event_json(
                            f"{d}-{t0:%H%M%S}-{s}", typ, (t0 + timedelta(seconds=s)).isoformat()
                        ),
                    )
                    for d, typ, s in script
                ],
            )

        def alerts(shadow: bool) -> set[tuple[str, float]]:
            with psycopg.connect(db) as c:
                rows = c.execute(
                    "SELECT resident, (snapshot ->> 'signal_at')::timestamptz FROM alerts"
                    " WHERE rule = 'bed-exit-no-return' AND shadow = %s AND raised_at >= %s",
                    [shadow, t0],
                ).fetchall()
            return {(r, (at - t0).total_seconds()) for r, at in rows}

        # everyone up at 0 s; r-2 back at 5 s
        send([(f"bed-{n}", "bed.vacant", 0) for n in range(1, 5)])
        wait_until(lambda: datetime.now(UTC) >= t0 + timedelta(seconds=5), timeout=10)
        send([("bed-2", "bed.occupied", 5)])
        wait_until(lambda: len(alerts(False)) >= 3 and len(alerts(True)) >= 2, timeout=30)
        # Live: Stovner's 8 s, the standard's 2 s for r-3, r-4's care plan of 4 s.
        assert alerts(False) == {("r-1", 8.0), ("r-3", 2.0), ("r-4", 4.0)}
        # Shadow: the candidate's 3 s, for Stovner's residents only.
        assert alerts(True) == {("r-1", 3.0), ("r-2", 3.0)}
        # shadow alerts are never routed: the webhook had the live ones only
        paged = {a["resident"] for _, _, a in hook.received if a["rule"] == "bed-exit-no-return"}
        assert paged == {"r-1", "r-3", "r-4"}

        # Back-test the candidate on the stored events: Stovner's residents only.
        def stored() -> bool:
            with psycopg.connect(db) as c:
                row = c.execute("SELECT count(*) FROM events WHERE time >= %s", [t0]).fetchone()
            return row is not None and row[0] >= 5

        wait_until(stored, timeout=30)
        frm = (t0 - timedelta(minutes=1)).isoformat()
        to = (t0 + timedelta(minutes=1)).isoformat()
        bt = _cli(db, rules, "rules", "backtest", "--district", "stovner", "--candidate",
                  str(cand), "--from", frm, "--to", to, "--format", "json",
                  "--warmup", "1m", "--match-window", "1m")  # fmt: skip
        doc = json.loads(bt.stdout)
        residents = {r["resident"]: r for r in doc["residents"]}
        assert set(residents) <= {"r-1", "r-2"}
        assert residents["r-2"]["added"] == 1  # paged at 3 s, not at 8 s
        assert residents["r-1"]["shifted"] == 1  # paged 5 s earlier
        bed = next(r for r in doc["rules"] if r["rule"] == "bed-exit-no-return")
        assert (bed["current"], bed["candidate"]) == (1, 2)
        assert doc["catalogues"]["candidate"].startswith("overlay-stovner+")
        # Grorud's residents are not evaluated with Stovner's candidate
        grorud = _cli(db, rules, "rules", "backtest", "--district", "grorud", "--candidate",
                      str(cand), "--from", frm, "--to", to, "--format", "json",
                      "--warmup", "1m", "--match-window", "1m")  # fmt: skip
        gdoc = json.loads(grorud.stdout)
        assert {r["resident"] for r in gdoc["residents"]} <= {"r-3", "r-4"}

        # Promote: recorded, and the running trygg alerts by 3 s for Stovner.
        _cli(db, rules, "rules", "promote", "--district", "stovner", "--reason",
             "two weeks in shadow: no late finds", "--author", "per")  # fmt: skip
        wait_until(lambda: "district shadow stopped" in t.output(), timeout=15)
        wait_until(lambda: t.output().count("district overlays in force") >= 2, timeout=15)
        t0 = datetime.now(UTC).replace(microsecond=0)
        send([("bed-1", "bed.occupied", 0), ("bed-3", "bed.occupied", 0)])
        wait_until(lambda: datetime.now(UTC) >= t0 + timedelta(seconds=1), timeout=10)
        send([("bed-1", "bed.vacant", 1), ("bed-3", "bed.vacant", 1)])
        wait_until(lambda: len(alerts(False)) >= 2, timeout=30)
        assert alerts(False) == {("r-1", 4.0), ("r-3", 3.0)}
        assert alerts(True) == set()

    hist = _cli(db, rules, "rules", "history", "--district", "stovner").stdout
    lines = [ln for ln in hist.splitlines() if "overlay-stovner+" in ln]
    assert len(lines) == 2
    assert "promoted" in lines[0] and "per" in lines[0] and "no late finds" in lines[0]
    assert "shadow_started" in lines[1] and "kari" in lines[1] and "fewer falls" in lines[1]
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT h.action, h.author, h.district, v.status FROM catalogue_history h"
            " JOIN catalogue_versions v USING (version) WHERE h.kind = 'overlay' ORDER BY h.id"
        ).fetchall()
    assert rows == [
        ("shadow_started", "kari", "stovner", "active"),
        ("promoted", "per", "stovner", "active"),
    ]


def test_overlay_versions_in_the_store(db: str) -> None:
    """publish / shadow / stop / promote per district, beside the catalogue's own."""
    from trygg.store import versions

    with psycopg.connect(db, autocommit=True) as c:
        v1 = versions.publish_overlay(c, "stovner", STOVNER, author="kari", reason="start")
        assert v1 is not None and v1.startswith("overlay-stovner+")
        assert versions.publish_overlay(c, "stovner", STOVNER, author="kari", reason="x") is None
        v2 = versions.start_overlay_shadow(c, "stovner", CANDIDATE, author="kari", reason="try")
        # another district may shadow its own at the same time; a catalogue may not
        g = versions.start_overlay_shadow(c, "grorud", STOVNER, author="ola", reason="try too")
        with pytest.raises(versions.VersionError, match="overlay is in shadow"):
            versions.start_shadow(c, "2026.9+abc", [("a.yaml", "[]")], author="x", reason="y")
        with pytest.raises(versions.VersionError, match="in shadow for stovner already"):
            versions.start_overlay_shadow(c, "stovner", "- rule: x\n", author="k", reason="r")
        assert versions.overlays_in(c, "shadow") == {
            "grorud": (g, STOVNER),
            "stovner": (v2, CANDIDATE),
        }
        assert versions.stop_overlay_shadow(c, "grorud", author="ola", reason="no") == g
        assert versions.promote_overlay(c, "stovner", author="per", reason="ok") == (v2, v1)
        assert versions.overlays_in(c, "active") == {"stovner": (v2, CANDIDATE)}
        # the catalogue's versions are untouched by it
        assert versions.current(c) == {}
        # content stays immutable, the district included
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            c.execute("UPDATE catalogue_versions SET district = 'grorud' WHERE version = %s", [v2])
        actions = [(h.action, d) for h, d in versions.overlay_history(c)]
    assert actions == [
        ("promoted", "stovner"),
        ("shadow_stopped", "grorud"),
        ("shadow_started", "grorud"),
        ("shadow_started", "stovner"),
        ("published", "stovner"),
    ]


def test_a_candidate_outside_the_bounds_is_refused_with_file_and_line(
    tmp_path: Path, db: str
) -> None:
    rules = rules_dir(tmp_path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    cand = tmp_path / "too-long.yaml"
    cand.write_text(STOVNER.replace("8s", "60s"))
    for cmd in (["shadow", "--reason", "x"], ["publish", "--reason", "x"]):
        r = trygg_cli("rules", *cmd, "--district", "stovner", "--candidate", str(cand),
                      "--database-url", db, env={"TRYGG_RULES_DIR": str(rules)},
                      check=False)  # fmt: skip
        assert r.returncode == 1
        assert f"{cand}:2:" in r.stderr and "30s" in r.stderr
    r = trygg_cli("rules", "shadow", "--district", "alna", "--candidate", str(cand),
                  "--reason", "x", "--database-url", db, env={"TRYGG_RULES_DIR": str(rules)},
                  check=False)  # fmt: skip
    assert r.returncode == 2 and "no district 'alna'" in r.stderr


def test_the_deviation_report_shows_a_districts_published_overlay(tmp_path: Path, db: str) -> None:
    """What runs is what the report shows: Stovner's stored active version (12 s)
    in place of its file beside the rules (8 s)."""
    rules = rules_dir(tmp_path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(REGISTRY)
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    cand = tmp_path / "stovner-12s.yaml"
    cand.write_text(STOVNER.replace("8s", "12s"))
    env = {"TRYGG_RULES_DIR": str(rules), "TRYGG_DATABASE_URL": db}
    report = ["report", "deviations", "--from", "2026-03-01", "--to", "2026-04-01"]

    def stovner() -> dict[str, Any]:
        doc = json.loads(trygg_cli(*report, "--format", "json", env=env).stdout)
        bed = next(r for r in doc["rules"] if r["rule"] == "bed-exit-no-return")
        return dict(bed["districts"]["stovner"])

    assert stovner()["changed"] == {"wait": "8s"}
    trygg_cli("rules", "publish", "--district", "stovner", "--candidate", str(cand),
              "--reason", "agreed in the district's meeting", env=env)  # fmt: skip
    st = stovner()
    assert st["changed"] == {"wait": "12s"}
    assert st["where"].startswith("overlay-stovner+") and st["where"].endswith("/stovner.yaml:1")
