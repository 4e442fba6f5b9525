"""The alerting settings: routing, channels, the HTTP API and console (docs/alerts.md,
docs/api.md).

A group of the fields :class:`trygg.settings.Settings` is made of; the checks of
their values are in trygg.settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from trygg.settings_units import unit


class AlertingSettings(BaseModel):
    """Alerting: routing, channels, HTTP API and console (docs/alerts.md, docs/api.md)."""

    routing: Path | None = Field(
        None,
        description="routing file (YAML); default: the built-in one (every team: its MQTT "
        "topic, the console and, if TRYGG_WEBHOOK_URL is set, the webhook named 'default')",
    )
    webhooks: dict[str, str] = Field(
        default_factory=dict,
        description='named webhooks for the routing file, as JSON: {"leader": "https://..."}; '
        "TRYGG_WEBHOOK_URL is the one named 'default'",
    )
    http_host: str = Field("127.0.0.1", min_length=1, description="the API and console listen here")
    http_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="the API and console port (0: no HTTP server)",
        json_schema_extra=unit("port"),
    )
    http_max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="the largest request body the API reads; a larger one is refused"
        " (413) before it is read, and a request without a valid token before its body",
        json_schema_extra=unit("bytes"),
    )
    public_url: str | None = Field(None, description="the console's URL as staff reach it")
    session_enrol_minutes: int = Field(
        10,
        ge=1,
        le=1440,
        description="an enrolment link or QR code can be exchanged for a phone session this long,"
        " once",
        json_schema_extra=unit("minutes"),
    )
    session_device_days: int = Field(
        30,
        ge=1,
        le=366,
        description="an enrolled phone's session lasts this long from its enrolment (fixed; then"
        " the team leader enrols it again); revoked at once by the leader or an admin",
        json_schema_extra=unit("days"),
    )
    session_signin_hours: int = Field(
        12,
        ge=1,
        le=168,
        description="a console session from an identity-provider sign-in, or from a bearer token"
        " typed into the console, lasts this long (fixed: one shift)",
        json_schema_extra=unit("hours"),
    )
    oidc_issuer: str | None = Field(
        None,
        description="the identity provider's issuer URL (OpenID Connect); set, the console"
        " offers its sign-in (authorization code with PKCE)",
    )
    oidc_client_id: str | None = Field(None, description="trygg's client id at the provider")
    oidc_client_secret: str | None = Field(
        None, description="trygg's client secret at the provider (none: a public client, PKCE only)"
    )
    oidc_scopes: str = Field("openid profile", description="scopes asked for, space-separated")
    oidc_username_claim: str = Field(
        "preferred_username", min_length=1, description="the claim that is the trygg user name"
    )
    oidc_role_claim: str | None = Field(
        None,
        description="a claim with the trygg role (and TRYGG_OIDC_TEAMS_CLAIM the teams): the user"
        " is created or updated from it at each sign-in; unset, the user must exist in trygg"
        " (trygg users add) and keeps its role and teams",
    )
    oidc_teams_claim: str | None = Field(
        None, description="a claim with the user's teams: a list, or names separated by spaces"
    )
    smtp_host: str | None = Field(None, description="SMTP server for the e-mail channel")
    smtp_port: int = Field(
        25,
        ge=1,
        le=65535,
        description="SMTP port (587 with STARTTLS, 465 with TLS)",
        json_schema_extra=unit("port"),
    )
    smtp_from: str = Field("trygg@localhost", description="From: address of alert e-mails")
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    notify_retry_initial_s: float = Field(
        0.5,
        gt=0,
        le=3600,
        description="wait before a failed notification's first retry (doubles each time) (seconds)",
        json_schema_extra=unit("seconds"),
    )
    notify_retry_max_s: float = Field(
        15.0,
        gt=0,
        le=86400,
        description="longest wait between retries of a notification (jittered) (seconds)",
        json_schema_extra=unit("seconds"),
    )
    notify_give_up: dict[str, str] = Field(
        default_factory=dict,
        description='how long a notification is retried, as JSON: {"email": "2h", '
        '"webhook.yellow": "30m", "green": "10m"} (channel.severity, channel or severity; '
        'a duration or "never"); default: red never, yellow and green 1h',
    )
