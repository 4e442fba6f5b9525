"""The webhook channel for the routing file: webhooks by name.

The routing file names webhooks (``{channel: webhook, address: leader}``) so
that URLs and secrets stay in the settings: ``TRYGG_WEBHOOKS`` maps names to
URLs, and ``TRYGG_WEBHOOK_URL`` is the one named ``default``. All are signed
with ``TRYGG_WEBHOOK_SECRET``. The notification's key is the
``Idempotency-Key``, the same on every retry and after a restart.
"""

from __future__ import annotations

import asyncio
from typing import Any

from trygg import logs
from trygg.alerts.escalation import Notification
from trygg.notify.base import Delivery
from trygg.notify.webhook import Webhook

log = logs.get("trygg.notify.webhook")


class NamedWebhooks:
    def __init__(
        self, urls: dict[str, str], secret: str | None = None, concurrency: int = 32
    ) -> None:
        self._hooks = {name: Webhook(url, secret) for name, url in urls.items()}
        self._warned: set[str] = set()
        # A slow receiver must not pile up requests in httpx's pool (whose queue
        # handling is quadratic and would then hog the runner's event loop).
        self._slots = {name: asyncio.Semaphore(concurrency) for name in urls}

    @property
    def names(self) -> list[str]:
        return sorted(self._hooks)

    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery:
        hook = self._hooks.get(address)
        if hook is None:
            if address not in self._warned:
                self._warned.add(address)
                log.error("no webhook of this name is configured", webhook=address)
            return Delivery(
                False, 0, None, f"no webhook named {address!r} is configured", retry=False
            )
        async with self._slots[address]:
            return await hook.send(payload, idempotency_key=notification.key)

    async def aclose(self) -> None:
        for h in self._hooks.values():
            await h.aclose()
