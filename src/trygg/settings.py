"""Settings: ``TRYGG_*`` environment variables, over a TOML config file, over defaults.

``TRYGG_CONFIG`` (or ``--config``) names the file. Every field below is also
an environment variable: ``mqtt_url`` is ``TRYGG_MQTT_URL``. The README lists
them; docker-compose.yml only uses names defined here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRYGG_", extra="forbid")

    site: str = Field("demo", description="the {site} in MQTT topics")
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://user:pass@host:port")
    mqtt_client_id: str = Field("trygg-ingest", description="MQTT client id (persistent session)")
    mqtt_session_expiry: int = Field(3600, description="seconds the broker keeps our session")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/trygg")
    registry: Path | None = Field(None, description="registry YAML to load at start")
    rules_dir: Path | None = Field(None, description="rule catalogue directory")
    webhook_url: str | None = Field(None, description="POST every routed alert here")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for X-Trygg-Signature")
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    batch_max: int = Field(2000, description="events per database write")
    batch_wait_ms: int = Field(20, description="longest wait to fill a batch")
    spool_dir: Path = Field(
        Path("trygg-spool"), description="durable local hand-off to the database"
    )
    spool_max_mb: int = Field(4096, description="stop taking messages when this much is unstored")


def load_settings(config: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults < config file < environment < explicit overrides."""
    path = config or (Path(os.environ["TRYGG_CONFIG"]) if os.environ.get("TRYGG_CONFIG") else None)

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    values = {k: v for k, v in overrides.items() if v is not None}
    return Settings.model_validate(_FromFile(**values).model_dump())  # type: ignore[arg-type]


def mqtt_params(url: str) -> tuple[str, int, str | None, str | None, bool]:
    """``mqtt[s]://user:pass@host:port`` -> (host, port, user, password, tls)."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"an MQTT URL starts with mqtt:// or mqtts://, not {url!r}")
    tls = u.scheme == "mqtts"
    return (
        u.hostname or "127.0.0.1",
        u.port or (8883 if tls else 1883),
        unquote(u.username) if u.username else None,
        unquote(u.password) if u.password else None,
        tls,
    )
