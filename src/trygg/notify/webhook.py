"""Webhook channel: POST an alert as JSON, signed, idempotent; one attempt per call.

The body is signed with HMAC-SHA256 over the raw bytes (header
``X-Trygg-Signature: sha256=<hex>``) when a secret is set, so the receiver
can check it came from trygg. ``Idempotency-Key`` (also ``idempotency_key``
in the body) is the notification's key, the same on every retry and after a
restart, so a receiver can drop repeats. Retries are ``trygg.notify.retry``'s:
a connection error, a timeout, 5xx, 408, 425 and 429 are worth retrying; any
other 4xx is permanent (the receiver refuses this request as it is).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from trygg import logs
from trygg.notify.base import Delivery

log = logs.get("trygg.notify.webhook")

_TRANSIENT_4XX = frozenset({408, 425, 429})


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ):
        self.url = url
        self.secret = secret
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        """One attempt; ``Delivery.retry`` says whether another may help."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self.secret:
            headers["X-Trygg-Signature"] = sign(self.secret, body)
        try:
            r = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Delivery(False, 1, None, f"{type(exc).__name__}: {exc}"[:300])
        status = r.status_code
        if status < 300:
            return Delivery(True, 1, status)
        transient = status >= 500 or status in _TRANSIENT_4XX
        return Delivery(False, 1, status, f"HTTP {status}", retry=transient)

    async def aclose(self) -> None:
        await self._client.aclose()
