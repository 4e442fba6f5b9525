"""`trygg report --per district` (issue 19, item 5): a simulated month for two
districts; each district's figures against figures computed here from the
alerts and their lifecycle records in Python (not trygg.store.kpi's SQL), and
the district named in every report (JSON, CSV, HTML)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import new_database, trygg_cli
from tests.test_a3 import A3_PRINTABLE, fill_month, printed_layout
from tests.test_backtest import BED_EXIT, END, START, candidate_dir, current
from tests.test_deviations import DISTRICTS
from tests.test_report import CHROMIUM
from trygg.audit.a3 import A3Options
from trygg.audit.a3_build import build_a3
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


def rule_per_district(url: str, rule: str) -> dict[str, tuple[int, int]]:
    """Per district, the rule's alerts and false alarms (false_alarm or
    no_help_needed in the resolving record), from the records, in Python."""
    district = {t.id: t.district for t in read_registry_text(DISTRICTS).teams}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.team, (SELECT r.data ->> 'outcome' FROM alert_records r"
            " WHERE r.alert_id = a.id AND r.step = 'resolved') FROM alerts a"
            " WHERE a.rule = %s AND a.raised_at >= '2026-03-01T00:00+01:00'"
            " AND a.raised_at < '2026-04-01T00:00+02:00' AND NOT a.shadow",
            [rule],
        ).fetchall()
    out: dict[str, tuple[int, int]] = {}
    for team, outcome in rows:
        n, f = out.get(district[team], (0, 0))
        out[district[team]] = (n + 1, f + (outcome in ("false_alarm", "no_help_needed")))
    return out


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_the_a3_page_shows_the_other_districts_as_the_reference(month: str, tmp_path: Path) -> None:
    """A team's A3 page for bed exits: its district first (marked), the other
    district beside it, each with the rule's alerts and false-alarm share over
    the same period for all its teams; printed on one A3 sheet."""
    exp = rule_per_district(month, BED_EXIT)
    assert set(exp) == {"grorud", "stovner"} and all(n > 10 for n, _ in exp.values())
    opts = A3Options(rule=BED_EXIT, start=START, end=END, team="sagene-ost")
    with psycopg.connect(month, autocommit=True) as conn:
        page = build_a3(conn, opts, current(), now=datetime(2026, 4, 2, tzinfo=UTC))
    assert page.district == "stovner"
    assert [k.key for k in page.reference] == ["stovner", "grorud"]  # its own first
    for k in page.reference:
        n, false = exp[k.key]
        assert (k.alerts, k.false_alarms) == (n, false)
        assert k.false_alarm_share == pytest.approx(false / k.closed)
    # the page's own figures are the team's, the reference the whole district's
    assert page.overall.alerts < page.reference[0].alerts

    # printed: the team's page (its district marked), and the site's page with
    # a candidate (every district, none marked), each on one A3 sheet
    env = {"TRYGG_DATABASE_URL": month, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    cand = candidate_dir(tmp_path)
    for name, args in (
        ("a3-team", ["--team", "sagene-ost"]),
        ("a3-site", ["--candidate", str(cand), "--shadow-from", "2026-04-13"]),
    ):
        html_file, pdf_file = tmp_path / f"{name}.html", tmp_path / f"{name}.pdf"
        trygg_cli(
            "report", "a3", "--rule", BED_EXIT, *PERIOD, *args,
            "--out", str(html_file), "--pdf", str(pdf_file), env=env,
        )  # fmt: skip
        html = html_file.read_text()
        assert ">Referanse: bydelene</th>" in html
        if name == "a3-team":
            assert '<tr class="own"><td>Bydel Stovner (denne siden)</td>' in html
            assert "<td>Bydel Grorud</td>" in html
        else:
            assert 'class="own"' not in html
            assert "<td>Bydel Grorud</td>" in html and "<td>Bydel Stovner</td>" in html
        pages = re.findall(rb"/Type\s*/Page(?![s\w])", pdf_file.read_bytes())
        assert len(pages) == 1, name
        res = printed_layout(html_file, name)
        assert res["spill"] == [], res
        assert res["width"] <= A3_PRINTABLE[0] + 1
        assert res["height"] <= A3_PRINTABLE[1], (name, res)
