"""`trygg report a3` (issue 18, item 7): the A3 improvement page for one rule, on a
simulated month whose alerts were handled, with a candidate catalogue."""

from __future__ import annotations

import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO, new_database, trygg_cli
from tests.test_backtest import (
    BED_EXIT,
    END,
    START,
    bed_return,
    candidate_dir,
    current,
    store,
    to_events,
)
from tests.test_report import ARGS, CHROMIUM
from tests.test_rules_catalogue import SITE_RULE
from trygg.audit.a3 import A3Options
from trygg.audit.a3_build import build_a3
from trygg.devenv import PrivatePostgres
from trygg.model import Signal
from trygg.rules.catalogue import load_catalogue
from trygg.simulate import Truth, build_homes, generate, make_rates
from trygg.store.alert_writes import append_record, insert_alert
from trygg.store.migrate import migrate
from trygg.tuning.backtest_engines import run_engines

HOMES = 12


@dataclass
class Handled:
    url: str
    alerts: int
    outcomes: Counter[tuple[str, str]]  # (rule, outcome) -> alerts
    back_in_30: int  # stored night exits the resident came back from within 30 minutes


def handle(conn: psycopg.Connection[Any], s: Signal, team: str, k: int, outcome: str,
           arrived: bool) -> None:  # fmt: skip
    """Store an alert as staff handled it: answered in 15 s to a few minutes (one
    in nine after 60 s), a visit when ``arrived``, resolved with ``outcome``."""
    aid = str(uuid.uuid4())
    insert_alert(
        conn,
        id=aid,
        resident=s.resident,
        team=team,
        rule=s.rule,
        catalogue_version=s.catalogue_version,
        code=s.code,
        severity=s.severity.value,
        events=s.events,
        raised_at=s.at,
        state="resolved",
        device=s.device,
    )
    t = s.at
    append_record(conn, aid, "raised", t, "system")
    append_record(conn, aid, "notified", t + timedelta(seconds=1), "system")
    ack = 75 + 10 * (k % 5) if k % 9 == 4 else 15 + 4 * (k % 8)
    append_record(conn, aid, "acknowledged", t + timedelta(seconds=ack), f"nurse-{team}")
    end = t + timedelta(minutes=6)
    if arrived:
        append_record(conn, aid, "arrived", t + timedelta(minutes=14 + k % 9), f"nurse-{team}")
        end = t + timedelta(minutes=30)
    append_record(conn, aid, "resolved", end, f"nurse-{team}", data={"outcome": outcome})


def fill_month(url: str) -> Handled:
    """March 2026 for 12 simulated homes (many night exits) in the database, and
    every alert the current catalogue raises stored as handled: a night exit
    the resident came back from by themselves was a visit with no help needed,
    one they did not come back from was helped; an injected incident helped;
    any other alert was a false alarm, cleared on the phone."""
    registry, homes = build_homes(HOMES, seed=11, heartbeat=timedelta(hours=1))
    truth: list[Truth] = []
    rates = make_rates({"night-exit-no-return": 0.4, "duplicate": 0.0, "malformed": 0.0})
    events = list(to_events(generate(homes, START, END, 11, rates, truth), registry))
    store(url, registry, events)
    bed = {
        e.id: (e.type.value, e.time.timestamp()) for e in events if e.type.value.startswith("bed.")
    }
    cur, _, _, _ = run_engines(events, registry, current(), current(), until=END)
    incident_of: dict[str, Truth] = {}
    for t in truth:
        for eid in t.events:
            incident_of[eid] = t
    teams = {r.id: r.team for r in registry.residents}
    outcomes: Counter[tuple[str, str]] = Counter()
    back_in_30 = 0
    with psycopg.connect(url) as conn:
        for k, s in enumerate(cur):
            tr = next((incident_of[e] for e in s.events if e in incident_of), None)
            if tr is not None and s.rule in tr.expected_rules and tr.resident == s.resident:
                ret = bed_return(tr, bed) if tr.incident == "night-exit-no-return" else None
                outcome, arrived = ("no_help_needed" if ret is not None else "helped"), True
                if s.rule == BED_EXIT and ret is not None and ret <= 1800:
                    back_in_30 += 1
            else:
                outcome, arrived = "false_alarm", False
            handle(conn, s, teams[s.resident], k, outcome, arrived)
            outcomes[(s.rule, outcome)] += 1
    return Handled(url, len(cur), outcomes, back_in_30)


@pytest.fixture(scope="module")
def handled(pg_server: PrivatePostgres) -> Handled:
    url = new_database(pg_server)
    migrate(url)
    return fill_month(url)


