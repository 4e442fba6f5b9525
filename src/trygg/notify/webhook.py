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

import aiohttp

from trygg import logs
from trygg.notify.base import Delivery

log = logs.get("trygg.notify.webhook")

_TRANSIENT_4XX = frozenset({408, 425, 429})


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook:
    """One receiver's URL, with a kept-alive connection pool.

    The client is aiohttp's, not httpx's: on the 2-core AMD EPYC machines a POST
    to a local receiver cost 1.8 ms of event-loop time with httpx against 0.33 ms
    with aiohttp (bench/RESULTS.md, alert latency), and that time is taken from
    the runner's loop between an alarm's decision and its console frame. The
    session is made on the first send, inside the running loop, as aiohttp asks.
    """

    def __init__(self, url: str, secret: str | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self.secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def send(self, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        """One attempt; ``Delivery.retry`` says whether another may help."""
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self.secret:
            headers["X-Trygg-Signature"] = sign(self.secret, body)
        try:
            async with self._client().post(self.url, data=body, headers=headers) as r:
                status = r.status
                await r.read()  # the body, so the connection goes back to the pool
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Delivery(False, 1, None, f"{type(exc).__name__}: {exc}"[:300])
        if status < 300:
            return Delivery(True, 1, status)
        transient = status >= 500 or status in _TRANSIENT_4XX
        return Delivery(False, 1, status, f"HTTP {status}", retry=transient)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
