"""``trygg report``: CSV, JSON and a self-contained, printable HTML report with
plots, rendered in headless Chromium (issue 6)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, trygg_cli
from tests.test_kpi import OSLO, load_known
from trygg.audit.synth import synth_history
from trygg.store.audit import copy_alert_history

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def filled(db: str) -> str:
    load_known(db)
    residents = [
        (f"r-{i:04d}", ["stovner-nord", "grorud-sentrum", "sagene-ost"][i % 3]) for i in range(120)
    ]
    items = list(
        synth_history(
            residents,
            datetime(2026, 2, 2, tzinfo=OSLO),
            datetime(2026, 3, 30, tzinfo=OSLO),
            3000,
            seed=3,
        )
    )
    with psycopg.connect(db) as conn:
        copy_alert_history(conn, [a for a, _ in items], [r for _, rs in items for r in rs])
    return db


def test_csv_and_json_agree(filled: str, tmp_path: Path) -> None:
    env = {"TRYGG_DATABASE_URL": filled}
    j = tmp_path / "r.json"
    c = tmp_path / "r.csv"
    trygg_cli(
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-04-01",
        "--format",
        "json",
        "--out",
        str(j),
        env=env,
    )
    trygg_cli(
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-04-01",
        "--format",
        "csv",
        "--out",
        str(c),
        env=env,
    )
    data = json.loads(j.read_text())
    rows = list(csv.DictReader(io.StringIO(c.read_text())))
    assert len(rows) == len(data["kpis"])
    for r, k in zip(rows, data["kpis"], strict=True):
        assert (r["dimension"], r["key"], int(r["alerts"])) == (
            k["dimension"],
            k["key"],
            k["alerts"],
        )
        if k["share_within"]["60s"] is not None:
            assert float(r["share_within_60s"]) == pytest.approx(k["share_within"]["60s"])
    # the report was logged as an access by an auditor
    with psycopg.connect(filled) as conn:
        assert conn.execute(
            "SELECT count(*) FROM access_log WHERE action = 'report'"
        ).fetchone() == (2,)


def test_team_report_to_stdout(filled: str) -> None:
    out = trygg_cli(
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-04-01",
        "--team",
        "sagene-ost",
        "--format",
        "json",
        env={"TRYGG_DATABASE_URL": filled},
    )
    data = json.loads(out.stdout)
    assert data["team"] == "sagene-ost"
    assert {k["key"] for k in data["kpis"] if k["dimension"] == "team"} == {"sagene-ost"}


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_chromium_with_plots(filled: str, tmp_path: Path) -> None:
    page_file = tmp_path / "report.html"
    out = trygg_cli(
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-04-01",
        "--format",
        "html",
        "--out",
        str(page_file),
        "--progress",
        "--lang",
        "en",
        env={"TRYGG_DATABASE_URL": filled},
    )
    assert "exceptions" in out.stderr
    html = page_file.read_text()
    # self-contained: no external stylesheet, script, image or font
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html
    assert html.count('class="plot"') == 6
    assert "@media print" in html
    from playwright.sync_api import sync_playwright

    artefacts = REPO / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1500})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            plots = page.locator("svg.plot")
            assert plots.count() == 6
            for i in range(6):
                box = plots.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100
            labels = [plots.nth(i).get_attribute("aria-label") for i in range(6)]
            assert labels == [
                "answer time distribution",
                "weekly compliance",
                "compliance per team",
                "alerts and compliance per night hour",
                "top residents",
                "false alarm share by rule",
            ]
            assert "60 s" in page.locator("svg.plot").first.inner_html()
            assert requests == [page_file.as_uri()]
            page.screenshot(path=str(artefacts / "report.png"))
            pdf = page.pdf(format="A4")
            assert pdf[:4] == b"%PDF"
        finally:
            browser.close()
    assert (artefacts / "report.png").stat().st_size > 20_000