def test_the_a3_figures_for_a_longer_bed_exit_wait(handled: Handled, tmp_path: Path) -> None:
    """The candidate (bed exits wait 30 min, not 20) against what the staff found:
    it drops exactly the exits the resident came back from by themselves within
    30 minutes (stored as no help needed), misses no real incident, and delays
    every other one by 10 minutes."""
    opts = A3Options(
        rule=BED_EXIT,
        start=START,
        end=END,
        lang="nb",
        shadow_from=date(2026, 4, 13),
        candidate_paths=[candidate_dir(tmp_path)],
    )
    cand = load_catalogue(list(opts.candidate_paths))
    with psycopg.connect(handled.url, autocommit=True) as conn:
        page = build_a3(conn, opts, current(), now=datetime(2026, 4, 2, tzinfo=UTC), candidate=cand)
    helped = handled.outcomes[(BED_EXIT, "helped")]
    no_help = handled.outcomes[(BED_EXIT, "no_help_needed")]
    assert helped > 20 and no_help > 20 and handled.back_in_30 > 20
    a = page.overall
    assert a.alerts == helped + no_help == a.closed
    assert a.false_alarms == no_help and a.false_alarm_share == pytest.approx(no_help / a.closed)
    assert a.answered_within[60] < a.answerable  # some answered late, on purpose
    # the analysis: a bed sensor behind every alert (the first causing event's device),
    # all at night; the Pareto list adds up
    assert [(r["key"], r["alerts"]) for r in page.breakdown["device_kind"]] == [("bed", a.alerts)]
    assert page.night_alerts == a.alerts
    pareto, n = page.pareto()
    assert pareto[0]["false_alarms"] >= pareto[-1]["false_alarms"]
    assert n <= 12 and (len(pareto) < n or pareto[-1]["cumulative"] == pytest.approx(1.0))
    # the week of 1 March (one day) and of 30-31 March (two days) are partial
    weeks = {k.key: (k.days, k.partial) for k in page.group("week")}
    assert weeks["2026-W09"] == (1.0, True) and weeks["2026-W14"] == (2.0, True)
    assert weeks["2026-W11"] == (7.0, False)

    cm = page.countermeasure
    assert cm is not None
    assert cm.changes == [("wait", "20m", "30m")]
    assert cm.diff.removed == handled.back_in_30 and cm.diff.added == 0
    impacts = {i.outcome: i for i in cm.impacts}
    assert impacts["no_help_needed"].stored == no_help
    assert impacts["no_help_needed"].missed == handled.back_in_30 == cm.false_removed
    assert impacts["helped"].stored == helped
    assert impacts["helped"].missed == 0 and cm.missed_real == []
    assert impacts["helped"].delayed == helped == len(cm.delayed_real)
    assert impacts["helped"].mean_delay_s == pytest.approx(600.0)
    assert cm.other_rules == []
    assert cm.candidate_per_week < cm.current_per_week
    # the follow-up: shadow from the given Monday, four weekly checks, the decision
    # after four weeks and a new A3 four weeks after that
    assert [(s.when, s.what) for s in page.plan] == [
        (date(2026, 4, 13), "plan.shadow_start"),
        *[(date(2026, 4, 13) + timedelta(days=7 * k), "plan.shadow_check") for k in range(1, 5)],
        (date(2026, 5, 11), "plan.decide"),
        (date(2026, 6, 8), "plan.follow_up"),
    ]
    assert page.plan[0].command.startswith("trygg rules shadow ")
    follow = dict(page.plan[-1].checks)
    assert follow["check.false_share"]["expected_share"] == pytest.approx(
        (no_help - handled.back_in_30) / (a.closed - handled.back_in_30)
    )


