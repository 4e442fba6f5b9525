"""VKP export: FHIR R4 Bundles validated with the fhir.resources R4B models (issue 6)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import trygg_cli
from tests.test_kpi import END, START, load_known
from trygg.audit import fhir
from trygg.audit.catalogue import FALLBACK, standard_rules

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
STANDARD_CODES = {
    "4.1",
    "4.13",
    "4.14",
    "4.11",
    "4.17",
    "4.2",
    "4.21",
    "4.9",
    "4.23",
    "3.3",
    "3.4",
    "T.1",
    "T.2",
    "T.3",
    "T.4",
    "T.5",
}


def _alert(rule: str, code: str, severity: str, steps: list[str], state: str) -> dict[str, Any]:
    aid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fhir/{rule}/{state}"))
    recs = []
    for i, s in enumerate(["raised", *steps]):
        data: dict[str, Any] = {}
        if s == "resolved":
            data = {"outcome": "helped"}
        if s == "cancelled":
            data = {"reason": "false_alarm"}
        recs.append(
            {
                "step": s,
                "at": T0 + timedelta(seconds=30 * i),
                "actor": "system" if s in ("raised", "notified") else "nurse-7",
                "note": "on the floor, unhurt" if s == "arrived" else None,
                "data": data,
            }
        )
    return {
        "id": aid,
        "resident": "r-0042",
        "team": "stovner-nord",
        "rule": rule,
        "code": code,
        "severity": severity,
        "title": f"{rule} alert",
        "events": ["e-000001"],
        "device": "fall-0042",
        "raised_at": T0,
        "state": state,
        "records": recs,
    }


FULL = ["notified", "acknowledged", "assigned", "accepted", "arrived", "resolved"]


def test_catalogue_has_the_standard_codes() -> None:
    assert {r.code for r in standard_rules()} >= STANDARD_CODES
    assert {c for c, _, _ in FALLBACK.values()} == STANDARD_CODES


@pytest.mark.parametrize("rule", standard_rules(), ids=lambda r: f"{r.rule}-{r.code}")
@pytest.mark.parametrize("lifecycle", ["resolved", "cancelled", "open"])
def test_every_standard_code_exports_valid_fhir(rule: Any, lifecycle: str) -> None:
    steps = {"resolved": FULL, "cancelled": ["notified", "cancelled"], "open": ["notified"]}
    a = _alert(
        rule.rule,
        rule.code,
        rule.severity,
        steps[lifecycle],
        lifecycle if lifecycle != "open" else "notified",
    )
    b = fhir.bundle([a], now=T0)
    fhir.validate(b)  # the whole Bundle, with the resources inside
    for e in b["entry"]:
        fhir.validate(e["resource"])
    di, enc, comp = (e["resource"] for e in b["entry"])
    coding = di["code"]["coding"][0]
    assert coding["code"] == rule.code
    assert coding["system"] == (
        fhir.TRYGG_ALERT_CODE_SYSTEM if rule.code.startswith("T.") else fhir.VKP_ALERT_CODE_SYSTEM
    )
    assert di["severity"] == {"green": "low", "yellow": "moderate", "red": "high"}[rule.severity]
    assert (
        di["extension"][0]["valueCoding"]["code"]
        == {"green": "1", "yellow": "2", "red": "3"}[rule.severity]
    )
    codes = [ev["code"][0]["coding"][0]["code"] for ev in comp["event"]]
    expected = {"resolved": ["0", "1", "4", "5", "3"], "cancelled": ["0", "3"], "open": ["0"]}
    assert codes == expected[lifecycle]
    assert all(
        ev["code"][0]["coding"][0]["system"] == fhir.VKP_EVENT_SYSTEM for ev in comp["event"]
    )
    assert comp["encounter"]["reference"] == b["entry"][1]["fullUrl"]
    assert (
        enc["status"]
        == {"resolved": "finished", "cancelled": "cancelled", "open": "planned"}[lifecycle]
    )


def test_export_cli_from_the_database(db: str, tmp_path: Any) -> None:
    load_known(db)
    out = tmp_path / "bundles"
    out.mkdir()
    trygg_cli(
        "audit",
        "export-fhir",
        "--from",
        START.date().isoformat(),
        "--to",
        END.date().isoformat(),
        "--out",
        str(out),
        "--validate",
        env={"TRYGG_DATABASE_URL": db},
    )
    files = sorted(out.glob("*.json"))
    assert len(files) == 11  # the shadow alert is not exported
    for f in files:
        fhir.validate(json.loads(f.read_text()))
    single = tmp_path / "all.json"
    trygg_cli(
        "audit",
        "export-fhir",
        "--from",
        "2026-03-01",
        "--to",
        "2026-11-01",
        "--team",
        "b",
        "--out",
        str(single),
        env={"TRYGG_DATABASE_URL": db},
    )
    b = json.loads(single.read_text())
    assert b["type"] == "transaction" and len(b["entry"]) == 3 * 5
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (12,)
