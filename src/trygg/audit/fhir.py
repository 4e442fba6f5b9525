"""Export of alerts to the VKP (Velferdsteknologisk knutepunkt) as FHIR R4.

One alert becomes, in a ``transaction`` Bundle:

- a **DetectedIssue** (profile VkpDetectedIssue): ``code`` from the VKP alert
  code system (trygg's own technical codes T.1-T.5 from trygg's code system,
  as the profile's binding is *preferred*), ``severity`` green/yellow/red ->
  low/moderate/high, and the VKP severity level 1-3 as an extension;
- an **Encounter** (VkpEncounter): the handling, with its participants (the
  staff who acted), period (raised -> closed) and status;
- a **Composition** (VkpComposition): the handling record, whose ``event``
  and ``section`` entries carry the VKP life-cycle event codes
  (vkp-composition-event-v090: 0 hendelse_meldt = raised, 1
  hendelse_behandles = acknowledged, 4 hendelse_til_utrykning = assigned,
  5 hendelse_ok_utrykning = accepted, 3 hendelse_kvittert = resolved or
  cancelled) with their times and actors.

The URIs are the draft 0.9.0 ones from HL7Norway/Velferdsteknologi
(``VKP-R4/CodeSystem``); check them against the Simplifier IG
(https://simplifier.net/guide/velferdsteknologiskknutepunktvkp-r4) before
connecting to a live hub. The resident is identified by trygg's pseudonym:
the hub integration maps it to a national id behind its own access check.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from trygg.audit.catalogue import DISPLAY

VKP_ALERT_CODE_SYSTEM = "http://ehelse.no/fhir/CodeSystem/vkp-alert-code-v090"
VKP_SEVERITY_SYSTEM = "http://ehelse.no/fhir/CodeSystem/vkp-severity-level-v090"
VKP_EVENT_SYSTEM = "http://ehelse.no/fhir/CodeSystem/vkp-composition-event-v090"
VKP_SEVERITY_EXTENSION = "http://ehelse.no/fhir/StructureDefinition/vkp-severity-level-v090"
PROFILE_DETECTED_ISSUE = "http://ehelse.no/fhir/StructureDefinition/vkp-DetectedIssue-v090"
PROFILE_ENCOUNTER = "http://ehelse.no/fhir/StructureDefinition/vkp-Encounter-v090"
PROFILE_COMPOSITION = "http://ehelse.no/fhir/StructureDefinition/vkp-Composition-v090"
TRYGG_ALERT_CODE_SYSTEM = "urn:trygg:fhir:CodeSystem:alert-code"
TRYGG_RESIDENT_SYSTEM = "urn:trygg:resident"
TRYGG_STAFF_SYSTEM = "urn:trygg:staff"
TRYGG_DEVICE_SYSTEM = "urn:trygg:device"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

SEVERITY = {"green": ("low", "1"), "yellow": ("moderate", "2"), "red": ("high", "3")}
# step -> (VKP life-cycle code, name); the same table as trygg.alerts.lifecycle
VKP_EVENTS: dict[str, tuple[str, str]] = {
    "raised": ("0", "hendelse_meldt"),
    "acknowledged": ("1", "hendelse_behandles"),
    "assigned": ("4", "hendelse_til_utrykning"),
    "accepted": ("5", "hendelse_ok_utrykning"),
    "resolved": ("3", "hendelse_kvittert"),
    "cancelled": ("3", "hendelse_kvittert"),
}


def _iso(t: datetime) -> str:
    return t.isoformat()


def _urn(alert_id: str, kind: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.UUID(alert_id), kind)}"


def alert_code(code: str) -> dict[str, Any]:
    system = TRYGG_ALERT_CODE_SYSTEM if code.startswith("T.") else VKP_ALERT_CODE_SYSTEM
    coding: dict[str, Any] = {"system": system, "code": code}
    if code in DISPLAY:
        coding["display"] = DISPLAY[code]
    return coding


def _records(alert: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(alert.get("records") or [])


def detected_issue(alert: Mapping[str, Any]) -> dict[str, Any]:
    aid = str(alert["id"])
    sev, level = SEVERITY[alert["severity"]]
    state = alert.get("state")
    status = {"resolved": "final", "cancelled": "cancelled"}.get(str(state), "preliminary")
    res: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": str(uuid.uuid5(uuid.UUID(aid), "DetectedIssue")),
        "meta": {"profile": [PROFILE_DETECTED_ISSUE]},
        "extension": [
            {
                "url": VKP_SEVERITY_EXTENSION,
                "valueCoding": {
                    "system": VKP_SEVERITY_SYSTEM,
                    "code": level,
                    "display": alert["severity"],
                },
            }
        ],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{aid}"}],
        "status": status,
        "code": {"coding": [alert_code(str(alert["code"]))], "text": alert.get("title") or ""},
        "severity": sev,
        "patient": {"identifier": {"system": TRYGG_RESIDENT_SYSTEM, "value": alert["resident"]}},
        "identifiedDateTime": _iso(alert["raised_at"]),
        "author": {"display": "trygg"},
        "detail": alert.get("title") or str(alert["rule"]),
    }
    if not res["code"]["text"]:
        del res["code"]["text"]
    if alert.get("device"):
        res["implicated"] = [
            {"identifier": {"system": TRYGG_DEVICE_SYSTEM, "value": alert["device"]}}
        ]
    events = list(alert.get("events") or [])
    if events:
        res["evidence"] = [{"detail": [{"display": f"event {e}"} for e in events]}]
    return res


def _participants(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    seen: list[str] = []
    for r in _records(alert):
        actor = str(r["actor"])
        if actor != "system" and actor not in seen:
            seen.append(actor)
    return [
        {
            "type": [{"coding": [{"system": PARTICIPATION_SYSTEM, "code": "PART"}]}],
            "individual": {
                "identifier": {"system": TRYGG_STAFF_SYSTEM, "value": a},
                "display": a,
            },
        }
        for a in seen
    ]


def _closed_at(alert: Mapping[str, Any]) -> datetime | None:
    for r in reversed(_records(alert)):
        if r["step"] in ("resolved", "cancelled"):
            t: datetime = r["at"]
            return t
    return None


def encounter(alert: Mapping[str, Any]) -> dict[str, Any]:
    aid = str(alert["id"])
    steps = {r["step"] for r in _records(alert)}
    state = str(alert.get("state"))
    status = {"resolved": "finished", "cancelled": "cancelled"}.get(
        state, "in-progress" if "acknowledged" in steps else "planned"
    )
    klass = "HH" if "arrived" in steps else "VR"  # home health visit, else remote (phone)
    period: dict[str, Any] = {"start": _iso(alert["raised_at"])}
    closed = _closed_at(alert)
    if closed is not None:
        period["end"] = _iso(closed)
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": str(uuid.uuid5(uuid.UUID(aid), "Encounter")),
        "meta": {"profile": [PROFILE_ENCOUNTER]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": _urn(aid, "Encounter")}],
        "status": status,
        "class": {"system": ACT_CODE_SYSTEM, "code": klass},
        "subject": {"identifier": {"system": TRYGG_RESIDENT_SYSTEM, "value": alert["resident"]}},
        "period": period,
    }
    parts = _participants(alert)
    if parts:
        res["participant"] = parts
    return res


def _div(text: str) -> str:
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(text)}</p></div>'


def composition(alert: Mapping[str, Any], issue_ref: str, encounter_ref: str) -> dict[str, Any]:
    aid = str(alert["id"])
    events: list[dict[str, Any]] = []
    sections: list[dict[str, Any]] = []
    for r in _records(alert):
        step = str(r["step"])
        at = _iso(r["at"])
        text = f"{at} {step} by {r['actor']}"
        if r.get("note"):
            text += f": {r['note']}"
        data = r.get("data") or {}
        for k in ("reason", "outcome", "assignee"):
            if data.get(k):
                text += f" ({k}: {data[k]})"
        vkp = VKP_EVENTS.get(step)
        section: dict[str, Any] = {
            "title": step,
            "text": {"status": "generated", "div": _div(text)},
        }
        if vkp is not None:
            coding = {"system": VKP_EVENT_SYSTEM, "code": vkp[0], "display": vkp[1]}
            section["code"] = {"coding": [coding]}
            events.append(
                {
                    "code": [{"coding": [coding]}],
                    "period": {"start": at, "end": at},
                    "detail": [{"reference": issue_ref}],
                }
            )
        sections.append(section)
    closed = _closed_at(alert)
    return {
        "resourceType": "Composition",
        "id": str(uuid.uuid5(uuid.UUID(aid), "Composition")),
        "meta": {"profile": [PROFILE_COMPOSITION]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": _urn(aid, "Composition")},
        "status": "final" if closed is not None else "preliminary",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "34109-9", "display": "Note"}],
            "text": "Alarm handling",
        },
        "subject": {"identifier": {"system": TRYGG_RESIDENT_SYSTEM, "value": alert["resident"]}},
        "encounter": {"reference": encounter_ref},
        "date": _iso(closed or alert["raised_at"]),
        "author": [{"display": "trygg"}],
        "title": f"Alarm {alert['code']} {alert.get('title') or alert['rule']}".strip(),
        "event": events,
        "section": sections,
    }


def alert_entries(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The three Bundle entries of one alert."""
    aid = str(alert["id"])
    di_ref, enc_ref, comp_ref = (
        _urn(aid, k) for k in ("DetectedIssue", "Encounter", "Composition")
    )
    resources = [
        (di_ref, detected_issue(alert)),
        (enc_ref, encounter(alert)),
        (comp_ref, composition(alert, di_ref, enc_ref)),
    ]
    return [
        {
            "fullUrl": url,
            "resource": res,
            "request": {"method": "POST", "url": res["resourceType"]},
        }
        for url, res in resources
    ]


def bundle(alerts: Iterable[Mapping[str, Any]], *, now: datetime) -> dict[str, Any]:
    """A transaction Bundle with every alert's DetectedIssue, Encounter and Composition."""
    entries: list[dict[str, Any]] = []
    for a in alerts:
        entries.extend(alert_entries(a))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "transaction",
        "timestamp": _iso(now),
        "entry": entries,
    }


def validate(resource: Mapping[str, Any]) -> None:
    """Validate structurally with the fhir.resources R4B models (raises on error)."""
    from fhir.resources.R4B import get_fhir_model_class

    cls = get_fhir_model_class(str(resource["resourceType"]))
    cls.model_validate(dict(resource))
