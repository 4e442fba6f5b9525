"""Grafana dashboards: JSON structure, and every panel's SQL run against the real
database filled with simulator events and synthetic alerts (issue 6).

The latency dashboard's PromQL panels (data source ``trygg-prometheus``) are
checked against a real /metrics scrape of ``trygg run`` in
tests/test_latency_metrics.py: no Prometheus server runs here."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO
from trygg.audit.synth import synth_history
from trygg.model import DeviceKind, Event, EventType, Room
from trygg.registry import read_registry_text
from trygg.simulate.generate import generate
from trygg.simulate.homes import build_homes
from trygg.store.audit import copy_alert_history
from trygg.store.events import StoredEvent, write_events
from trygg.store.registry import save_registry

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
# The simulator's four teams in two districts (issue 19).
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
DISTRICT_DASHBOARDS = {"response-times", "alert-volume", "open-alerts"}
UID = "trygg-timescaledb"
PROM_UID = "trygg-prometheus"
KNOWN_MACROS = {"$__timeFilter", "$__timeGroupAlias", "$__timeFrom", "$__timeTo", "$__interval"}
START = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # across the spring-forward night
END = START + timedelta(days=1)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _sqls() -> list[tuple[str, int, str]]:
    return [
        (p.name, panel["id"], t["rawSql"])
        for p in DASHBOARDS
        for panel in _panels(_load(p))
        for t in panel.get("targets", [])
        if "rawSql" in t
    ]


def promql() -> list[tuple[str, int, str]]:
    """(dashboard, panel id, expression) of every Prometheus panel."""
    return [
        (p.name, panel["id"], t["expr"])
        for p in DASHBOARDS
        for panel in _panels(_load(p))
        for t in panel.get("targets", [])
        if "expr" in t
    ]


# ------------------------------------------------------------------ macros


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    if not m:
        if interval.strip() == "$__interval":
            return 3600
        raise ValueError(f"unknown interval {interval!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# The district variable's "All" (its allValue): every stored district.
ALL_DISTRICTS = "SELECT id FROM districts"


def expand(sql: str, start: datetime, end: datetime, district: list[str] | None = None) -> str:
    """Grafana's PostgreSQL macros and the ``district`` variable, as the data source
    expands them: the chosen districts quoted and comma-separated, or with All
    the variable's allValue."""
    f, t = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    chosen = ALL_DISTRICTS if district is None else ", ".join(f"'{d}'" for d in district)
    sql = sql.replace("$district", chosen)

    def group(m: re.Match[str]) -> str:
        col, interval = (x.strip() for x in m.group(1).rsplit(",", 1))
        s = _seconds(interval)
        return f'to_timestamp(floor(extract(epoch FROM {col}) / {s}) * {s}) AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^()]*(?:\([^()]*\))?[^()]*)\)", group, sql)
    sql = re.sub(r"\$__timeFilter\(([^()]+)\)", rf"\1 BETWEEN {f} AND {t}", sql)
    sql = sql.replace("$__timeFrom()", f"{f}::timestamptz").replace(
        "$__timeTo()", f"{t}::timestamptz"
    )
    assert "$" not in sql, f"unexpanded macro or variable in {sql}"
    return sql


# ------------------------------------------------------------------ structure


def test_there_are_the_six_dashboards() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "latency",
        "response-times",
        "alert-volume",
        "open-alerts",
        "device-health",
        "ingest-health",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_structure(path: Path) -> None:
    d = _load(path)
    assert d["uid"].startswith("trygg-") and d["title"] and d["panels"]
    variables = {v["name"] for v in d.get("templating", {}).get("list", [])}
    for v in d.get("templating", {}).get("list", []):  # the district: from the database
        assert v["name"] == "district" and v["type"] == "query"
        assert v["datasource"] == {"type": "grafana-postgresql-datasource", "uid": UID}
        assert v["multi"] and v["includeAll"] and v["allValue"] == ALL_DISTRICTS
    ids = [p["id"] for p in _panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for p in _panels(d):
        prometheus = p["datasource"] == {"type": "prometheus", "uid": PROM_UID}
        postgres = {"type": "grafana-postgresql-datasource", "uid": UID}
        assert prometheus or p["datasource"] == postgres
        g = p["gridPos"]
        assert set(g) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in g.values())
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & occupied, f"panel {p['id']} overlaps another"
        occupied |= cells
        assert p["targets"], f"panel {p['id']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            if prometheus:  # PromQL: checked against /metrics in test_latency_metrics.py
                assert t["expr"] and "rawSql" not in t
                continue
            assert t["datasource"]["uid"] == UID and t["rawQuery"] is True
            assert t["format"] in ("time_series", "table")
            macros = set(re.findall(r"\$__\w+", t["rawSql"]))
            assert macros <= KNOWN_MACROS, f"unknown macros {macros - KNOWN_MACROS}"
            used = set(re.findall(r"\$(?!__)(\w+)", t["rawSql"]))
            assert used <= variables, f"template variables {used - variables} are not defined"
            if t["format"] == "time_series":
                assert "$__timeGroupAlias" in t["rawSql"]


