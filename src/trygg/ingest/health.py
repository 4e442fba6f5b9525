"""Device health: when each device was last heard from, its battery, online or not.

Pure bookkeeping over one batch: the runner feeds it the batch's events and
status messages and stores the result (``trygg.store.spooled.health_record``).
The retained status topic ``trygg/{site}/devices/{id}/status`` (a device's
last will) marks a device offline the moment the broker loses it; the
``device-offline`` *alert* still waits for the rule's silence period
(3 x heartbeat), so that a brief reconnect does not wake anyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from trygg.model import Event, EventType


@dataclass(slots=True)
class Health:
    last_seen: datetime | None = None
    battery: float | None = None
    online: bool | None = None


def parse_status(payload: bytes) -> bool | None:
    """``online``/``offline`` as plain text or ``{"status": "..."}``; None if neither."""
    text = payload.strip().decode("utf-8", "replace").lower()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        text = str(doc.get("status", "")).lower() if isinstance(doc, dict) else ""
    return {"online": True, "offline": False}.get(text)


class HealthBatch:
    """Collects the newest health facts per device in one batch."""

    def __init__(self) -> None:
        self.devices: dict[str, Health] = {}

    def _get(self, device: str) -> Health:
        h = self.devices.get(device)
        if h is None:
            h = self.devices[device] = Health()
        return h

    def seen(self, event: Event, received_at: datetime) -> None:
        h = self._get(event.device)
        h.last_seen = received_at
        h.online = True
        if event.type is EventType.BATTERY and event.value is not None:
            h.battery = event.value

    def status(self, device: str, online: bool, received_at: datetime) -> None:
        h = self._get(device)
        h.online = online
        if online:
            h.last_seen = received_at
