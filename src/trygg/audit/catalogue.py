"""The alert codes of the standard catalogue, for reports and the FHIR export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# rule -> (code, severity, title), used when rules/standard.yaml is not at hand.
FALLBACK: dict[str, tuple[str, str, str]] = {
    "fall": ("4.1", "red", "Fall detected"),
    "button": ("4.13", "red", "Alarm button pressed"),
    "pullcord": ("4.14", "red", "Pull cord pulled"),
    "fire": ("4.11", "red", "Smoke detected"),
    "seizure": ("T.5", "red", "Epileptic seizure detected"),
    "water": ("4.17", "yellow", "Water detected"),
    "dose-missed": ("3.3", "yellow", "Dose not confirmed"),
    "dispenser-fault": ("3.4", "yellow", "Dispenser fault"),
    "bed-exit-no-return": ("4.2", "yellow", "Left bed at night, not back"),
    "left-home-at-night": ("4.21", "red", "Left home at night"),
    "inactivity": ("4.9", "yellow", "No activity"),
    "long-bathroom-stay": ("4.23", "yellow", "Long stay in the bathroom"),
    "device-offline": ("T.1", "yellow", "Device offline"),
    "battery-low": ("T.2", "green", "Battery low"),
    "temperature-high": ("T.3", "yellow", "Temperature high"),
    "temperature-low": ("T.4", "yellow", "Temperature low"),
}

# VKP alert code system display names (vkp-alert-code-v090) and trygg's own codes.
DISPLAY: dict[str, str] = {
    "4.1": "fall",
    "4.2": "forlatt sengen",
    "4.9": "inaktivitet",
    "4.11": "brannalarm",
    "4.13": "knappetrykk",
    "4.14": "snortrekk",
    "4.17": "vannalarm",
    "4.21": "forlatt bolig",
    "4.23": "inaktivitet bad",
    "3.3": "medisin mangler bekreftelse",
    "3.4": "medisin teknisk feil",
    "T.1": "device offline",
    "T.2": "battery low",
    "T.3": "temperature high",
    "T.4": "temperature low",
    "T.5": "epileptic seizure",
}


@dataclass(frozen=True)
class CatalogueRule:
    rule: str
    code: str
    severity: str
    title: str


def standard_path() -> Path:
    return Path(__file__).resolve().parents[3] / "rules" / "standard.yaml"


def standard_rules(path: Path | None = None) -> list[CatalogueRule]:
    """The rules of the standard catalogue (YAML), else the built-in list."""
    p = path or standard_path()
    out: list[CatalogueRule] = []
    if p.exists():
        try:
            items: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            items = None
        for it in items or []:
            if isinstance(it, dict) and "rule" in it and "code" in it:
                out.append(
                    CatalogueRule(
                        str(it["rule"]),
                        str(it["code"]),
                        str(it.get("severity", "yellow")),
                        str(it.get("title", it["rule"])),
                    )
                )
    if not out:
        out = [CatalogueRule(r, c, s, t) for r, (c, s, t) in FALLBACK.items()]
    return out
