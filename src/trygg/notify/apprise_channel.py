"""The ``apprise`` channel: ntfy, SMS gateways, Teams, Matrix, ... through Apprise.

The routing file names the service by its Apprise URL
(``{channel: apprise, address: "ntfys://${NTFY_TOKEN}@ntfy.example.no/stovner"}``);
``${NAME}`` is replaced from the environment when the message is sent, so
tokens and passwords stay out of the routing file (and out of the database:
the stored address and the idempotency key keep the ``${NAME}``). An
unset variable is a permanent failure, logged once.

What trygg adds to the URL, unless it already says otherwise:

- ntfy (``ntfy://``, ``ntfys://``): ``priority`` by severity: red ``max``,
  yellow ``high``, green ``default``;
- JSON, XML and form targets (``json://``, ``xml://``, ``form://``): the header
  ``Idempotency-Key``; for JSON also ``idempotency_key`` in the body.

Every message carries the key in its text as well (the e-mail text, see
``notify.email.render``). One attempt per call: Apprise's own retries are off
(``retry=0``, its default); trygg's retry policy (``notify.retry``) decides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from trygg import logs
from trygg.alerts.escalation import Notification
from trygg.notify.base import Delivery
from trygg.notify.email import render

log = logs.get("trygg.notify.apprise")

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NTFY_PRIORITY = {"red": "max", "yellow": "high", "green": "default"}
_HEADER_SCHEMES = {"json", "jsons", "xml", "xmls", "form", "forms"}


class MissingVariable(KeyError):
    pass


def expand(url: str, env: Mapping[str, str] | None = None) -> str:
    """``${NAME}`` -> the environment's value; MissingVariable if one is unset."""
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        v = env.get(m.group(1))
        if v is None:
            raise MissingVariable(m.group(1))
        return v

    return ENV_REF.sub(sub, url)


def variables(url: str) -> list[str]:
    return ENV_REF.findall(url)


def decorate(url: str, key: str, severity: str) -> str:
    """The URL with what trygg adds per message (see the module's text)."""
    scheme = url.split("://", 1)[0].lower()
    query = {k.lower() for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    extra: list[str] = []
    if scheme in ("ntfy", "ntfys") and "priority" not in query:
        extra.append(f"priority={_NTFY_PRIORITY.get(severity, 'default')}")
    if scheme in _HEADER_SCHEMES:
        k = quote(key, safe="")
        extra.append(f"+Idempotency-Key={k}")
        if scheme.startswith("json"):
            extra.append(f":idempotency_key={k}")
    if not extra:
        return url
    base, sep, frag = url.partition("#")
    joiner = "&" if "?" in base else "?"
    return base + joiner + "&".join(extra) + (sep + frag)


class AppriseChannel:
    def __init__(
        self, env: Mapping[str, str] | None = None, console_url: str | None = None
    ) -> None:
        self.env = env
        self.console_url = console_url
        self._warned: set[str] = set()

    def _warn_once(self, address: str, msg: str, **kw: Any) -> None:
        if address not in self._warned:
            self._warned.add(address)
            log.error(msg, address=address, **kw)

    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery:
        import apprise

        try:
            url = expand(address, self.env)
        except MissingVariable as exc:
            why = f"environment variable {exc.args[0]} is not set"
            self._warn_once(address, "apprise URL not usable", error=why)
            return Delivery(False, 0, None, why, retry=False)
        severity = str(payload.get("severity", ""))
        a = apprise.Apprise()
        if not a.add(decorate(url, notification.key, severity)):
            why = f"not an Apprise URL Apprise can use: {address}"
            self._warn_once(address, "apprise URL not usable", error=why)
            return Delivery(False, 0, None, why, retry=False)
        subject, body = render(payload, self.console_url)
        kind = {
            "red": apprise.NotifyType.FAILURE,
            "yellow": apprise.NotifyType.WARNING,
        }.get(severity, apprise.NotifyType.INFO)
        try:
            ok = bool(await a.async_notify(body=body, title=subject, notify_type=kind))
        except Exception as exc:  # a plugin's bug: a failed attempt, never a crash
            return Delivery(False, 1, None, f"{type(exc).__name__}"[:300])
        # never the expanded URL in an error: it may hold a token
        return Delivery(True, 1) if ok else Delivery(False, 1, None, "apprise: not delivered")

    async def aclose(self) -> None:
        pass
