"""Silences: a resident away or a device in service. Matching alerts are
created but suppressed (stored, not routed); the gatekeeper decides which
alerts match (:class:`trygg.alerts.gates.Gatekeeper`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = ["Silence", "SilenceScope"]


class SilenceScope(StrEnum):
    RESIDENT = "resident"  # away, in hospital
    DEVICE = "device"  # in service


class Silence(BaseModel):
    """A silence: matching alerts are created but suppressed (stored, not routed).

    A resident silence matches every alert of the resident (or only ``rules``);
    a device silence matches alerts about that device (``signal.device``) and
    alerts of rules that depend on the device's kind (``rule_devices``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    scope: SilenceScope
    target: str = Field(min_length=1, description="resident id or device id")
    start: AwareDatetime
    end: AwareDatetime
    created_by: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    rules: tuple[str, ...] = ()
    ended_by: str | None = None

    @model_validator(mode="after")
    def _order(self) -> Silence:
        if self.end <= self.start:
            raise ValueError("a silence must end after it starts")
        return self

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def describe(self) -> str:
        return (
            f"silenced: {self.reason} (by {self.created_by}, "
            f"{self.scope.value} {self.target}, until {self.end.isoformat()})"
        )
