"""What every notification channel shares: the delivery outcome and the payload.

A channel takes one :class:`trygg.alerts.Notification` (one message to one
address) and the alert as JSON, makes one attempt to deliver it, and returns
a :class:`Delivery` (retries are ``trygg.notify.retry``'s, the same for every
channel). It never raises: a failing channel must not hold back the
others, and the alert service records every outcome (``alert_deliveries``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from trygg import logs
from trygg.alerts.escalation import Notification

log = logs.get("trygg.notify")


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    retry: bool = True  # False: a permanent failure (HTTP 404, no such webhook): do not retry


class Channel(Protocol):
    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery: ...

    async def aclose(self) -> None: ...


def delay_s(alert: Mapping[str, Any]) -> float | None:
    """How long after the device observed it the alert was raised (seconds), or
    None: an alarm that reached trygg late is still alerted, and staff should see
    that it is late ("sent 10 min late by the device")."""
    at, raised = alert.get("signal_at"), alert.get("raised_at")
    if not at or not raised:
        return None
    try:
        return round((_when(raised) - _when(at)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def _when(v: Any) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def health_name(channel: Any, address: str) -> str:
    """The name a channel's health is kept under: ``webhook:<name>`` per named
    webhook, ``apprise:<scheme>`` per kind of Apprise service, else the channel
    (e-mail addresses and team names are not health names)."""
    ch = getattr(channel, "value", channel)
    if ch == "webhook":
        return f"webhook:{address}"
    if ch == "apprise":
        return f"apprise:{address.split('://', 1)[0]}"
    return str(ch)


def payload(alert: dict[str, Any], n: Notification, address: str, **extra: Any) -> dict[str, Any]:
    """The JSON every channel sends: the alert's snapshot plus what this message is."""
    return {
        **alert,
        "delay_s": delay_s(alert),
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
        "idempotency_key": n.key,
        **extra,
    }


async def deliver(
    channels: Mapping[Any, Channel], n: Notification, address: str, body: dict[str, Any]
) -> tuple[Delivery, float]:
    """Send ``n`` on its channel; return the outcome and how long it took (ms).

    Never raises: a channel that is not configured is a failed delivery with
    that reason, and a channel's own bug is logged and recorded as a failure,
    so one broken channel does not hold back the others (the embedded alert
    service and the distributed notify agent both deliver through this)."""
    ch = channels.get(n.channel)
    t0 = time.perf_counter()
    if ch is None:
        d = Delivery(
            False, 0, None, f"the {n.channel.value} channel is not configured", retry=False
        )
    else:
        try:
            d = await ch.send(n, address, body)
        except Exception as exc:
            log.exception("channel failed", channel=n.channel.value)
            d = Delivery(False, 1, None, f"{type(exc).__name__}: {exc}"[:300])
    return d, (time.perf_counter() - t0) * 1000
