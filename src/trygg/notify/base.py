"""What every notification channel shares: the delivery outcome and the payload.

A channel takes one :class:`trygg.alerts.Notification` (one message to one
address) and the alert as JSON, delivers it with its own retries, and returns
a :class:`Delivery`. It never raises: a failing channel must not hold back the
others, and the alert service records every outcome (``alert_deliveries``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from trygg.alerts.routing import Notification


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


class Channel(Protocol):
    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery: ...

    async def aclose(self) -> None: ...


def payload(alert: dict[str, Any], n: Notification, address: str, **extra: Any) -> dict[str, Any]:
    """The JSON every channel sends: the alert's snapshot plus what this message is."""
    return {
        **alert,
        "notification": {
            "key": n.key,
            "action": n.action,
            "level": n.level,
            "n": n.n,
            "target": n.target,
            "recipient": n.recipient,
            "channel": n.channel.value,
            "address": address,
            "digest": n.digest,
        },
        **extra,
    }
