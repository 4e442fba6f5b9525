"""`trygg report deviations` (issue 19, item 3): the districts' deviations from the
city standard on a simulated month for two districts, rendered in Chromium."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO, new_database, trygg_cli
from tests.test_a3 import Handled, fill_month
from tests.test_report import ARGS, CHROMIUM
from trygg.devenv import PrivatePostgres
from trygg.registry import read_registry_text
from trygg.store.migrate import migrate
from trygg.store.registry import load_registry, save_registry

# The simulator's four teams in two districts.
DISTRICTS = """
districts:
  - {id: stovner, name: Bydel Stovner}
  - {id: grorud, name: Bydel Grorud}
teams:
  - {id: stovner-nord, district: stovner}
  - {id: sagene-ost, district: stovner}
  - {id: grorud-sentrum, district: grorud}
  - {id: nordstrand-syd, district: grorud}
"""
STOVNER = """\
- rule: bed-exit-no-return
  wait: 30m
  reason: Night visits to the toilet take 20-25 minutes for most of our residents.
- rule: temperature-low
  below: 17
  reason: Older houses, cold floors.
"""
# The one unexplained deviation: Grorud counts 3 h of inactivity and says not why.
GRORUD = """\
- rule: inactivity
  for: 3h
- rule: temperature-low
  below: 17
  reason: Same as Stovner (shared service designer, 2026-02).
