"""Export of alerts to the VKP (Velferdsteknologisk knutepunkt) as FHIR R4.

Checked against the VKP-R4 profiles in HL7Norway/Velferdsteknologi (commit
9d28b9e, 2025-11-18; tests/data/vkp/ holds the extract the tests check
against). One alert becomes, in a ``transaction`` Bundle, up to three
entries, each a *conditional create* (``POST`` with ``ifNoneExist`` on the
resource's identifier, which is derived from the alert id), so exporting an
alert again creates nothing new on the hub:

- a **DetectedIssue** (profile VkpDetectedIssue): ``code`` is required to be
  from the VKP alert code value set (vkp-alert-code-v090), so every alert gets
  a VKP code (see :func:`vkp_alert_code`); where trygg's catalogue code is not
  that VKP code (trygg's own T.1-T.5, and 3.3/3.4 from the superseded 2021
  numbering) it follows as a second coding in trygg's code system.
  ``severity`` green/yellow/red -> low/moderate/high. (The VKP severity-level
  extension is defined for ``Flag`` only, so it is not used here.)
- an **Encounter** (VkpEncounter), only once staff have acted: the handling,
  with the staff as participants (type from vkp-encounter-mode-v090, which
  the profile requires), reason "hendelsesbasert tilsyn", period
  raised -> closed and status;
- a **Composition** (VkpComposition): the handling record, category
  "Trygghet og mestring", whose ``event`` entries carry the VKP life-cycle
  codes (vkp-composition-event-v090: 0 hendelse meldt = raised, 1 hendelse
  behandles = acknowledged, 4 hendelse til utrykning = assigned, 5 hendelse ok
  utrykning = accepted, 3 hendelse kvittert = resolved or cancelled) with
  their times, and one ``section`` ("sammenstilt tekst") per record.

Check the URIs against the Simplifier IG
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

_VKP = "http://ehelse.no/fhir"
VKP_ALERT_CODE_SYSTEM = f"{_VKP}/CodeSystem/vkp-alert-code-v090"
VKP_EVENT_SYSTEM = f"{_VKP}/CodeSystem/vkp-composition-event-v090"
VKP_CATEGORY_SYSTEM = f"{_VKP}/CodeSystem/vkp-composition-category-v090"
VKP_SECTION_SYSTEM = f"{_VKP}/CodeSystem/vkp-composition-section-v090"
VKP_ENCOUNTER_MODE_SYSTEM = f"{_VKP}/CodeSystem/vkp-encounter-mode-v090"
VKP_ENCOUNTER_REASON_SYSTEM = f"{_VKP}/CodeSystem/vkp-encounter-reason-v090"
PROFILE_DETECTED_ISSUE = f"{_VKP}/StructureDefinition/vkp-DetectedIssue-v090"
PROFILE_ENCOUNTER = f"{_VKP}/StructureDefinition/vkp-Encounter-v090"
PROFILE_COMPOSITION = f"{_VKP}/StructureDefinition/vkp-Composition-v090"
TRYGG_ALERT_CODE_SYSTEM = "urn:trygg:fhir:CodeSystem:alert-code"
TRYGG_RESIDENT_SYSTEM = "urn:trygg:resident"
TRYGG_STAFF_SYSTEM = "urn:trygg:staff"
TRYGG_DEVICE_SYSTEM = "urn:trygg:device"
URI_SYSTEM = "urn:ietf:rfc:3986"  # the identifier system VKP uses, with urn:uuid values
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

SEVERITY = {"green": "low", "yellow": "moderate", "red": "high"}

# vkp-alert-code-v090 (VKP-R4/CodeSystem/vkp-alert-code-v090.codesystem.xml): code -> display.
# 1.x are the medication dispenser's codes since November 2021 (3.x before).
VKP_ALERT_CODES: dict[str, str] = {
    "1": "Elektronisk medisineringsstøtte",
    "1.1": "Ikke utlevert",
    "1.2": "Utlevering forhindret av medisinmangel",
    "1.3": "Mangler utleveringsbekreftelse",
    "1.4": "Melding ikke lest",
    "1.5": "Teknisk feil",
    "1.6": "Pose ikke lest",
    "1.7": "Feil ved rull",
    "1.8": "Rull sitter fast",
    "1.9": "Full skuff",
    "1.10": "Medisin venter",
    "1.11": "Mangler tilstrekkelig mengde medisin",
    "1.12": "Snart tomt for medisin",
    "1.13": "Tomt for medisin",
    "1.14": "Mangler tidsplan",
    "1.15": "Endringskontroll av medisinplan",
    "1.16": "Rull behandlet",
    "1.17": "Batteri lavt",
    "1.18": "Batteri tomt",
    "1.19": "Ikke tilkoblet strøm",
    "1.20": "Ingen kontakt",
    "1.21": "Dispenser åpen",
    "1.22": "Innbrudd",
    "1.23": "Dosett feilplassert",
    "2": "Lokaliseringsteknologi",
    "3": "Trygghetsalarm",
    "4": "Digitalt tilsyn",
    "4.1": "Fall",
    "4.2": "Forlatt sengen",
    "4.3": "Satt seg opp seng",
    "4.4": "Reist seg fra stol",
    "4.5": "Kommet inn rom",
    "4.6": "Forlatt rom",
    "4.7": "Uventet langt opphold",
    "4.8": "Aktivitet rom",
    "4.9": "Inaktivitet",
    "4.10": "Høyt lydnivå",
    "4.11": "Brannalarm",
    "4.12": "Fravær",
    "4.13": "Knappetrykk",
    "4.14": "Snortrekk",
    "4.15": "Dør åpnet",
    "4.16": "Dør lukket",
    "4.17": "Vannalarm",
    "4.18": "Bevegelse",
    "4.19": "Manglende bevegelse",
    "4.20": "Lagt seg seng",
    "4.21": "Forlatt bolig",
    "4.22": "Mislykket brukeranrop",
    "4.23": "Inaktivitet bad",
    "4.24": "Epilepsi",
    "4.25": "Hendelsesbasert kameratilsyn",
    "4.26": "Planlagt kameratilsyn",
    "5": "Digital hjemmeoppfølging",
    "5.1": "Oppsummerende varsel",
    "5.2": "Handling utført",
    "5.2.1": "Måledata rapportert",
    "5.2.2": "Skjemabesvarelse",
    "5.2.3": "Annen handling utført",
    "5.3": "Inaktiv pasient",
    "5.3.1": "Manglende skjemabesvarelse",
    "5.3.2": "Måling ikke rapportert",
    "6": "Elektronisk dørlås",
    "7": "Sykesignalanlegg",
    "7.1": "Inkontinens",
}
# trygg catalogue codes the VKP code system numbers differently: the dispenser
# codes of the 2021-11-02 draft (3.3 -> 1.3, 3.4 -> 1.5), and seizure (4.24).
VKP_CODE: dict[str, str] = {"3.3": "1.3", "3.4": "1.5", "T.5": "4.24"}
# technical alerts of one device kind that have a VKP code of their own:
# the dispenser's "Ingen kontakt" (device offline) and "Batteri lavt".
VKP_DEVICE_CODE: dict[tuple[str, str], str] = {
    ("T.1", "dispenser"): "1.20",
    ("T.2", "dispenser"): "1.17",
}
# any other alert without a VKP code: the VKP category of the device's alerts.
VKP_CATEGORY_BY_KIND: dict[str, str] = {"dispenser": "1", "gps": "2"}
VKP_CATEGORY_DEFAULT = "4"  # Digitalt tilsyn, the category of trygg's sensor and alarm codes

# step -> (VKP life-cycle code, display); the codes of trygg.alerts.lifecycle,
# the displays of vkp-composition-event-v090
VKP_EVENTS: dict[str, tuple[str, str]] = {
    "raised": ("0", "hendelse meldt"),
    "acknowledged": ("1", "hendelse behandles"),
    "assigned": ("4", "hendelse til utrykning"),
    "accepted": ("5", "hendelse ok utrykning"),
    "resolved": ("3", "hendelse kvittert"),
    "cancelled": ("3", "hendelse kvittert"),
}
CATEGORY = {"system": VKP_CATEGORY_SYSTEM, "code": "1", "display": "Trygghet og mestring"}
SECTION = {"system": VKP_SECTION_SYSTEM, "code": "2", "display": "sammenstilt tekst"}
# trygg has no camera or listen-in (encounter modes 0, 1, 3, 4): staff answer by two-way speech.
ENCOUNTER_MODE = {"system": VKP_ENCOUNTER_MODE_SYSTEM, "code": "2", "display": "toveis tale"}
ENCOUNTER_REASON = {
    "system": VKP_ENCOUNTER_REASON_SYSTEM,
    "code": "2",
    "display": "hendelsesbasert tilsyn",
}


def _iso(t: datetime) -> str:
    return t.isoformat()


def _urn(alert_id: str, kind: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.UUID(alert_id), kind)}"


def vkp_alert_code(code: str, device_kind: str | None = None) -> str:
    """The VKP alert code for trygg's catalogue ``code`` on a device of ``device_kind``."""
    if code in VKP_CODE:
        return VKP_CODE[code]
    if device_kind is not None and (code, device_kind) in VKP_DEVICE_CODE:
        return VKP_DEVICE_CODE[code, device_kind]
    if code in VKP_ALERT_CODES:
        return code
    return VKP_CATEGORY_BY_KIND.get(device_kind or "", VKP_CATEGORY_DEFAULT)


