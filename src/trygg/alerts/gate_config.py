"""The quality gates' configuration: the ``gates:`` section of the routing file
(dedup, auto-resolve, inhibition, flapping, and which device kinds each rule
depends on). The gates themselves are :class:`trygg.alerts.gates.Gatekeeper`.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trygg.durations import Duration
from trygg.model import (
    DeviceKind,
    Severity,
)

__all__ = [
    "DEFAULT_RULE_DEVICES",
    "AutoResolveConfig",
    "DedupConfig",
    "FlappingConfig",
    "GateConfig",
    "InhibitionConfig",
]


# ------------------------------------------------------------------- config

_K = DeviceKind

DEFAULT_RULE_DEVICES: dict[str, list[DeviceKind]] = {
    "fall": [_K.FALL],
    "button": [_K.BUTTON],
    "pullcord": [_K.PULLCORD],
    "fire": [_K.SMOKE],
    "seizure": [_K.SEIZURE],
    "water": [_K.WATER],
    "bed-exit-no-return": [_K.BED],
    "left-home-at-night": [_K.DOOR, _K.MOTION],
    "inactivity": [_K.MOTION, _K.DOOR, _K.BED, _K.CHAIR],
    "long-bathroom-stay": [_K.MOTION],
    "dose-missed": [_K.DISPENSER],
    "dispenser-fault": [_K.DISPENSER],
    "temperature-high": [_K.THERMOMETER],
    "temperature-low": [_K.THERMOMETER],
    "heat": [_K.SMOKE],
    "carbon-monoxide": [_K.SMOKE],
    "gas": [_K.SMOKE],
    "wandering": [_K.DOOR, _K.GPS],
    "local-unit-alarm": [_K.BUTTON],
    "tracker-sos": [_K.GPS],
    "inactivity-alarm": [_K.MOTION],
}


class DedupConfig(BaseModel):
    """One open alert per (resident, rule), as DESIGN.md's gate says: a second
    device going offline is a repeat of the resident's open ``device-offline``
    alert, which lists every device still offline (``Alert.devices``) and
    closes when the last one is back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    per_device: bool = Field(
        default=False,
        description=(
            "one open alert per device, not per resident, for signals that name a"
            " device (device offline, battery low, an alarm from one pendant)"
        ),
    )


class AutoResolveConfig(BaseModel):
    """What a rule's clear signal and a device's ``alarm.reset`` do to an open alert.

    Before anyone has acknowledged: cancelled (``auto_resolved`` for a clear,
    ``device_reset`` for a reset). After: a technical alert is resolved by
    ``system`` with outcome ``auto_resolved``; a care alert gets a ``cleared``
    record and stays with the staff who are handling it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    clear_cancels_unacknowledged: bool = True
    technical_rules: list[str] = Field(
        default_factory=lambda: [
            "device-offline",
            "battery-low",
            "temperature-high",
            "temperature-low",
        ]
    )
    reset_cancels_unacknowledged: bool = True
    reset_rules: list[str] = Field(
        default_factory=lambda: ["button", "pullcord", "fall", "fire", "seizure"]
    )
    reset_all_kinds: list[DeviceKind] = Field(
        default_factory=lambda: [DeviceKind.BUTTON, DeviceKind.PULLCORD],
        description="a reset from these device kinds (the alarm unit) resets every reset rule",
    )
    # SCAIP (docs/ingest.md, "Message sessions" and "Reset, restoral and cancel"):
    abort_cancels_unacknowledged: bool = Field(
        default=True,
        description="alarm.aborted (SCAIP RE) cancels its own session's alert if unanswered",
    )
    cancel_rules: list[str] = Field(
        default_factory=lambda: [
            "button",
            "pullcord",
            "fall",
            "local-unit-alarm",
            "tracker-sos",
        ],
        description=(
            "alarm.cancelled (the resident's cancel) cancels an unanswered alert of these"
            " rules from the same unit; never a fire, CO or gas alarm"
        ),
    )


class InhibitionConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    offline_rule: str = "device-offline"
    offline_inhibits: list[str] = Field(
        default_factory=lambda: [
            "inactivity",
            "long-bathroom-stay",
            "bed-exit-no-return",
            "left-home-at-night",
        ],
        description="inactivity-type rules an offline device they depend on inhibits",
    )
    red_holds_back: bool = True
    red_hold_window: Duration = timedelta(minutes=15)
    held_severities: list[Severity] = Field(
        default_factory=lambda: [Severity.YELLOW, Severity.GREEN]
    )


class FlappingConfig(BaseModel):
    """More than ``max_fires`` fires in ``window`` for one resident and rule = flapping."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_fires: int = Field(default=5, ge=1)
    window: Duration = timedelta(hours=1)

    @field_validator("window")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("the flapping window must be longer than 0s")
        return v


class GateConfig(BaseModel):
    """All quality gates; the ``gates:`` section of the routing file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dedup: DedupConfig = DedupConfig()
    auto_resolve: AutoResolveConfig = AutoResolveConfig()
    inhibition: InhibitionConfig = InhibitionConfig()
    flapping: FlappingConfig = FlappingConfig()
    rule_devices: dict[str, list[DeviceKind]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_RULE_DEVICES.items()},
        description="which device kinds each rule depends on (silences, inhibition, reset)",
    )

    @property
    def lookback(self) -> timedelta:
        """How far back closed alerts must be reloaded to rebuild the gates."""
        return max(self.flapping.window, self.inhibition.red_hold_window)
