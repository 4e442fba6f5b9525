"""E-mail channel: one plain-text message per notification over SMTP.

Uses the standard library's smtplib in a worker thread (the event loop stays
free), with STARTTLS or TLS and login when configured; one attempt per call,
retried by ``trygg.notify.retry`` (a refused recipient is permanent).
The ``Message-ID`` is derived from the notification's idempotency key, so a
mail system can drop a repeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from trygg import logs
from trygg.alerts.escalation import Notification
from trygg.notify.base import Delivery

log = logs.get("trygg.notify.email")

_SEV_NB = {"red": "RØD", "yellow": "GUL", "green": "GRØNN"}


def render(p: dict[str, Any], console_url: str | None = None) -> tuple[str, str]:
    """(subject, body) in Norwegian with English below; ids only, no names."""
    n = p["notification"]
    sev = str(p.get("severity", ""))
    title = p.get("title") or p.get("rule")
    what = {"notify": "Ny alarm", "escalate": "Eskalert", "renotify": "Påminnelse"}.get(
        n["action"], "Alarm"
    )
    subject = (
        f"[trygg] {what}: {_SEV_NB.get(sev, sev.upper())} {p.get('code')} {title}"
        f" - beboer {p.get('resident')}"
    )
    lines = [
        f"{what} (nivå {n['level']}) for beboer {p.get('resident')}, team {p.get('team')}.",
        f"Regel: {p.get('rule')} (kode {p.get('code')}), alvorlighet {sev}.",
        f"Utløst: {p.get('raised_at')}. Status: {p.get('state')}.",
        "",
        f"{n['action']} (level {n['level']}) for resident {p.get('resident')},"
        f" team {p.get('team')}: rule {p.get('rule')}, code {p.get('code')}, severity {sev}.",
        f"Raised {p.get('raised_at')}; state {p.get('state')}.",
    ]
    if console_url:
        lines += ["", f"Konsoll / console: {console_url}"]
    lines += ["", f"Alarm {p.get('id')} · {n['key']}"]
    return subject, "\n".join(lines) + "\n"


class Email:
    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "trygg@localhost",
        user: str | None = None,
        password: str | None = None,
        tls: str = "none",
        timeout: float = 10.0,
        console_url: str | None = None,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.user, self.password, self.tls = user, password, tls
        self.timeout = timeout
        self.console_url = console_url

    def _message(self, address: str, p: dict[str, Any]) -> EmailMessage:
        subject, body = render(p, self.console_url)
        m = EmailMessage()
        m["From"] = self.sender
        m["To"] = address
        m["Subject"] = subject
        m["Date"] = formatdate(localtime=False)
        key = p["notification"]["key"]
        m["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@trygg>"
        m["X-Trygg-Idempotency-Key"] = key
        m["X-Trygg-Alert"] = str(p.get("id"))
        m.set_content(body)
        return m

    def _send_sync(self, msg: EmailMessage) -> None:
        if self.tls == "tls":
            ctx = ssl.create_default_context()
            with smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ctx) as s:
                if self.user:
                    s.login(self.user, self.password or "")
                s.send_message(msg)
            return
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as s:
            if self.tls == "starttls":
                s.starttls(context=ssl.create_default_context())
            if self.user:
                s.login(self.user, self.password or "")
            s.send_message(msg)

    async def send(
        self, notification: Notification, address: str, payload: dict[str, Any]
    ) -> Delivery:
        msg = self._message(address, payload)
        try:
            await asyncio.to_thread(self._send_sync, msg)
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            # a refused recipient is permanent: retrying will not help
            return Delivery(
                False, 1, None, error, retry=not isinstance(exc, smtplib.SMTPRecipientsRefused)
            )
        return Delivery(True, 1)

    async def aclose(self) -> None:
        pass