def test_provisioning_declares_the_data_source() -> None:
    import yaml

    ds = yaml.safe_load((REPO / "dashboards/provisioning/datasources/trygg.yaml").read_text())
    assert ds["datasources"][0]["uid"] == UID
    assert ds["datasources"][0]["type"] == "grafana-postgresql-datasource"
    assert [(s["uid"], s["type"]) for s in ds["datasources"][1:]] == [(PROM_UID, "prometheus")]


# ------------------------------------------------------------------ SQL


@pytest.fixture(scope="module")
def filled(pg_server: Any) -> str:
    from tests.conftest import new_database
    from trygg.store.migrate import migrate

    url = new_database(pg_server, "dash")
    migrate(url)
    registry, homes = build_homes(6, seed=4)
    kinds = {d.id: (h.resident, d.kind, d.room) for h in homes for d in h.devices}
    batch = []
    received = START
    for ev in generate(homes, START, END, seed=4):
        if ev.malformed or ev.duplicate or ev.device not in kinds:
            continue
        resident, kind, room = kinds[ev.device]
        t = datetime.fromisoformat(ev.time)
        received = t + timedelta(seconds=1)
        batch.append(
            StoredEvent(
                Event(
                    ev.device,
                    ev.id,
                    EventType(ev.type),
                    t,
                    resident,
                    DeviceKind(kind),
                    Room(ev.room) if ev.room else room,
                    ev.value,
                ),
                received,
                late=False,
            )
        )
    residents = [(h.resident, h.team) for h in homes]
    items = list(synth_history(residents, START, END, 300, seed=4))
    with psycopg.connect(url) as conn:
        save_registry(conn, registry)
        save_registry(conn, read_registry_text(DISTRICTS))  # the simulator's teams in two
        write_events(conn, batch)
        copy_alert_history(conn, [a for a, _ in items], [r for _, rs in items for r in rs])
        conn.execute(
            "UPDATE devices SET last_seen = %s, online = true,"
            " battery = 10 + (abs(hashtext(id)) %% 90)",
            [END],
        )
        conn.execute(
            "UPDATE devices SET online = false WHERE id IN"
            " (SELECT id FROM devices ORDER BY id LIMIT 2)"
        )
        for i in range(5):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason, device)"
                " VALUES (%s, 'trygg/demo/devices/x/events', 'x', %s, 'x')",
                [START + timedelta(hours=i), "not JSON" if i % 2 else "unknown type"],
            )
        conn.commit()
    assert len(batch) > 1000
    return url


# panels whose result may be empty on a day of simulated data
MAY_BE_EMPTY = {
    "Open alerts",
    "Open alerts by team and state",
    "Device-offline alerts",
    "Breaches: not answered within 180 s",
    "District comparison: open alerts",
}


@pytest.mark.parametrize("name,pid,sql", _sqls(), ids=lambda v: str(v)[:40])
def test_panel_sql_runs_on_simulated_data(filled: str, name: str, pid: int, sql: str) -> None:
    with psycopg.connect(filled) as conn:
        conn.execute("SET statement_timeout = '20s'")
        cur = conn.execute(expand(sql, START - timedelta(hours=1), END + timedelta(hours=1)))
        rows = cur.fetchall()
        assert cur.description is not None
    title = next(p["title"] for p in _panels(_load(REPO / "dashboards" / name)) if p["id"] == pid)
    if title not in MAY_BE_EMPTY:
        assert rows, f"{name} panel {pid} ({title}) returned nothing"
        if cur.description[0].name == "time":
            assert all(isinstance(r[0], datetime) for r in rows)


