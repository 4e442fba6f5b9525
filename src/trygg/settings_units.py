"""The units and valid-value words that settings' fields carry, and the value kinds
more than one group of settings uses.

A field says its unit and, where the type alone cannot, what a valid value is in
words (``json_schema_extra``); :func:`trygg.settings_load.valid_text` reads them
back to say what a wrong value should have been. Kept apart from the groups of
settings (trygg.settings_pipeline, _alerting, _auditing, _distributed) that all
use them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic.config import JsonDict


def _percent(v: Any) -> Any:
    """``97.5%`` -> 0.975; anything else is left to the float check."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            return float(v.strip()[:-1].strip()) / 100
        except ValueError:
            return v
    return v


# A share of alerts: 0.975, or written as a percentage with its sign, "97.5%".
Share = Annotated[float, BeforeValidator(_percent)]


def share(example: str) -> JsonDict:
    pct = f"{float(example) * 100:g}%"
    return {"unit": "share", "valid": f"a share between 0 and 1, such as {example} (or {pct})"}


TOPIC_LEVEL = r"^[^/+#\s]+$"  # one MQTT topic level: no /, +, # or spaces


def unit(unit: str, valid: str | None = None) -> JsonDict:
    return {"unit": unit} if valid is None else {"unit": unit, "valid": valid}