def alert_codings(code: str, device_kind: str | None = None) -> list[dict[str, Any]]:
    """The VKP coding of an alert, then trygg's own if it is another code."""
    vkp = vkp_alert_code(code, device_kind)
    codings: list[dict[str, Any]] = [
        {"system": VKP_ALERT_CODE_SYSTEM, "code": vkp, "display": VKP_ALERT_CODES[vkp]}
    ]
    if vkp != code:
        own: dict[str, Any] = {"system": TRYGG_ALERT_CODE_SYSTEM, "code": code}
        if code in DISPLAY:
            own["display"] = DISPLAY[code]
        codings.append(own)
    return codings


def _records(alert: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(alert.get("records") or [])


def detected_issue(alert: Mapping[str, Any]) -> dict[str, Any]:
    aid = str(alert["id"])
    state = alert.get("state")
    status = {"resolved": "final", "cancelled": "cancelled"}.get(str(state), "preliminary")
    kind = alert.get("device_kind")
    res: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": str(uuid.uuid5(uuid.UUID(aid), "DetectedIssue")),
        "meta": {"profile": [PROFILE_DETECTED_ISSUE]},
        "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{aid}"}],
        "status": status,
        "code": {
            "coding": alert_codings(str(alert["code"]), str(kind) if kind else None),
            "text": alert.get("title") or "",
        },
        "severity": SEVERITY[alert["severity"]],
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
            "type": [{"coding": [dict(ENCOUNTER_MODE)]}],
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


