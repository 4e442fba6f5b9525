"""The pipeline's settings: the broker, the database, the registry and rules,
the webhook, logs, batches and the spool.

The first group of the fields :class:`trygg.settings.Settings` is made of (one
module a group, so that each stays readable on its own); the checks of their
values are in trygg.settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from trygg.settings_units import TOPIC_LEVEL, unit


class PipelineSettings(BaseModel):
    """The pipeline every runner shares: broker, database, registry, rules, spool."""

    site: str = Field(
        "demo",
        pattern=TOPIC_LEVEL,
        description="the {site} in MQTT topics",
        json_schema_extra={"valid": "a name without /, +, # or spaces (one MQTT topic level)"},
    )
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://user:pass@host:port")
    mqtt_client_id: str = Field(
        "trygg-ingest", min_length=1, description="MQTT client id (persistent session)"
    )
    mqtt_session_expiry: int = Field(
        3600,
        ge=0,
        le=4294967295,
        description="seconds the broker keeps our session",
        json_schema_extra=unit("seconds"),
    )
    mqtt_shared_group: str | None = Field(
        None,
        pattern=TOPIC_LEVEL,
        description="share device topics with other ingest processes ($share/<group>/...)",
        json_schema_extra={"valid": "a name without /, +, # or spaces"},
    )
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/trygg")
    registry: Path | None = Field(None, description="registry YAML to load at start")
    registry_reload_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="how often registry and care-plan changes are picked up (seconds)",
        json_schema_extra=unit("seconds"),
    )
    rules_dir: Path | None = Field(
        None,
        description="rule catalogue directory: recorded as the active version at the first "
        "start; after that the database's active version runs (trygg rules publish)",
    )
    webhook_url: str | None = Field(None, description="POST every routed alert here")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for X-Trygg-Signature")
    log_format: Literal["json", "console"] = "console"
    log_level: str = Field(
        "INFO",
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL",
        json_schema_extra={"valid": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"},
    )
    max_payload_bytes: int = Field(
        256 * 1024,
        ge=1,
        le=268435455,
        description="an MQTT payload above this is a dead letter, refused unread "
        "(the broker's max_packet_size a little above it refuses it at the door) (bytes)",
        json_schema_extra=unit("bytes"),
    )
    batch_max: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="events per database write",
        json_schema_extra=unit("events"),
    )
    batch_wait_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="extra wait to fill a batch (0: take what is queued, never delay an alarm) "
        "(milliseconds)",
        json_schema_extra=unit("milliseconds"),
    )
    spool_dir: Path = Field(
        Path("trygg-spool"), description="durable local hand-off to the database"
    )
    spool_max_mb: int = Field(
        4096,
        ge=1,
        le=1 << 24,
        description="stop taking messages when this much is unstored (MiB)",
        json_schema_extra=unit("MiB"),
    )
    store_stall_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="/readyz is not ready when nothing could be stored for this long "
        "while the spool holds records (seconds)",
        json_schema_extra=unit("seconds"),
    )
