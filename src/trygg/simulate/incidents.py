"""Incidents and their rates: what the simulation injects, the rule each is
expected to raise, and the ground truth (:class:`Truth`) it records; also the
malformed messages a broken device sends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trygg.simulate.events import SimEvent

# incident name -> the catalogue rule expected to fire (None: not an alert)
INCIDENT_RULES: dict[str, str | None] = {
    "fall": "fall",
    "night-exit-no-return": "bed-exit-no-return",
    "left-home-at-night": "left-home-at-night",
    "inactivity": "inactivity",
    "long-bathroom-stay": "long-bathroom-stay",
    "dose-missed": "dose-missed",
    "button": "button",
    "smoke": "fire",
    "device-offline": "device-offline",
    "battery-low": "battery-low",
    "malformed": None,
    "duplicate": None,
}

# Expected occurrences per resident-day. Incidents that need a device the
# home lacks (fall detector, dispenser, smoke detector) do not happen there.
DEFAULT_RATES: dict[str, float] = {
    "fall": 0.02,
    "night-exit-no-return": 0.03,
    "left-home-at-night": 0.01,
    "inactivity": 0.02,
    "long-bathroom-stay": 0.02,
    "dose-missed": 0.05,
    "button": 0.05,
    "smoke": 0.002,
    "device-offline": 0.01,
    "battery-low": 0.01,
    "malformed": 0.02,
    "duplicate": 0.1,
}

# Share of night exits where the resident does come back, after 21-29 min
# (after the default 20 min, so material for tuning the wait).
NIGHT_EXIT_RETURN_SHARE = 0.4
# Share of falls the resident cancels on the detector within seconds.
FALL_CANCEL_SHARE = 0.15

MALFORMED_KINDS = (
    "truncated-json",
    "not-json",
    "unknown-type",
    "missing-id",
    "bad-time",
    "value-out-of-range",
    "unknown-device",
)


def make_rates(
    overrides: Mapping[str, float] | None = None, scale: float = 1.0
) -> dict[str, float]:
    """The default rates with ``overrides`` applied, all multiplied by ``scale``."""
    rates = dict(DEFAULT_RATES)
    for k, v in (overrides or {}).items():
        if k not in DEFAULT_RATES:
            known = ", ".join(DEFAULT_RATES)
            raise ValueError(f"unknown incident {k!r} (known: {known})")
        if v < 0 or not math.isfinite(v):
            raise ValueError(f"rate for {k!r} must be a non-negative number, not {v!r}")
        rates[k] = float(v)
    if scale < 0:
        raise ValueError("the incident scale cannot be negative")
    return {k: v * scale for k, v in rates.items()}


@dataclass(slots=True)
class Truth:
    """One injected incident, for checking what the pipeline makes of it.

    ``events`` lists the ids of the key events (filled in as they are
    generated: read it after the event iterator is exhausted). A record with
    ``detail["carried_over"]`` is the alert for a condition a home is in at
    the start, begun before it (``detail["since"]``); its ``start`` is when
    the standard catalogue raises that alert (docs/simulator.md).
    """

    incident: str
    resident: str
    start: str
    start_ts: int
    expected_rule: str | None
    expected_rules: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    returned_after_s: int | None = None
    device: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "resident": self.resident,
            "start": self.start,
            "returned_after_s": self.returned_after_s,
            "events": list(self.events),
            "expected_rule": self.expected_rule,
            "expected_rules": list(self.expected_rules),
            "device": self.device,
            "detail": dict(self.detail),
        }


def malformed(ev: SimEvent, kind: str, seed: int) -> SimEvent:
    r = random.Random(f"{seed}/malformed/{ev.device}/{ev.ts}")
    good = f'{{"id":"m-{ev.ts}","type":"heartbeat","time":"{ev.time}"}}'
    device = ev.device
    if kind == "truncated-json":
        raw = good[: r.randrange(1, len(good) - 1)].encode()
    elif kind == "not-json":
        raw = bytes(r.randrange(256) for _ in range(r.randrange(1, 40)))
    elif kind == "unknown-type":
        raw = good.replace('"heartbeat"', '"bed.levitating"').encode()
    elif kind == "missing-id":
        raw = f'{{"type":"heartbeat","time":"{ev.time}"}}'.encode()
    elif kind == "bad-time":
        raw = good.replace(ev.time, ev.time[:19]).encode()  # no offset
    elif kind == "value-out-of-range":
        raw = f'{{"id":"m-{ev.ts}","type":"battery","time":"{ev.time}","value":250}}'.encode()
    else:  # unknown-device: a valid payload under a topic nobody registered
        device = "ghost-" + device
        raw = good.encode()
    return ev._replace(device=device, malformed=kind, raw=raw)