# ------------------------------------------------------------------ districts


def _panel(dashboard: str, title: str) -> str:
    (sql,) = [
        t["rawSql"]
        for p in _panels(_load(REPO / "dashboards" / f"{dashboard}.json"))
        if p["title"] == title
        for t in p["targets"]
    ]
    return sql


def _run(url: str, sql: str, district: list[str] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(expand(sql, START - timedelta(hours=1), END, district)).fetchall()


def test_the_alert_dashboards_have_the_district_variable_and_a_comparison() -> None:
    for path in DASHBOARDS:
        d = _load(path)
        names = [v["name"] for v in d["templating"]["list"]]
        titles = [p["title"] for p in _panels(d)]
        if path.stem in DISTRICT_DASHBOARDS:
            assert names == ["district"]
            assert [t for t in titles if t.startswith("District comparison")], path.stem
            for p in _panels(d):  # every alert panel is of the chosen districts
                for t in p["targets"]:
                    if re.search(r"\bFROM alerts\b", t["rawSql"]):
                        assert "$district" in t["rawSql"], (path.stem, p["title"])
        else:
            assert names == []


def test_district_comparison_against_sql_computed_here(filled: str) -> None:
    """Each district's answerable alerts, answers within 60 s and median answer
    time as the panel shows them, against the same figures from the records."""
    with psycopg.connect(filled) as conn:
        expected = conn.execute(
            "WITH x AS ("
            " SELECT t.district, a.id, a.raised_at,"
            "  (SELECT min(at) FROM alert_records r WHERE r.alert_id = a.id"
            "    AND r.step = 'acknowledged') AS ack"
            " FROM alerts a JOIN residents res ON res.id = a.resident"
            " JOIN teams t ON t.id = res.team"
            " WHERE a.raised_at BETWEEN %s AND %s AND NOT a.shadow AND NOT a.suppressed"
            " AND NOT EXISTS (SELECT 1 FROM alert_records c WHERE c.alert_id = a.id"
            "   AND c.step = 'cancelled'))"
            " SELECT district, count(*), count(*) FILTER (WHERE ack - raised_at <= '60 s'),"
            " percentile_disc(0.5) WITHIN GROUP (ORDER BY ack - raised_at)"
            " FROM x GROUP BY 1 ORDER BY 1",
            [START - timedelta(hours=1), END],
        ).fetchall()
    rows = _run(filled, _panel("response-times", "District comparison: answer and arrival times"))
    assert [r[0] for r in rows] == ["grorud", "stovner"] == [e[0] for e in expected]
    for r, (_d, n, within, median) in zip(rows, expected, strict=True):
        assert r[1] == n > 0
        assert float(r[2]) == round(100.0 * within / n, 1)
        # percentile_cont interpolates, percentile_disc does not: within a second
        assert abs(float(r[5]) - median.total_seconds()) <= 1.0
    # one district chosen: that district's row only
    one = _run(filled, _panel("response-times", "District comparison: answer and arrival times"),
               ["grorud"])  # fmt: skip
    assert one == [rows[0]]


def test_the_district_variable_filters_every_alert_panel(filled: str) -> None:
    """The two districts' alert counts add up to All's, and each is the count of
    its teams' alerts (from the registry text, not the database)."""
    teams = {t.id: t.district for t in read_registry_text(DISTRICTS).teams}
    sql = _panel("alert-volume", "Alerts")
    ((total,),) = _run(filled, sql)
    got = {d: _run(filled, sql, [d])[0][0] for d in ("grorud", "stovner")}
    with psycopg.connect(filled) as conn:
        per_team = conn.execute(
            "SELECT team, count(*) FROM alerts WHERE raised_at BETWEEN %s AND %s AND NOT shadow"
            " GROUP BY team",
            [START - timedelta(hours=1), END],
        ).fetchall()
    want: dict[str, int] = {"grorud": 0, "stovner": 0}
    for team, n in per_team:
        want[teams[team]] += n
    assert got == want and sum(got.values()) == total > 0
    assert _run(filled, sql, ["default"]) == [(0,)]  # no team is left in the default district
    volume = _run(
        filled, _panel("alert-volume", "District comparison: alert volume and false alarms")
    )
    assert [(r[0], r[1]) for r in volume] == sorted(want.items())
