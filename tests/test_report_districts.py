"""`trygg report --per district` (issue 19, item 5): a simulated month for two
districts; each district's figures against figures computed here from the
alerts and their lifecycle records in Python (not trygg.store.kpi's SQL), and
the district named in every report (JSON, CSV, HTML)."""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from typing import Any

import psycopg
import pytest

from tests.conftest import new_database, trygg_cli
from tests.test_a3 import fill_month
from tests.test_deviations import DISTRICTS
from trygg.devenv import PrivatePostgres
from trygg.registry import read_registry_text
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry

PERIOD = ("--from", "2026-03-01", "--to", "2026-04-01")


@pytest.fixture(scope="module")
def month(pg_server: PrivatePostgres) -> str:
    url = new_database(pg_server)
    migrate(url)
    fill_month(url)
    with psycopg.connect(url) as conn:
        save_registry(conn, read_registry_text(DISTRICTS))
    return url


def report(url: str, *args: str) -> str:
    env = {"TRYGG_DATABASE_URL": url, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    return trygg_cli("report", *PERIOD, *args, env=env).stdout


def expected(url: str) -> dict[str, dict[str, Any]]:
    """Per district, from each alert's records: alerts, answered within 60 s,
    the median answer time, closed and false alarms (false_alarm or
    no_help_needed). The district from the registry text, not the database."""
    district = {t.id: t.district for t in read_registry_text(DISTRICTS).teams}
    with psycopg.connect(url) as conn:
        alerts = conn.execute(
            "SELECT id, team FROM alerts WHERE raised_at >= '2026-03-01T00:00+01:00'"
            " AND raised_at < '2026-04-01T00:00+02:00' AND NOT shadow AND NOT suppressed"
        ).fetchall()
        records = conn.execute("SELECT alert_id, step, at, data FROM alert_records").fetchall()
    steps: dict[Any, dict[str, Any]] = defaultdict(dict)
    for aid, step, at, data in records:
        steps[aid].setdefault(step, (at, data))
    out: dict[str, dict[str, Any]] = {}
    for d in sorted(set(district.values())):
        mine = [aid for aid, team in alerts if district[team] == d]
        answers = [
            (steps[a]["acknowledged"][0] - steps[a]["raised"][0]).total_seconds() for a in mine
        ]
        closed = [steps[a]["resolved"][1] for a in mine if "resolved" in steps[a]]
        false = [x for x in closed if x.get("outcome") in ("false_alarm", "no_help_needed")]
        out[d] = {
            "alerts": len(mine),
            "within60": sum(1 for s in answers if s <= 60),
            "median": statistics.median(answers),
            "closed": len(closed),
            "false_alarms": len(false),
        }
    return out


def test_per_district_figures_against_the_records(month: str) -> None:
    exp = expected(month)
    assert set(exp) == {"grorud", "stovner"}
    assert all(e["alerts"] > 20 for e in exp.values())  # both districts have a month of alerts
    doc = json.loads(report(month, "--per", "district", "--format", "json"))
    assert doc["per"] == "district"
    rows = {k["key"]: k for k in doc["kpis"] if k["dimension"] == "district"}
    assert set(rows) == set(exp)
    for d, e in exp.items():
        k = rows[d]
        assert k["district"] == d
        assert k["alerts"] == k["answerable"] == e["alerts"]
        assert k["answered_within"]["60s"] == e["within60"]
        assert k["share_within"]["60s"] == pytest.approx(e["within60"] / e["alerts"])
        assert k["answer_p50"] == pytest.approx(e["median"])
        assert (k["closed"], k["false_alarms"]) == (e["closed"], e["false_alarms"])
    # the districts add up to the whole
    total = next(k for k in doc["kpis"] if k["dimension"] == "all")
    assert sum(r["alerts"] for r in rows.values()) == total["alerts"]
    # and per district and rule: the rules' alerts add up to the district's
    by_rule: dict[str, int] = defaultdict(int)
    for k in doc["kpis"]:
        if k["dimension"] == "district_rule":
            by_rule[k["district"]] += k["alerts"]
    assert dict(by_rule) == {d: e["alerts"] for d, e in exp.items()}
    # every team row names its district
    assert doc["team_districts"] == {
        "grorud-sentrum": "grorud",
        "nordstrand-syd": "grorud",
        "sagene-ost": "stovner",
        "stovner-nord": "stovner",
    }


def test_csv_and_html_name_the_districts(month: str) -> None:
    rows = list(csv.DictReader(io.StringIO(report(month, "--per", "district", "--format", "csv"))))
    assert {(r["key"], r["district"]) for r in rows if r["dimension"] == "district"} == {
        ("grorud", "grorud"),
        ("stovner", "stovner"),
    }
    assert {r["district"] for r in rows if r["dimension"] == "team"} == {"grorud", "stovner"}
    html = report(month, "--per", "district", "--format", "html")
    assert "<h3>Per bydel</h3>" in html
    assert html.index("Bydel Grorud") < html.index("<h3>Per team</h3>")
    assert 'sagene-ost <span class="district">(Bydel Stovner)</span>' in html
    # without --per district there is no district table, but teams still name theirs
    plain = report(month, "--format", "html", "--lang", "en")
    assert "Per district" not in plain and "(Bydel Grorud)" in plain
    one = report(month, "--team", "sagene-ost", "--format", "html")
    assert "sagene-ost (Bydel Stovner)</h1>" in one


def test_by_district_is_refused_with_the_way(month: str) -> None:
    env = {"TRYGG_DATABASE_URL": month}
    r = trygg_cli("report", *PERIOD, "--by", "district", env=env, check=False)
    assert r.returncode == 2 and "--per district" in r.stderr
    r = trygg_cli("report", *PERIOD, "--per", "team", env=env, check=False)
    assert r.returncode == 2 and "--per district is the one grouping" in r.stderr