def encounter(alert: Mapping[str, Any]) -> dict[str, Any] | None:
    """The handling as an Encounter, or None while no staff have acted.

    VkpEncounter needs at least one participant; an alert that only the system
    handled (still unanswered, or cancelled by a device reset) had no encounter.
    """
    parts = _participants(alert)
    if not parts:
        return None
    aid = str(alert["id"])
    steps = {r["step"] for r in _records(alert)}
    klass = "HH" if "arrived" in steps else "VR"  # home health visit, else remote (phone)
    period: dict[str, Any] = {"start": _iso(alert["raised_at"])}
    closed = _closed_at(alert)
    if closed is not None:
        period["end"] = _iso(closed)
    return {
        "resourceType": "Encounter",
        "id": str(uuid.uuid5(uuid.UUID(aid), "Encounter")),
        "meta": {"profile": [PROFILE_ENCOUNTER]},
        "identifier": [{"system": URI_SYSTEM, "value": _urn(aid, "Encounter")}],
        # staff took part, so it began: finished once the alert is closed
        "status": "finished" if closed is not None else "in-progress",
        "class": {"system": ACT_CODE_SYSTEM, "code": klass},
        "subject": {"identifier": {"system": TRYGG_RESIDENT_SYSTEM, "value": alert["resident"]}},
        "participant": parts,
        "period": period,
        "reasonCode": [{"coding": [dict(ENCOUNTER_REASON)]}],
    }


def _div(text: str) -> str:
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(text)}</p></div>'


def composition(
    alert: Mapping[str, Any], issue_ref: str, encounter_ref: str | None
) -> dict[str, Any]:
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
        if vkp is not None:
            coding = {"system": VKP_EVENT_SYSTEM, "code": vkp[0], "display": vkp[1]}
            events.append(
                {
                    "code": [{"coding": [coding]}],
                    "period": {"start": at, "end": at},
                    "detail": [{"reference": issue_ref}],
                }
            )
        sections.append(
            {
                "title": step,
                "code": {"coding": [dict(SECTION)]},
                "text": {"status": "generated", "div": _div(text)},
            }
        )
    closed = _closed_at(alert)
    res: dict[str, Any] = {
        "resourceType": "Composition",
        "id": str(uuid.uuid5(uuid.UUID(aid), "Composition")),
        "meta": {"profile": [PROFILE_COMPOSITION]},
        "identifier": {"system": URI_SYSTEM, "value": _urn(aid, "Composition")},
        "status": "final" if closed is not None else "preliminary",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "34109-9", "display": "Note"}],
            "text": "Alarm handling",
        },
        "category": [{"coding": [dict(CATEGORY)]}],
        "subject": {"identifier": {"system": TRYGG_RESIDENT_SYSTEM, "value": alert["resident"]}},
        "date": _iso(closed or alert["raised_at"]),
        "author": [{"display": "trygg"}],
        "title": f"Alarm {alert['code']} {alert.get('title') or alert['rule']}".strip(),
        "event": events,
        "section": sections,
    }
    if encounter_ref is not None:
        res["encounter"] = {"reference": encounter_ref}
    return res


def if_none_exist(resource: Mapping[str, Any]) -> str:
    """The conditional-create search of a resource: its (first) identifier."""
    ident = resource["identifier"]
    if isinstance(ident, list):
        ident = ident[0]
    return f"identifier={ident['system']}|{ident['value']}"


def alert_entries(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Bundle entries of one alert: DetectedIssue, Encounter (once staff acted), Composition.

    Each is a conditional create on its identifier (derived from the alert id), so
    a re-export finds the resources made the first time instead of duplicating
    them; references inside the Bundle use the fullUrls, which the hub resolves
    to the resources it created or found.
    """
    aid = str(alert["id"])
    di_ref, enc_ref, comp_ref = (
        _urn(aid, k) for k in ("DetectedIssue", "Encounter", "Composition")
    )
    enc = encounter(alert)
    resources = [(di_ref, detected_issue(alert))]
    if enc is not None:
        resources.append((enc_ref, enc))
    resources.append((comp_ref, composition(alert, di_ref, enc_ref if enc else None)))
    return [
        {
            "fullUrl": url,
            "resource": res,
            "request": {
                "method": "POST",
                "url": res["resourceType"],
                "ifNoneExist": if_none_exist(res),
            },
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
