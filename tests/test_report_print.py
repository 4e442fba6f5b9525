"""The response-time report as it is printed and read (issue 18, item 5): Bokmål by
default, English on request; an A4 PDF whose tables fit the page, checked in
Chromium; compliance figures that never round up into compliance; partial
weeks marked; local times with their offset, in the CLI too; no stray warnings."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, trygg_cli
from tests.test_kpi import OSLO, aid, load_known
from tests.test_report import ARGS, CHROMIUM
from trygg.audit.cli import _pct as cli_pct
from trygg.audit.report import Report, ReportOptions
from trygg.audit.report_html import to_html
from trygg.audit.synth import synth_history
from trygg.locale import Words, floor_share
from trygg.store.audit import add_exception, copy_alert_history
from trygg.store.kpi import KpiParams, KpiRow, coverage

# A4 (210 mm) less the report's @page margins (12 mm each side), in CSS px (96/in)
A4_PRINTABLE_PX = (210 - 2 * 12) / 25.4 * 96

LONG_CAUSE = (
    "the-residents-alarm-unit-lost-its-mobile-link-and-the-retry-went-to-a-number-"
    "that-nobody-answers, see ticket "
    "3f2a77c0e1b94d5f8a6b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f00112233445566778899aabbccdd"
)


@pytest.fixture
def printable(db: str) -> str:
    """Eight weeks of synthetic alerts, the hand-made set, and an exception report
    with a 94-character word in it (a table that does not wrap would be cut)."""
    load_known(db)
    residents = [
        (f"r-{i:04d}", ["stovner-nord", "grorud-sentrum", "sagene-ost"][i % 3]) for i in range(90)
    ]
    items = list(
        synth_history(
            residents,
            datetime(2026, 2, 2, tzinfo=OSLO),
            datetime(2026, 3, 30, tzinfo=OSLO),
            1500,
            seed=5,
        )
    )
    with psycopg.connect(db) as conn:
        copy_alert_history(conn, [a for a, _ in items], [r for _, rs in items for r in rs])
        add_exception(
            conn,
            alert_id=aid("A4"),
            kind="answer",
            cause=LONG_CAUSE,
            action="a second number in the routing file; tested with the supplier the same day",
            recorded_by="team-leader-with-a-rather-long-user-name@bydel-stovner.oslo.kommune.example",
        )
    return db


def pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_a4_pdf_in_bokmal_with_no_table_cut_and_no_stray_warnings(
    printable: str, tmp_path: Path
) -> None:
    page_file = tmp_path / "rapport.html"
    # Wednesday 4 February to Friday 27 March: weeks 6 and 13 are partial
    out = trygg_cli(
        "report",
        "--from",
        "2026-02-04",
        "--to",
        "2026-03-27",
        "--format",
        "html",
        "--out",
        str(page_file),
        env={"TRYGG_DATABASE_URL": printable},
    )
    # nothing on stderr but the one line the command writes (no matplotlib chatter)
    assert out.stderr.splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith(f"wrote {page_file}:")
    html = page_file.read_text()
    assert '<html lang="nb">' in html
    assert "Svartider og responstid" in html
    assert "besvart innen 60 s" in html and "answered within" not in html
    # local times with their offset: the period starts in CET and ends in CEST
    assert "2026-02-04 00:00 +01:00" in html and "2026-03-27 00:00 +01:00" in html
    # partial weeks: marked in the table with their days, hollow in the plot
    assert html.count("delvis: 5 dager") == 2  # week 6, in both tables of the week group
    assert html.count("delvis: 4 dager") == 2  # week 13
    assert "delvis uke" in html
    assert LONG_CAUSE in html

    from playwright.sync_api import sync_playwright

    artefacts = REPO / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            # lay the page out as it is printed: print media, the A4 printable width
            page = browser.new_page(viewport={"width": int(A4_PRINTABLE_PX), "height": 1100})
            page.goto(page_file.as_uri())
            page.emulate_media(media="print")
            res = page.evaluate(
                """() => {
                  const W = window.innerWidth, out = {tables: 0, wide: [], spill: []};
                  for (const t of document.querySelectorAll('table')) {
                    out.tables++;
                    const r = t.getBoundingClientRect();
                    if (r.left < -0.5 || r.right > W + 0.5 || t.scrollWidth > t.clientWidth + 1)
                      out.wide.push([t.className, r.left, r.right, t.scrollWidth]);
                  }
                  for (const c of document.querySelectorAll('th, td')) {
                    const r = c.getBoundingClientRect();
                    if (c.scrollWidth > c.clientWidth + 1 || r.right > W + 0.5)
                      out.spill.push([c.textContent.slice(0, 60), c.scrollWidth, c.clientWidth]);
                  }
                  for (const s of document.querySelectorAll('svg.plot')) {
                    if (s.getBoundingClientRect().right > W + 0.5) out.wide.push(['svg']);
                  }
                  out.doc = document.documentElement.scrollWidth;
                  out.W = W;
                  return out;
                }"""
            )
            assert res["tables"] == 12  # 5 groups x 2, the night hours, the exceptions
            assert res["wide"] == [], res
            assert res["spill"] == [], res
            assert res["doc"] <= res["W"]
            pdf = page.pdf(format="A4")
            (artefacts / "report-a4.pdf").write_bytes(pdf)
        finally:
            browser.close()
    assert pdf[:4] == b"%PDF"
    sizes = set(re.findall(rb"/MediaBox\s*\[0 0 ([\d.]+) ([\d.]+)\]", pdf))
    assert sizes and all(
        abs(float(w) - 595.92) < 1 and abs(float(h) - 842.88) < 1 for w, h in sizes
    )
    assert pdf_pages(pdf) > 3


def kpi(
    dimension: str,
    key: str,
    answerable: int,
    within60: int,
    within180: int,
    targets: tuple[float, float] = (0.975, 0.99),
) -> KpiRow:
    share = {60: within60 / answerable, 180: within180 / answerable}
    return KpiRow(
        dimension=dimension,
        key=key,
        alerts=answerable,
        suppressed=0,
        cancelled=0,
        answerable=answerable,
        answered=answerable,
        unanswered=0,
        answer_p50=20.0,
        answer_p90=40.0,
        answer_p99=170.0,
        answered_within={60: within60, 180: within180},
        share_within=share,
        meets_target={60: share[60] >= targets[0], 180: share[180] >= targets[1]},
        arrived=0,
        arrival_p50=None,
        arrival_p90=None,
        arrival_p99=None,
        arrival_within={30: 0, 45: 0, 60: 0},
        arrival_share_within={30: None, 45: None, 60: None},
        resolved=answerable,
        resolve_p50=600.0,
        resolve_p90=900.0,
        resolve_p99=1200.0,
        closed=answerable,
        false_alarms=0,
        false_alarm_share=0.0,
        not_at_home=0,
    )


def page_for(rows: list[KpiRow], lang: str) -> str:
    opts = ReportOptions(
        start=datetime(2026, 3, 2, tzinfo=OSLO), end=datetime(2026, 3, 9, tzinfo=OSLO), lang=lang
    )
    rep = Report(opts, datetime(2026, 3, 9, tzinfo=UTC), rows, [20.0, 30.0], [], [])
    return to_html(rep)


def card(html: str, label: str) -> tuple[str, str]:
    """(class, figure) of the card whose label starts with ``label``."""
    m = re.search(r'<div class="v ([a-z ]*)">([^<]*)</div><div class="l">' + re.escape(label), html)
    assert m, label
    return m.group(1).strip(), m.group(2)


def test_honest_rounding_at_97_45_against_97_5() -> None:
    """1949 of 2000 (97.45 %) and 19,491 of 20,000 (97.455 %) are below a 97.5 %
    target: shown as 97,4 % in red, never as 97,5 %; exactly 97.5 % is met."""
    for answerable, within in ((2000, 1949), (20000, 19491), (100000, 97499)):
        rows = [kpi("all", "all", answerable, within, answerable), kpi("team", "a", 10, 10, 10)]
        html = page_for(rows, "nb")
        assert card(html, "besvart innen 60 s") == ("bad", "97,4\u00a0%")
        assert "97,5\u00a0%</td>" not in html
        en = page_for(rows, "en")
        assert card(en, "answered within 60 s") == ("bad", "97.4\u00a0%")
    met = page_for([kpi("all", "all", 2000, 1950, 2000), kpi("team", "a", 2, 2, 2)], "nb")
    assert card(met, "besvart innen 60 s") == ("ok", "97,5\u00a0%")
    assert card(met, "besvart innen 180 s") == ("ok", "100,0\u00a0%")
    # the figure behind it, and the CLI's summary line, floor the same way
    assert floor_share(0.9745) == 97.4 and floor_share(0.97455) == 97.4
    assert floor_share(0.975) == 97.5 and floor_share(39 / 40) == 97.5
    assert floor_share(0.99999) == 99.9 and floor_share(1.0) == 100.0
    assert cli_pct(19491 / 20000) == "97.4 %"
    w = Words("nb")
    assert w.pct(0.97455, floor=True) == "97,4\u00a0%" and w.pct(0.97455) == "97,5\u00a0%"
    assert w.target(0.975) == "97,5\u00a0%" and w.target(0.99) == "99\u00a0%"


def test_partial_weeks_and_months_are_counted_on_the_local_calendar() -> None:
    p = KpiParams(datetime(2026, 2, 4, tzinfo=OSLO), datetime(2026, 3, 30, 12, tzinfo=OSLO))
    assert coverage(p, "week", "2026-W06") == (5.0, 7.0)  # Wednesday to Sunday
    assert coverage(p, "week", "2026-W10") == (7.0, 7.0)
    assert coverage(p, "week", "2026-W13") == (7.0, 7.0)  # the spring-forward week: 7 days
    assert coverage(p, "week", "2026-W14") == (0.5, 7.0)
    assert coverage(p, "month", "2026-02") == (25.0, 28.0)
    assert coverage(p, "month", "2026-03") == (29.5, 31.0)


def test_exception_list_and_json_report_in_local_time_with_offset(db: str) -> None:
    load_known(db)
    env = {"TRYGG_DATABASE_URL": db}
    period = ["--from", "2026-03-01", "--to", "2026-11-01"]
    table = trygg_cli("audit", "exception", "list", *period, env=env)
    # A4 was raised 13:00 local (12:00 UTC), A11 14:00 local
    assert table.stdout.startswith("2026-03-10 13:00:00 +01:00  " + aid("A4")), table.stdout
    assert "2026-03-12 14:00:00 +01:00  " + aid("A11") in table.stdout
    rows = json.loads(
        trygg_cli("audit", "exception", "list", *period, "--format", "json", env=env).stdout
    )
    assert {r["raised"] for r in rows} >= {"2026-03-10T13:00:00+01:00"}
    doc = json.loads(trygg_cli("report", *period, "--format", "json", env=env).stdout)
    a4 = next(e for e in doc["exceptions"] if e["id"] == aid("A4"))
    assert a4["raised"] == "2026-03-10T13:00:00+01:00"
    assert [r["at"][-6:] for r in a4["records"]] == ["+01:00"] * 7
    weeks = {k["key"]: k for k in doc["kpis"] if k["dimension"] == "week"}
    assert weeks["2026-W43"]["partial"] is False and weeks["2026-W43"]["days"] == 7.0


def test_english_on_request_and_a_language_trygg_has_not(db: str, tmp_path: Path) -> None:
    env = {"TRYGG_DATABASE_URL": db}
    load_known(db)
    period = ["--from", "2026-03-01", "--to", "2026-11-01"]
    out = tmp_path / "r.html"
    trygg_cli("report", *period, "--lang", "en", "--out", str(out), env=env)
    html = out.read_text()
    assert '<html lang="en">' in html and "Response times" in html and "not home" in html
    bad = trygg_cli("report", *period, "--lang", "sv", env=env, check=False)
    assert bad.returncode == 2 and "must be one of nb, en" in bad.stderr
