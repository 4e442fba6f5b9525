"""Events and alerts in plain words, Norwegian (bokmål) and English.

The console shows a resident's recent events as sentences a nurse reads at a
glance, not as event types.
"""

from __future__ import annotations

import re
from typing import Any

ROOMS = {
    "bedroom": ("soverommet", "the bedroom"),
    "bathroom": ("badet", "the bathroom"),
    "kitchen": ("kjøkkenet", "the kitchen"),
    "livingroom": ("stua", "the living room"),
    "hallway": ("gangen", "the hallway"),
    "entrance": ("inngangen", "the entrance"),
}

EVENTS: dict[str, tuple[str, str]] = {
    "button.pressed": ("Trykket på alarmknappen", "Pressed the alarm button"),
    "pullcord.pulled": ("Trakk i alarmsnoren", "Pulled the alarm cord"),
    "fall.detected": ("Fall oppdaget", "Fall detected"),
    "fall.cancelled": ("Fallalarm avbrutt", "Fall alarm cancelled"),
    "alarm.reset": ("Alarm tilbakestilt på stedet", "Alarm reset on site"),
    "bed.occupied": ("La seg i sengen", "Got into bed"),
    "bed.vacant": ("Sto opp av sengen", "Got out of bed"),
    "chair.occupied": ("Satte seg i stolen", "Sat down in the chair"),
    "chair.vacant": ("Reiste seg fra stolen", "Got up from the chair"),
    "door.opened": ("Døren ble åpnet", "The door was opened"),
    "door.closed": ("Døren ble lukket", "The door was closed"),
    "motion.detected": ("Bevegelse", "Movement"),
    "smoke.detected": ("Røyk oppdaget", "Smoke detected"),
    "water.detected": ("Vannlekkasje oppdaget", "Water leak detected"),
    "seizure.detected": ("Anfall oppdaget", "Seizure detected"),
    "temperature": ("Temperatur", "Temperature"),
    "dose.taken": ("Tok medisinen", "Took the medicine"),
    "dose.missed": ("Medisin ikke tatt", "Medicine not taken"),
    "dispenser.fault": ("Feil på medisindispenseren", "Medicine dispenser fault"),
    "battery": ("Batterinivå", "Battery level"),
    "heartbeat": ("Enheten meldte seg", "Device checked in"),
    "location": ("Posisjon", "Location"),
    "alarm.aborted": ("Alarmenheten avbrøt alarmen", "The alarm unit aborted the alarm"),
    "alarm.cancelled": ("Brukeren avbrøt alarmen", "The resident cancelled the alarm"),
    "co.detected": ("Karbonmonoksid (CO) oppdaget", "Carbon monoxide detected"),
    "gas.detected": ("Gass oppdaget", "Gas detected"),
    "heat.detected": ("Varmedetektor utløst", "Heat detector alarm"),
    "wandering.detected": ("Vandrealarm", "Wandering alarm"),
    "unit.alarm": ("Alarm fra trygghetsalarmen", "Alarm from the alarm unit"),
    "sos.pressed": ("SOS på GPS-sporeren", "SOS on the GPS tracker"),
    "inactivity.detected": ("Ingen aktivitet (aktivitetsdetektor)", "No activity (detector)"),
}

RULES: dict[str, tuple[str, str]] = {
    "fall": ("Fall", "Fall"),
    "button": ("Alarmknapp", "Alarm button"),
    "pullcord": ("Alarmsnor", "Pull cord"),
    "fire": ("Brann", "Fire"),
    "seizure": ("Anfall", "Seizure"),
    "water": ("Vannlekkasje", "Water leak"),
    "bed-exit-no-return": ("Ute av sengen om natten", "Out of bed at night"),
    "left-home-at-night": ("Forlatt hjemmet om natten", "Left home at night"),
    "inactivity": ("Uvanlig lite aktivitet", "Unusual inactivity"),
    "long-bathroom-stay": ("Lenge på badet", "Long bathroom stay"),
    "dose-missed": ("Medisin ikke bekreftet", "Dose not confirmed"),
    "dispenser-fault": ("Feil på dispenser", "Dispenser fault"),
    "device-offline": ("Enhet frakoblet", "Device offline"),
    "device-clock": ("Feil klokke i enheten", "Device clock wrong"),
    "battery-low": ("Lavt batteri", "Battery low"),
    "temperature-high": ("Høy romtemperatur", "Room too warm"),
    "temperature-low": ("Lav romtemperatur", "Room too cold"),
    "heat": ("Varmedetektor (brann)", "Heat detector (fire)"),
    "carbon-monoxide": ("Karbonmonoksid (CO)", "Carbon monoxide"),
    "gas": ("Gasslekkasje", "Gas leak"),
    "wandering": ("Vandring", "Wandering"),
    "local-unit-alarm": ("Alarm fra trygghetsalarmen", "Alarm from the alarm unit"),
    "tracker-sos": ("SOS fra GPS-sporer", "SOS from GPS tracker"),
    "inactivity-alarm": ("Ingen aktivitet (detektor)", "No activity (detector)"),
}


def event_words(e: dict[str, Any]) -> dict[str, str]:
    """``{"nb": ..., "en": ...}`` for one stored event row."""
    nb, en = EVENTS.get(str(e.get("type")), (str(e.get("type")), str(e.get("type"))))
    v = e.get("value")
    if e.get("type") == "temperature" and v is not None:
        nb, en = f"{nb}: {v:.1f} °C", f"{en}: {v:.1f} °C"
    elif e.get("type") == "battery" and v is not None:
        nb, en = f"{nb}: {v:.0f} %", f"{en}: {v:.0f} %"
    room = ROOMS.get(str(e.get("room") or ""))
    if room is not None and e.get("type") not in ("battery", "heartbeat"):
        nb, en = f"{nb} ({room[0]})", f"{en} ({room[1]})"
    return {"nb": nb, "en": en}


def rule_words(rule: str) -> dict[str, str]:
    nb, en = RULES.get(rule, (rule, rule))
    return {"nb": nb, "en": en}


_SILENCED = re.compile(
    r"^silenced: (?P<reason>.*) \(by (?P<by>[^,]*), (?P<scope>resident|device) (?P<target>\S+), "
    r"until (?P<until>[^)]+)\)$",
    re.S,
)
_INHIBITED = re.compile(
    r"^inhibited: device (?P<device>\S+) is offline \(alert (?P<alert>[^)]+)\)$"
)


def suppressed_why(reason: str | None) -> dict[str, str] | None:
    """The gates' suppression reason (``trygg.alerts.gates``) as a code and its parts,
    for the console to put in words in either language:

    - ``{"code": "silenced", "reason", "by", "scope", "target", "until"}``: a silence
      (``reason`` is the staff member's own words);
    - ``{"code": "inhibited", "device", "alert"}``: a device it depends on is offline;
    - ``{"code": "other", "text"}``: a shape this module does not know.
    """
    if not reason:
        return None
    if m := _SILENCED.match(reason):
        return {"code": "silenced", **m.groupdict()}
    if m := _INHIBITED.match(reason):
        return {"code": "inhibited", **m.groupdict()}
    return {"code": "other", "text": reason}
