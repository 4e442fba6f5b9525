"""Response-time KPIs on a known, hand-computed data set (issue 6).

The data set (local times, Europe/Oslo):

==== ===== ======= =========================== ========================================
id   team  sev     raised                      handling
==== ===== ======= =========================== ========================================
A1   a     red     2026-03-10 10:00            ack +20 s, arrived +25 min, resolved +40 min
A2   a     red     2026-03-10 11:00            ack +50 s, arrived +50 min, resolved +70 min
A3   b     yellow  2026-03-10 12:00            ack +90 s, resolved +5 min (no help needed)
A4   b     red     2026-03-10 13:00            ack +200 s, arrived +70 min, resolved +80 min
A5   a     yellow  2026-03-10 23:58            ack +180 s, resolved 00:10 next day (false
                                               alarm, only in the record's data)
A6   b     red     2026-03-29 01:59:30 CET     ack 03:00:10 CEST (= 40 s), resolved 03:10
A7   a     yellow  2026-10-25 02:30 CEST       ack +10 s, resolved +10 min
A8   a     yellow  2026-10-25 02:30 CET        ack +30 s, resolved +5 min (not at home:
                                               not false, counted apart)
A9   a     red     2026-03-16 00:30            cancelled +15 s (device reset): counted apart
A10  b     yellow  2026-03-11 09:30            suppressed: counted apart
A11  b     red     2026-03-12 14:00            never answered: a breach
A12  a     red     2026-03-12 15:00            shadow: excluded everywhere
==== ===== ======= =========================== ========================================
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.conftest import new_database
from trygg.audit.report import ReportOptions, build_report
from trygg.audit.report_csv_json import to_csv, to_dict
from trygg.audit.report_html import to_html
from trygg.store.audit import copy_alert_history
from trygg.store.kpi import KpiParams
from trygg.store.kpi_queries import compute_kpis, exceptions
from trygg.store.migrate import migrate

OSLO = ZoneInfo("Europe/Oslo")
START = datetime(2026, 3, 1, tzinfo=OSLO)
END = datetime(2026, 11, 1, tzinfo=OSLO)
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def aid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"trygg-test/{name}"))


def local(*a: int, fold: int = 0) -> datetime:
    """A local wall-clock time as UTC: timedelta arithmetic on an aware local
    datetime is wall-clock arithmetic and would lose the fold of 02:30 CET."""
    return datetime(*a, tzinfo=OSLO, fold=fold).astimezone(UTC)  # type: ignore[misc]


S, M = timedelta(seconds=1), timedelta(minutes=1)

RULES = {
    "button": ("4.13", "red"),
    "fall": ("4.1", "red"),
    "dose-missed": ("3.3", "yellow"),
    "bed-exit-no-return": ("4.2", "yellow"),
    "inactivity": ("4.9", "yellow"),
    "water": ("4.17", "yellow"),
    "pullcord": ("4.14", "red"),
}


def known_alerts() -> list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]]:
    """(alert row, records) for copy_alert_history; see the module docstring."""
    out = []

    def alert(
        name: str,
        team: str,
        rule: str,
        raised: datetime,
        steps: list[tuple[str, datetime, dict[str, Any]]],
        *,
        state: str,
        outcome: str | None = None,
        suppressed: bool = False,
        shadow: bool = False,
        resident: str | None = None,
    ) -> None:
        code, sev = RULES[rule]
        i = aid(name)
        recs = [(i, 0, "raised", raised, "system", None, "{}")]
        for n, (step, at, data) in enumerate(steps, start=1):
            actor = "system" if step in ("notified", "cancelled") else f"nurse-{team}"
            note = "call-out delayed: nurse busy" if name == "A4" and step == "arrived" else None
            recs.append((i, n, step, at, actor, note, json.dumps(data)))
        row = (
            i,
            resident or f"r-{name}",
            team,
            rule,
            "2026.1",
            code,
            sev,
            [f"e-{name}"],
            None,
            rule,
            raised,
            state,
            suppressed,
            "silenced" if suppressed else None,
            outcome,
            shadow,
            len(recs),
        )
        out.append((row, recs))

    def visit(
        raised: datetime, ack: timedelta, arrive: timedelta | None, resolve: timedelta, outcome: str
    ) -> list[tuple[str, datetime, dict[str, Any]]]:
        s = [("notified", raised + S, {}), ("acknowledged", raised + ack, {})]
        if arrive is not None:
            s += [
                ("assigned", raised + ack + 5 * S, {"assignee": "n"}),
                ("accepted", raised + ack + 6 * S, {}),
                ("arrived", raised + arrive, {}),
            ]
        s.append(("resolved", raised + resolve, {"outcome": outcome}))
        return s

    r = local(2026, 3, 10, 10, 0)
    alert(
        "A1",
        "a",
        "button",
        r,
        visit(r, 20 * S, 25 * M, 40 * M, "helped"),
        state="resolved",
        outcome="helped",
        resident="r-0001",
    )
    r = local(2026, 3, 10, 11, 0)
    alert(
        "A2",
        "a",
        "fall",
        r,
        visit(r, 50 * S, 50 * M, 70 * M, "helped"),
        state="resolved",
        outcome="helped",
        resident="r-0001",
    )
    r = local(2026, 3, 10, 12, 0)
    alert(
        "A3",
        "b",
        "dose-missed",
        r,
        visit(r, 90 * S, None, 5 * M, "no_help_needed"),
        state="resolved",
        outcome="no_help_needed",
        resident="r-0001",
    )
    r = local(2026, 3, 10, 13, 0)
    alert(
        "A4",
        "b",
        "button",
        r,
        visit(r, 200 * S, 70 * M, 80 * M, "helped"),
        state="resolved",
        outcome="helped",
    )
    r = local(2026, 3, 10, 23, 58)
    alert(
        "A5",
        "a",
        "bed-exit-no-return",
        r,
        visit(r, 180 * S, None, local(2026, 3, 11, 0, 10) - r, "false_alarm"),
        state="resolved",
        outcome=None,
    )  # the outcome only in the record's data
    r = local(2026, 3, 29, 1, 59, 30)
    alert(
        "A6",
        "b",
        "button",
        r,
        [
            ("notified", r + S, {}),
            ("acknowledged", local(2026, 3, 29, 3, 0, 10), {}),
            ("resolved", local(2026, 3, 29, 3, 10), {"outcome": "helped"}),
        ],
        state="resolved",
        outcome="helped",
    )
    r = local(2026, 10, 25, 2, 30, fold=0)  # CEST, 00:30 UTC
    alert(
        "A7",
        "a",
        "inactivity",
        r,
        visit(r, 10 * S, None, 10 * M, "helped"),
        state="resolved",
        outcome="helped",
    )
    r = local(2026, 10, 25, 2, 30, fold=1)  # CET, 01:30 UTC
    alert(
        "A8",
        "a",
        "inactivity",
        r,
        visit(r, 30 * S, None, 5 * M, "not_at_home"),
        state="resolved",
        outcome="not_at_home",
    )
    r = local(2026, 3, 16, 0, 30)
    alert(
        "A9",
        "a",
        "button",
        r,
        [("notified", r + S, {}), ("cancelled", r + 15 * S, {"reason": "device_reset"})],
        state="cancelled",
    )
    r = local(2026, 3, 11, 9, 30)
    alert(
        "A10",
        "b",
        "water",
        r,
        [("cancelled", r + 10 * M, {"reason": "auto_resolved", "outcome": "auto_resolved"})],
        state="cancelled",
        suppressed=True,
        outcome="auto_resolved",
    )
    r = local(2026, 3, 12, 14, 0)
    alert("A11", "b", "pullcord", r, [("notified", r + S, {})], state="notified")
    r = local(2026, 3, 12, 15, 0)
    alert(
        "A12",
        "a",
        "button",
        r,
        visit(r, 500 * S, None, 10 * M, "false_alarm"),
        state="resolved",
        outcome="false_alarm",
        shadow=True,
    )
    return out


def load_known(url: str) -> None:
    items = known_alerts()
    with psycopg.connect(url) as conn:
        copy_alert_history(conn, [a for a, _ in items], [r for _, rs in items for r in rs])


@pytest.fixture(params=["timescaledb", "plain"])
def known_db(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "timescaledb":
        url = request.getfixturevalue("db")
    else:
        url = new_database(request.getfixturevalue("plain_pg_server"))
        migrate(url)
    load_known(url)
    yield url


def by(rows: list[Any], dimension: str) -> dict[str, Any]:
    return {r.dimension == dimension and r.key: r for r in rows if r.dimension == dimension}


def test_overall_figures_match_hand_computed(known_db: str) -> None:
    with psycopg.connect(known_db) as conn:
        rows = compute_kpis(conn, KpiParams(START, END))
    a = rows[0]
    assert (a.dimension, a.key) == ("all", "all")
    assert a.alerts == 11  # A12 (shadow) excluded
    assert a.suppressed == 1 and a.cancelled == 1
    assert a.answerable == 9 and a.answered == 8 and a.unanswered == 1
    assert a.answered_within == {60: 5, 180: 7}
    assert a.share_within[60] == pytest.approx(5 / 9)
    assert a.share_within[180] == pytest.approx(7 / 9)
    assert a.meets_target == {60: False, 180: False}
    # answers 10 20 30 40 50 90 180 200 (A6 is 40 s across the spring-forward gap)
    assert a.answer_p50 == pytest.approx(45.0)
    assert a.answer_p90 == pytest.approx(186.0)
    assert a.answer_p99 == pytest.approx(198.6)
    assert a.arrived == 3
    assert a.arrival_within == {30: 1, 45: 1, 60: 2}
    assert a.arrival_share_within[60] == pytest.approx(2 / 3)
    assert a.arrival_p50 == pytest.approx(3000.0)
    # resolves 300 300 600 630 720 2400 4200 4800 (A5 crosses midnight: 12 min)
    assert a.resolved == 8
    assert a.resolve_p50 == pytest.approx(675.0)
    assert a.closed == 9 and a.false_alarms == 2  # A3 no help needed, A5 from record data
    assert a.false_alarm_share == pytest.approx(2 / 9)
    assert a.not_at_home == 1  # A8: closed, but neither false nor left out


def test_groups_local_time_and_dst(known_db: str) -> None:
    with psycopg.connect(known_db) as conn:
        rows = compute_kpis(conn, KpiParams(START, END))
    team = {r.key: r for r in rows if r.dimension == "team"}
    assert team["a"].alerts == 6 and team["a"].answerable == 5
    assert team["a"].answered_within == {60: 4, 180: 5}
    assert team["b"].alerts == 5 and team["b"].answerable == 4
    assert team["b"].answered_within == {60: 1, 180: 2}
    hour = {r.key: r.alerts for r in rows if r.dimension == "hour"}
    # both 02:30s of the autumn night are hour 2; A6 is hour 1; A5 hour 23; A9 hour 0
    assert hour == {
        "0": 1,
        "1": 1,
        "2": 2,
        "9": 1,
        "10": 1,
        "11": 1,
        "12": 1,
        "13": 1,
        "14": 1,
        "23": 1,
    }
    week = {r.key: r.alerts for r in rows if r.dimension == "week"}
    # A9 is Monday 00:30 local (Sunday in UTC): local week 12
    assert week == {"2026-W11": 7, "2026-W12": 1, "2026-W13": 1, "2026-W43": 2}
    month = {r.key: r.alerts for r in rows if r.dimension == "month"}
    assert month == {"2026-03": 9, "2026-10": 2}
    sev = {r.key: r.alerts for r in rows if r.dimension == "severity"}
    assert sev == {"red": 6, "yellow": 5}
    rule = {r.key: r for r in rows if r.dimension == "rule"}
    assert rule["button"].alerts == 4 and rule["button"].cancelled == 1  # A1 A4 A6 A9
    assert rule["bed-exit-no-return"].false_alarm_share == 1.0
    # A7 helped, A8 nobody at home: no false alarm for the rule
    assert rule["inactivity"].not_at_home == 1 and rule["inactivity"].false_alarms == 0
    assert rule["inactivity"].closed == 2 and rule["inactivity"].false_alarm_share == 0.0


def test_team_filter(known_db: str) -> None:
    with psycopg.connect(known_db) as conn:
        rows = compute_kpis(conn, KpiParams(START, END, team="b"))
    assert rows[0].alerts == 5 and rows[0].answered_within == {60: 1, 180: 2}
    assert {r.key for r in rows if r.dimension == "team"} == {"b"}


def test_exceptions_list(known_db: str) -> None:
    with psycopg.connect(known_db) as conn:
        items = exceptions(conn, KpiParams(START, END), now=NOW)
        strict = exceptions(conn, KpiParams(START, END), answer_limit_s=60, now=NOW)
    got = {i["id"]: i["breaches"] for i in items}
    assert got == {
        aid("A4"): ["answer", "arrival"],
        aid("A5"): ["completion"],  # resolved 00:10, after the end of its day
        aid("A11"): ["answer", "completion"],
    }
    a4 = next(i for i in items if i["id"] == aid("A4"))
    assert [r["step"] for r in a4["records"]] == [
        "raised",
        "notified",
        "acknowledged",
        "assigned",
        "accepted",
        "arrived",
        "resolved",
    ]
    assert a4["notes"] == ["call-out delayed: nurse busy"]
    assert set(i["id"] for i in strict) == {aid("A3"), aid("A4"), aid("A5"), aid("A11")}


def test_report_figures_equal_kpis(known_db: str) -> None:
    opts = ReportOptions(start=START, end=END)
    with psycopg.connect(known_db) as conn:
        rep = build_report(conn, opts, now=NOW)
        rows = compute_kpis(conn, opts.params())
    data = to_dict(rep)
    allrow = data["kpis"][0]
    assert allrow["dimension"] == "all"
    assert allrow["share_within"] == {"60s": pytest.approx(5 / 9), "180s": pytest.approx(7 / 9)}
    assert allrow["answer_p90"] == pytest.approx(186.0)
    assert allrow["arrival_share_within"]["30min"] == pytest.approx(1 / 3)
    assert [k["key"] for k in data["kpis"]] == [r.key for r in rows]
    assert len(data["exceptions"]) == 3
    assert rep.answer_times == [10.0, 20.0, 30.0, 40.0, 50.0, 90.0, 180.0, 200.0]
    assert rep.top_residents[0]["resident"] == "r-0001" and rep.top_residents[0]["alerts"] == 3
    lines = to_csv(rep).splitlines()
    head = lines[0].split(",")
    first = dict(zip(head, lines[1].split(","), strict=True))
    assert first["dimension"] == "all" and first["alerts"] == "11"
    assert float(first["share_within_60s"]) == pytest.approx(5 / 9)
    assert float(first["answer_p50_s"]) == pytest.approx(45.0)
    assert first["meets_target_180s"] == "False"
    assert first["false_alarms"] == "2" and first["not_at_home"] == "1"
    assert allrow["not_at_home"] == 1
    html = to_html(rep)
    assert "ikke hjemme" in html  # Bokmål by default (tests/test_report_print.py: English)
    assert len(lines) == 1 + len(rows)


def test_no_alerts_gives_an_empty_all_row(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = compute_kpis(conn, KpiParams(START, END))
    assert len(rows) == 1 and rows[0].alerts == 0 and rows[0].share_within[60] is None
