"""VKP export: FHIR R4 Bundles validated with the fhir.resources R4B models (issue 6) and
against the VKP-R4 profiles' constraints (issue 14, tests/vkp_profiles.py)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests import vkp_profiles
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


# The VKP code each standard code is exported with (vkp-alert-code-v090 at HEAD of
# HL7Norway/Velferdsteknologi; the test alerts' device kind is unknown, so a
# technical alert gets the category "4 Digitalt tilsyn").
VKP_CODE_OF = {
    "3.3": "1.3",
    "3.4": "1.5",
    "T.5": "4.24",
    "T.1": "4",
    "T.2": "4",
    "T.3": "4",
    "T.4": "4",
}
LIFECYCLES = {
    # name: (steps after raised, alert state)
    "resolved": (FULL, "resolved"),
    "cancelled": (["notified", "cancelled"], "cancelled"),
    "open": (["notified"], "notified"),
    "answered": (["notified", "acknowledged"], "acknowledged"),
    "reset": (["notified", "cancelled"], "cancelled"),  # cancelled by the system
}


def _lifecycle_alert(rule: Any, lifecycle: str) -> dict[str, Any]:
    steps, state = LIFECYCLES[lifecycle]
    a = _alert(rule.rule, rule.code, rule.severity, steps, state)
    if lifecycle == "reset":
        for r in a["records"]:
            r["actor"] = "system"
    return a


def assert_vkp_conformant(b: dict[str, Any]) -> None:
    """Structure (fhir.resources), the VKP profiles' constraints, and the transaction's wiring."""
    fhir.validate(b)  # the whole Bundle, with the resources inside
    full_urls = {e["fullUrl"] for e in b["entry"]}
    for e in b["entry"]:
        res = e["resource"]
        fhir.validate(res)
        assert vkp_profiles.check(res) == []
        # conditional create on the resource's own identifier
        ident = res["identifier"][0] if isinstance(res["identifier"], list) else res["identifier"]
        assert e["request"] == {
            "method": "POST",
            "url": res["resourceType"],
            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
        }
        # every reference inside the Bundle points at an entry of it
        for ref in _references(res):
            if ref.startswith("urn:uuid:"):
                assert ref in full_urls


def _references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for x in node for r in _references(x)]
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for v in node.values() for r in _references(v)]
    return []


@pytest.mark.parametrize("rule", standard_rules(), ids=lambda r: f"{r.rule}-{r.code}")
@pytest.mark.parametrize("lifecycle", list(LIFECYCLES))
def test_every_standard_code_exports_valid_vkp_fhir(rule: Any, lifecycle: str) -> None:
    a = _lifecycle_alert(rule, lifecycle)
    b = fhir.bundle([a], now=T0)
    assert_vkp_conformant(b)
    res = {e["resource"]["resourceType"]: e["resource"] for e in b["entry"]}
    di, comp = res["DetectedIssue"], res["Composition"]
    vkp, *own = di["code"]["coding"]
    assert vkp["system"] == fhir.VKP_ALERT_CODE_SYSTEM
    in_vkp = rule.code in vkp_profiles.code_system(fhir.VKP_ALERT_CODE_SYSTEM)
    # a technical code VKP does not know (a new T.n too) gets the category
    assert vkp["code"] == VKP_CODE_OF.get(rule.code, rule.code if in_vkp else "4")
    # trygg's own code follows when the VKP code is another
    assert [(c["system"], c["code"]) for c in own] == (
        [] if vkp["code"] == rule.code else [(fhir.TRYGG_ALERT_CODE_SYSTEM, rule.code)]
    )
    assert di["severity"] == {"green": "low", "yellow": "moderate", "red": "high"}[rule.severity]
    assert "extension" not in di  # the VKP severity-level extension is for Flag only
    codes = [ev["code"][0]["coding"][0]["code"] for ev in comp["event"]]
    expected = {
        "resolved": ["0", "1", "4", "5", "3"],
        "cancelled": ["0", "3"],
        "open": ["0"],
        "answered": ["0", "1"],
        "reset": ["0", "3"],
    }
    assert codes == expected[lifecycle]
    assert [c["code"] for c in comp["category"][0]["coding"]] == ["1"]  # Trygghet og mestring
    if lifecycle in ("open", "reset"):  # no staff acted: no encounter
        assert set(res) == {"DetectedIssue", "Composition"}
        assert "encounter" not in comp
        return
    enc = res["Encounter"]
    assert comp["encounter"]["reference"] == next(
        e["fullUrl"] for e in b["entry"] if e["resource"] is enc
    )
    assert enc["status"] == ("in-progress" if lifecycle == "answered" else "finished")
    assert [p["individual"]["identifier"]["value"] for p in enc["participant"]] == ["nurse-7"]
    assert enc["participant"][0]["type"] == [{"coding": [fhir.ENCOUNTER_MODE]}]
    assert enc["reasonCode"] == [{"coding": [fhir.ENCOUNTER_REASON]}]
    assert enc["class"]["code"] == ("HH" if lifecycle == "resolved" else "VR")


def test_vkp_alert_codes_are_the_code_system() -> None:
    """fhir.py's table is the code system of the profile's required binding, code and display."""
    sd = vkp_profiles.extract()["structureDefinitions"][fhir.PROFILE_DETECTED_ISSUE]
    (binding,) = [e["binding"] for e in sd["elements"] if e["id"] == "DetectedIssue.code"]
    assert binding["strength"] == "required"
    allowed = vkp_profiles.value_set(binding["valueSet"])
    assert {(fhir.VKP_ALERT_CODE_SYSTEM, c) for c in fhir.VKP_ALERT_CODES} == allowed
    assert vkp_profiles.code_system(fhir.VKP_ALERT_CODE_SYSTEM) == fhir.VKP_ALERT_CODES
    for c in [
        *fhir.VKP_CODE.values(),
        *fhir.VKP_DEVICE_CODE.values(),
        *fhir.VKP_CATEGORY_BY_KIND.values(),
        fhir.VKP_CATEGORY_DEFAULT,
    ]:
        assert c in fhir.VKP_ALERT_CODES
    # trygg's codes that are VKP codes mean the same thing there
    names = vkp_profiles.code_system(fhir.VKP_ALERT_CODE_SYSTEM)
    assert names["1.3"] == "Mangler utleveringsbekreftelse"  # trygg 3.3 dose not confirmed
    assert names["1.5"] == "Teknisk feil"  # trygg 3.4 dispenser fault
    assert names["1.20"] == "Ingen kontakt" and names["1.17"] == "Batteri lavt"
    assert names["4.24"] == "Epilepsi"  # trygg T.5 seizure


@pytest.mark.parametrize(
    ("code", "kind", "vkp"),
    [
        ("T.1", "dispenser", "1.20"),  # device offline: "Ingen kontakt"
        ("T.2", "dispenser", "1.17"),  # battery low: "Batteri lavt"
        ("3.4", "dispenser", "1.5"),
        ("3.3", "dispenser", "1.3"),
        ("T.1", "bed", "4"),
        ("T.2", "button", "4"),
        ("T.2", "gps", "2"),
        ("T.3", "thermometer", "4"),
        ("T.1", None, "4"),
        ("T.9", "dispenser", "1"),  # a technical code VKP does not know, on a dispenser
        ("4.1", "fall", "4.1"),
        ("4.15", "door", "4.15"),  # a site's own rule with a VKP code
    ],
)
def test_device_kind_picks_the_vkp_code(code: str, kind: str | None, vkp: str) -> None:
    assert fhir.vkp_alert_code(code, kind) == vkp
    a = _alert("device-offline", code, "yellow", FULL, "resolved")
    if kind is not None:
        a["device_kind"] = kind
    b = fhir.bundle([a], now=T0)
    assert_vkp_conformant(b)
    codings = b["entry"][0]["resource"]["code"]["coding"]
    assert [(c["system"], c["code"]) for c in codings] == [
        (fhir.VKP_ALERT_CODE_SYSTEM, vkp),
        *([] if vkp == code else [(fhir.TRYGG_ALERT_CODE_SYSTEM, code)]),
    ]


def _hub_transaction(store: dict[str, list[dict[str, Any]]], b: dict[str, Any]) -> list[str]:
    """A FHIR server's conditional create, as the spec has it: per entry, search
    ``ifNoneExist``; no match -> create (201), one match -> nothing (200)."""
    statuses = []
    for e in b["entry"]:
        req = e["request"]
        assert req["method"] == "POST"
        name, _, token = req["ifNoneExist"].partition("=")
        assert name == "identifier"
        system, _, value = token.partition("|")
        kept = store.setdefault(req["url"], [])
        matches = [
            r
            for r in kept
            if any(
                i["system"] == system and i["value"] == value
                for i in (
                    r["identifier"] if isinstance(r["identifier"], list) else [r["identifier"]]
                )
            )
        ]
        assert len(matches) <= 1
        if matches:
            statuses.append("200")
        else:
            kept.append(e["resource"])
            statuses.append("201")
    return statuses


def test_reexport_duplicates_nothing() -> None:
    alerts = [_alert(r.rule, r.code, r.severity, FULL, "resolved") for r in standard_rules()[:4]]
    first = fhir.bundle(alerts, now=T0)
    again = fhir.bundle(alerts, now=T0 + timedelta(days=1))
    assert first["id"] != again["id"]
    assert [e["request"] for e in first["entry"]] == [e["request"] for e in again["entry"]]
    assert [e["fullUrl"] for e in first["entry"]] == [e["fullUrl"] for e in again["entry"]]
    hub: dict[str, list[dict[str, Any]]] = {}
    assert set(_hub_transaction(hub, first)) == {"201"}
    assert set(_hub_transaction(hub, again)) == {"200"}
    assert {k: len(v) for k, v in hub.items()} == {
        "DetectedIssue": 4,
        "Encounter": 4,
        "Composition": 4,
    }
    # every resource has an identifier of its own, so one alert's three never match each other
    idents = [e["request"]["ifNoneExist"] for e in first["entry"]]
    assert len(set(idents)) == len(idents)


def test_checker_finds_the_old_gaps() -> None:
    """The profile checker is not vacuous: the shapes trygg used to send fail it."""
    a = _alert("device-offline", "T.1", "yellow", ["notified", "cancelled"], "cancelled")
    b = fhir.bundle([a], now=T0)
    di, enc, comp = (copy.deepcopy(e["resource"]) for e in b["entry"])
    di["extension"] = [
        {
            "url": "http://ehelse.no/fhir/StructureDefinition/vkp-severity-level-v090",
            "valueCoding": {
                "system": "http://ehelse.no/fhir/CodeSystem/vkp-severity-level-v090",
                "code": "2",
            },
        }
    ]
    di["code"]["coding"] = [{"system": fhir.TRYGG_ALERT_CODE_SYSTEM, "code": "T.1"}]
    problems = "\n".join(vkp_profiles.check(di))
    assert "is used on DetectedIssue; its context is Flag" in problems
    assert "valueCoding, the profile allows valueCodeableConcept" in problems
    assert "no coding from http://ehelse.no/fhir/ValueSet/vkp-alert-code-v090" in problems
    di["code"]["coding"] = [{"system": fhir.VKP_ALERT_CODE_SYSTEM, "code": "3.10"}]
    assert "'3.10' is not a code of" in "\n".join(vkp_profiles.check(di))

    enc["participant"][0]["type"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "PART",
                }
            ]
        }
    ]
    assert "Encounter.participant.type: no coding from" in "\n".join(vkp_profiles.check(enc))
    del enc["participant"]
    assert "Encounter.participant: 0 values, the profile requires 1" in vkp_profiles.check(enc)[0]

    comp["event"][0]["code"][0]["coding"][0]["display"] = "hendelse_meldt"  # the v06 display
    del comp["category"]
    problems = "\n".join(vkp_profiles.check(comp))
    assert "Composition.category: 0 values, the profile requires 1" in problems
    assert "display 'hendelse_meldt'" in problems and "is not 'hendelse meldt'" in problems


def test_extract_names_its_source() -> None:
    src = vkp_profiles.extract()["source"]
    assert src["repository"] == "HL7Norway/Velferdsteknologi"
    assert len(src["commit"]) == 40
    data = vkp_profiles.extract()
    for part in ("structureDefinitions", "valueSets", "codeSystems"):
        for item in data[part].values():
            assert item["path"].startswith("VKP-R4/")


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
    assert b["type"] == "transaction"
    assert_vkp_conformant(b)
    kinds = [e["resource"]["resourceType"] for e in b["entry"]]
    # team b: 5 alerts; staff acted on 3 (the cancelled water alert and the open
    # pull cord alert only the system touched: no Encounter)
    assert kinds.count("DetectedIssue") == kinds.count("Composition") == 5
    assert kinds.count("Encounter") == 3
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (12,)


def test_export_from_the_database_knows_the_device_kind(db: str) -> None:
    """A dispenser's technical alert is exported with the dispenser's own VKP code:
    the export reads each alert's device kind from the registry."""
    from trygg.store.alert_writes import insert_alert
    from trygg.store.audit import alerts_for_export

    with psycopg.connect(db) as conn:
        conn.execute(
            "INSERT INTO residents (id, team, timezone) VALUES ('r-77', 'a', 'Europe/Oslo')"
        )
        conn.execute(
            "INSERT INTO devices (id, resident, kind, heartbeat)"
            " VALUES ('disp-77', 'r-77', 'dispenser', '5 minutes'),"
            " ('btn-77', 'r-77', 'button', '5 minutes')"
        )
        for n, device in enumerate(["disp-77", "btn-77"]):
            insert_alert(
                conn,
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"kind/{device}")),
                resident="r-77",
                team="a",
                rule="device-offline",
                catalogue_version="2026.1",
                code="T.1",
                severity="yellow",
                events=[],
                raised_at=T0 + timedelta(minutes=n),
                state="raised",
                device=device,
            )
        rows = alerts_for_export(conn, T0, T0 + timedelta(hours=1))
    assert [r["device_kind"] for r in rows] == ["dispenser", "button"]
    b = fhir.bundle(rows, now=T0)
    assert_vkp_conformant(b)
    issues = [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "DetectedIssue"]
    assert [i["code"]["coding"][0]["code"] for i in issues] == [
        fhir.vkp_alert_code("T.1", "dispenser"),
        fhir.vkp_alert_code("T.1", "button"),
    ]
    assert fhir.vkp_alert_code("T.1", "dispenser") != fhir.vkp_alert_code("T.1", "button")