# A3 landscape (420 x 297 mm) less the page's 8 mm margins, in CSS px (96/in)
A3_PRINTABLE = ((420 - 16) / 25.4 * 96, (297 - 16) / 25.4 * 96)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_the_a3_page_prints_on_one_a3_sheet(handled: Handled, tmp_path: Path) -> None:
    cand = candidate_dir(tmp_path)
    html_file, pdf_file = tmp_path / "a3.html", tmp_path / "a3.pdf"
    env = {"TRYGG_DATABASE_URL": handled.url, "TRYGG_REPORT_TIMEZONE": "Europe/Oslo"}
    args = ["report", "a3", "--rule", BED_EXIT, "--from", "2026-03-01", "--to", "2026-04-01"]
    args += ["--candidate", str(cand), "--shadow-from", "2026-04-13"]
    out = trygg_cli(*args, "--out", str(html_file), "--pdf", str(pdf_file), env=env)
    assert out.stderr.splitlines() == [out.stderr.strip()], out.stderr
    assert out.stderr.startswith(f"wrote the A3 page for {BED_EXIT} to {html_file} to {pdf_file}")
    html = html_file.read_text()
    assert '<html lang="nb">' in html and "A3 forbedringsark: Ute av sengen om natten" in html
    # the background in Bokmål: the catalogue's nb: texts, no English paragraphs
    background = html[html.index('<section class="background">') :]
    background = background[: background.index("</section>")]
    assert "Beboeren sto opp av sengen om natten (kl. 22.00\u201307.00)" in background
    assert "Bare om natten, når ingen andre merker det." in background
    assert "The resident got out of bed" not in html and "Out of bed at night and not" not in html
    for n, section in enumerate(
        ("background", "current", "analysis", "countermeasure", "plan"), start=1
    ):
        assert f'<section class="{section}">' in html
        assert f'<span class="n">{n}</span>' in html
    assert "2026-03-01 00:00 +01:00" in html and "2026-04-01 00:00 +02:00" in html
    assert "trygg rules shadow-report --from 2026-04-13" in html
    assert html.count('class="plot"') == 4
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    # printed by Chromium itself (--pdf): one A3 landscape page
    pdf = pdf_file.read_bytes()
    assert pdf[:4] == b"%PDF"
    assert len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf)) == 1
    boxes = set(re.findall(rb"/MediaBox\s*\[0 0 ([\d.]+) ([\d.]+)\]", pdf))
    assert boxes and all(
        abs(float(w) - 1190.55) < 2 and abs(float(h) - 841.89) < 2 for w, h in boxes
    )
    # and laid out as printed: it fits the sheet, no table or cell reaches past its box
    res = printed_layout(html_file, "a3")
    (REPO / ".artifacts" / "a3.pdf").write_bytes(pdf)
    assert res["spill"] == [], res
    assert res["width"] <= A3_PRINTABLE[0] + 1
    assert res["height"] <= A3_PRINTABLE[1], res


def printed_layout(html_file: Path, name: str) -> dict[str, Any]:
    """The page laid out for print in Chromium on the A3 sheet's printable area:
    its width and height, and the tables, cells, cards and plots that spill out of
    their box (a screenshot to .artifacts/NAME.png)."""
    from playwright.sync_api import sync_playwright

    artefacts = REPO / ".artifacts"
    artefacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(
                viewport={"width": int(A3_PRINTABLE[0]), "height": int(A3_PRINTABLE[1])}
            )
            page.goto(html_file.as_uri())
            page.emulate_media(media="print")
            res: dict[str, Any] = page.evaluate(
                """() => {
                  const out = {spill: []};
                  for (const c of document.querySelectorAll('table, th, td, .card, svg.plot')) {
                    const box = c.closest('section') || document.body;
                    const r = c.getBoundingClientRect(), b = box.getBoundingClientRect();
                    if (c.scrollWidth > c.clientWidth + 1 || r.right > b.right + 0.5)
                      out.spill.push([c.tagName, c.textContent.slice(0, 40)]);
                  }
                  out.width = document.documentElement.scrollWidth;
                  out.height = document.documentElement.scrollHeight;
                  return out;
                }"""
            )
            page.screenshot(path=str(artefacts / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    return res


def test_the_a3_page_without_a_candidate_and_for_a_rule_that_does_not_exist(
    handled: Handled, tmp_path: Path
) -> None:
    env = {"TRYGG_DATABASE_URL": handled.url}
    period = ["--from", "2026-03-01", "--to", "2026-04-01"]
    out = trygg_cli("report", "a3", "--rule", "button", *period, "--lang", "en", env=env)
    assert "A3 improvement sheet: Alarm button" in out.stdout
    assert "The resident has pressed the alarm button (pendant or wrist)." in out.stdout
    assert "Alarm button pressed" in out.stdout and "Beboeren" not in out.stdout
    assert "No candidate back-tested yet" in out.stdout
    assert "--candidate DIR" in out.stdout
    bad = trygg_cli("report", "a3", "--rule", "no-such-rule", *period, env=env, check=False)
    assert bad.returncode == 2 and "no rule 'no-such-rule'" in bad.stderr
    none = trygg_cli("report", "a3", *period, env=env, check=False)
    assert none.returncode == 2 and "give --rule" in none.stderr
    wrong = trygg_cli("report", *period, "--rule", "button", env=env, check=False)
    assert wrong.returncode == 2 and "--rule is for `trygg report a3`" in wrong.stderr
    with psycopg.connect(handled.url) as conn:
        row = conn.execute(
            "SELECT role, detail FROM access_log WHERE action = 'report_a3'"
            " ORDER BY at DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[0] == "specialist" and row[1]["rule"] == "button"
    # a site's own rule without nb: texts: a Bokmål page shows its English texts
    (tmp_path / "site.yaml").write_text(SITE_RULE)
    rules = ["--rules", str(REPO / "rules"), "--rules", str(tmp_path / "site.yaml")]
    own = trygg_cli("report", "a3", "--rule", "night-call", *period, *rules, env=env)
    assert "<strong>night-call</strong> (night-call, kode 4.13, Rød): Night call.</p>" in own.stdout
    assert '<span lang="en">The resident called at night.</span>' in own.stdout
    assert "ingen tekst på bokmål for denne regelen" in own.stdout
