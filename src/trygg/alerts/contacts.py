"""Who can be reached, and how: the channels and the contacts of recipients in
the routing file. Secrets stay out of the file: a webhook contact names a
webhook from the settings, and an Apprise URL takes its passwords and tokens
from the environment (``${NAME}``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

__all__ = ["Channel", "Contact", "Recipient"]


class Channel(StrEnum):
    WEBHOOK = "webhook"  # address: the name of a webhook configured in settings (not the URL)
    EMAIL = "email"  # address: an e-mail address
    MQTT = "mqtt"  # address: a team name -> trygg/{site}/teams/{team}/alerts
    CONSOLE = "console"  # address: a team name (the live console feed)
    APPRISE = "apprise"  # address: an Apprise URL (ntfy, SMS, Teams, Matrix), secrets as ${VAR}


_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_SECRET_PARAMS = frozenset(
    {"token", "key", "apikey", "api_key", "secret", "password", "pass", "pwd", "access_token"}
)


def _literal_secret(url: str) -> str | None:
    """The part of an Apprise URL that holds a literal secret, or None: passwords
    and token-like query parameters must be ``${VAR}`` references."""
    try:
        u = urlsplit(url)
        password = u.password
    except ValueError:
        return None
    if password and not _ENV_REF.match(unquote(password)):
        return "the password"
    for k, v in parse_qsl(u.query, keep_blank_values=True):
        if k.lower() in _SECRET_PARAMS and v and not _ENV_REF.match(v):
            return f"the parameter {k!r}"
    return None


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel
    address: str = Field(min_length=1)

    @model_validator(mode="after")
    def _address(self) -> Contact:
        if self.channel is Channel.EMAIL and "@" not in self.address:
            raise ValueError(f"{self.address!r} is not an e-mail address")
        if self.channel is Channel.WEBHOOK and "://" in self.address:
            raise ValueError(
                "a webhook contact names a webhook from the settings, not a URL "
                "(URLs and their secrets stay out of the routing file)"
            )
        if self.channel is Channel.APPRISE:
            if "://" not in self.address:
                raise ValueError(
                    f"{self.address!r} is not an Apprise URL (ntfys://..., json://..., ...)"
                )
            where = _literal_secret(self.address)
            if where is not None:
                raise ValueError(
                    f"{where} of an apprise URL must come from the environment, as ${{NAME}}"
                    " (secrets stay out of the routing file)"
                )
        return self


class Recipient(BaseModel):
    """A person, a role phone or a desk (the response centre) with its contacts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contacts: list[Contact] = Field(min_length=1)
    description: str = ""
