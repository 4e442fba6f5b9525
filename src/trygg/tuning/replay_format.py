"""The lines of the replay contract (DESIGN.md, contract: replay): what a
line of the JSONL file holds and how it is checked (``ReplayLine``,
``validate_line``, the reason a line is refused), the event it makes, and the
lines ``trygg rules replay`` prints: an alert (``--raw``: a signal) on stdout,
a timer pending at the end on stderr."""

from __future__ import annotations

import json
from typing import Any

from pydantic import AwareDatetime, ConfigDict, ValidationError

from trygg.model import Event, EventPayload, Signal, event_of


class ReplayLine(EventPayload):
    """One JSONL line: the MQTT payload object plus the device id, and optionally
    when trygg received it (then device clocks are judged by it, as live)."""

    # do not keep every event id in pydantic's global string cache
    model_config = ConfigDict(cache_strings="keys")

    device: str
    received: AwareDatetime | None = None


validate_line = ReplayLine.__pydantic_validator__.validate_json


def make_event(p: ReplayLine, resident: str, kind: Any, room: Any) -> Event:
    """The line's event, enriched from its device (the payload model has done the checks)."""
    return event_of(p, p.device, resident, kind, room)


def reason_of(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def signal_json(s: Signal) -> str:
    """An alert as the contract's JSON line."""
    return json.dumps(
        {
            "at": s.at.isoformat(),
            "rule": s.rule,
            "resident": s.resident,
            "code": s.code,
            "severity": s.severity.value,
            "events": list(s.events),
        },
        ensure_ascii=False,
    )


def raw_signal_json(s: Signal) -> str:
    """A signal as ``--raw`` prints it: the alert's fields plus action and device."""
    return json.dumps(
        {
            "at": s.at.isoformat(),
            "action": s.action.value,
            "rule": s.rule,
            "resident": s.resident,
            "device": s.device,
            "code": s.code,
            "severity": s.severity.value,
            "events": list(s.events),
        },
        ensure_ascii=False,
    )


def pending_line(s: Signal) -> str:
    """A timer pending at the end, as replay reports it on stderr."""
    which = f" (device {s.device})" if s.device is not None else ""
    return f"pending at the end: {s.rule} for {s.resident}{which}, due {s.at.isoformat()}\n"