"""
CARE_PLAN_REASON = "Walks slowly with a frame; agreed with her GP 2026-02-20."


@pytest.fixture(scope="module")
def month(pg_server: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory) -> Any:
    url = new_database(pg_server)
    migrate(url)
    handled: Handled = fill_month(url)
    with psycopg.connect(url) as conn:
        save_registry(conn, read_registry_text(DISTRICTS))
        reg = load_registry(conn)
        # one resident of each district with a care plan on bed exits: Stovner's
        # within the bounds, Grorud's outside them, with a reason
        st = next(r for r in reg.residents if r.team == "stovner-nord")
        gr = next(r for r in reg.residents if r.team == "grorud-sentrum")
        conn.execute(
            "UPDATE residents SET overrides = %s WHERE id = %s",
            [json.dumps({"bed-exit-no-return": {"wait": "40m"}}), st.id],
        )
        conn.execute(
            "UPDATE residents SET overrides = %s WHERE id = %s",
            [
                json.dumps({"bed-exit-no-return": {"wait": "60m", "reason": CARE_PLAN_REASON}}),
                gr.id,
            ],
        )
        # per district and rule, computed here independently of trygg.store.kpi
        alerts = {
            (d, r): n
            for d, r, n in conn.execute(
                "SELECT t.district, a.rule, count(*) FROM alerts a JOIN residents x"
                " ON x.id = a.resident JOIN teams t ON t.id = x.team"
                " WHERE a.raised_at >= '2026-03-01T00:00+01:00'"
                " AND a.raised_at < '2026-04-01T00:00+02:00' AND NOT a.shadow"
                " GROUP BY 1, 2"
            ).fetchall()
        }
    d = tmp_path_factory.mktemp("districts")
    (d / "stovner.yaml").write_text(STOVNER)
    (d / "grorud.yaml").write_text(GRORUD)
    return url, d, alerts, handled, gr.id


def run(url: str, d: Path, *args: str) -> Any:
    env = {"TRYGG_DATABASE_URL": url, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    base = ["report", "deviations", "--from", "2026-03-01", "--to", "2026-04-01"]
    return trygg_cli(*base, "--districts", str(d), *args, env=env)


def test_the_json_figures(month: Any) -> None:
    url, d, alerts, handled, outside_resident = month
    out = run(url, d, "--format", "json")
    doc = json.loads(out.stdout)
    assert doc["districts"] == ["grorud", "stovner"]  # as stored, by id
    rules = {r["rule"]: r for r in doc["rules"]}
    assert len(rules) == 24
    bed = rules["bed-exit-no-return"]
    assert bed["city"] == {"wait": "20m", "window": "night"}
    assert bed["adjustable"] == {"wait": "15m-45m", "window": "any value"}
    st, gr = bed["districts"]["stovner"], bed["districts"]["grorud"]
    assert st["changed"] == {"wait": "30m"} and st["reason"].startswith("Night visits")
    assert gr["changed"] == {} and gr["values"]["wait"] == "20m"
    assert (st["care_plans"], gr["care_plans"]) == (1, 1)
    assert st["care_plans_outside_bounds"] == []
    assert gr["care_plans_outside_bounds"] == [
        {
            "resident": outside_resident,
            "parameter": "wait",
            "value": "60m",
            "message": "1h is above the standard's bound 45m (15m-45m)",
            "reason": CARE_PLAN_REASON,
        }
    ]
    # alert volume per district and rule, as counted here in SQL
    for (dist, rule), n in alerts.items():
        assert rules[rule]["districts"][dist]["alerts"] == n, (dist, rule)
    assert sum(alerts.values()) == handled.alerts
    # the one marked deviation: Grorud's inactivity, no reason
    assert doc["marked"] == [
        {
            "rule": "inactivity",
            "district": "grorud",
            "unexplained": True,
            "outlier": [],
            "changed": {"for": "3h"},
        }
    ]
    assert "1 marked; inactivity in grorud: no reason" in out.stderr
    # one district only
    one = json.loads(run(url, d, "--format", "json", "--district", "stovner").stdout)
    assert one["districts"] == ["stovner"] and one["marked"] == []


def test_csv_and_the_access_log(month: Any) -> None:
    url, d, _, _, outside_resident = month
    rows = list(csv.DictReader(io.StringIO(run(url, d, "--format", "csv").stdout)))
    assert len(rows) == 24 * 2
    inact = {r["district"]: r for r in rows if r["rule"] == "inactivity"}
    assert inact["grorud"]["unexplained"] == "True" and inact["grorud"]["changed"] == "for=3h"
    assert inact["stovner"]["unexplained"] == "False"
    with psycopg.connect(url) as conn:
        detail = conn.execute(
            "SELECT detail FROM access_log WHERE action = 'report_deviations' ORDER BY id DESC"
            " LIMIT 1"
        ).fetchone()
    assert detail is not None and detail[0]["residents"] == [outside_resident]


def test_an_outlier_is_marked(month: Any, tmp_path: Path) -> None:
    url = month[0]
    (tmp_path / "stovner.yaml").write_text(STOVNER.replace("wait: 30m", "wait: 45m"))
    (tmp_path / "grorud.yaml").write_text(GRORUD)
    doc = json.loads(run(url, tmp_path, "--format", "json").stdout)
    marked = {(m["rule"], m["district"]): m for m in doc["marked"]}
    # 45 min is 25 min from the median of 20 (city) and 20 (Grorud): more than half of 30
    assert marked[("bed-exit-no-return", "stovner")]["outlier"] == ["wait"]


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_the_page_in_chromium_names_the_unexplained_deviation(month: Any, tmp_path: Path) -> None:
    url, d, *_ = month
    page_file = tmp_path / "deviations.html"
    out = run(url, d, "--out", str(page_file))
    assert f"wrote {page_file}" in out.stderr
    from playwright.sync_api import sync_playwright

    artefacts = REPO / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 760, "height": 1000})
            page.goto(page_file.as_uri())
            page.emulate_media(media="print")
            marked = page.eval_on_selector_all(
                "section.summary tr.marked",
                "rows => rows.map(r => [r.dataset.rule, r.dataset.district, r.innerText])",
            )
            spill = page.evaluate(
                """() => [...document.querySelectorAll('table, td, th')]
                     .filter(c => c.scrollWidth > c.clientWidth + 1)
                     .map(c => c.textContent.slice(0, 40))"""
            )
            title = page.title()
            page.screenshot(path=str(artefacts / "deviations.png"), full_page=True)
        finally:
            browser.close()
    assert title.startswith("Avvik fra byens standard")
    assert len(marked) == 1, marked
    rule, district, text = marked[0]
    assert (rule, district) == ("inactivity", "grorud")
    assert "Bydel Grorud" in text and "uten begrunnelse" in text and "4h → 3h" in text
    assert f"{d / 'grorud.yaml'}:1" in text
    assert spill == []
