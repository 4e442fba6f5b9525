"""Webhook channel: POST an alert as JSON, signed, retried, idempotent.

The body is signed with HMAC-SHA256 over the raw bytes (header
``X-Trygg-Signature: sha256=<hex>``) when a secret is set, so the receiver
can check it came from trygg. ``Idempotency-Key`` is stable across retries of
the same notification, so a receiver can drop repeats.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx

from trygg import logs

log = logs.get("trygg.notify.webhook")


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None
    error: str | None = None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        attempts: int = 5,
        backoff: float = 0.5,
        client: httpx.AsyncClient | None = None,
    ):
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        """Deliver once, retrying with exponential backoff on errors and 5xx."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self.secret:
            headers["X-Trygg-Signature"] = sign(self.secret, body)
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                r = await self._client.post(self.url, content=body, headers=headers)
                status = r.status_code
                if r.status_code < 500 and r.status_code != 429:
                    ok = r.status_code < 300
                    return Delivery(ok, attempt, status, None if ok else f"HTTP {status}")
                error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            log.warning("webhook attempt failed", attempt=attempt, error=error)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(False, self.attempts, status, error)

    async def aclose(self) -> None:
        await self._client.aclose()
