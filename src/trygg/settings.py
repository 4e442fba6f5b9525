"""Settings: ``TRYGG_*`` environment variables, over a TOML config file, over defaults.

``TRYGG_CONFIG`` (or ``--config``) names the file. Every field is also
an environment variable: ``mqtt_url`` is ``TRYGG_MQTT_URL``. The README lists
them; docker-compose.yml only uses names defined here.

Every number has a range and a unit (``json_schema_extra["unit"]``). A wrong
value is reported in one plain line that names the variable, what it holds and
what would be valid (:func:`trygg.settings_load.read_settings`)::

    TRYGG_TARGET_ANSWER_60S=97.5: must be a share between 0 and 1, such as 0.975 (or 97.5%)

The fields are in groups, one module each (trygg.settings_pipeline,
settings_alerting, settings_auditing, settings_distributed); :class:`Settings`
combines them and holds the checks of their values. Reading them, with every
problem said at once, is trygg.settings_load.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trygg.settings_alerting import AlertingSettings
from trygg.settings_auditing import AuditingSettings
from trygg.settings_distributed import DistributedSettings
from trygg.settings_pipeline import PipelineSettings


# Pydantic orders the fields of several bases last base first: pipeline, alerting,
# auditing, distributed, as the README lists them and problems are reported.
class Settings(
    DistributedSettings, AuditingSettings, AlertingSettings, PipelineSettings, BaseSettings
):
    model_config = SettingsConfigDict(env_prefix="TRYGG_", extra="forbid")

    @field_validator("kafka_heartbeat_interval_s")
    @classmethod
    def _heartbeat(cls, v: float, info: ValidationInfo) -> float:
        session = info.data.get("kafka_session_timeout_s")
        if session is not None and v * 3 > session:
            raise ValueError(
                f"{v:g} s is more than a third of kafka_session_timeout_s ({session:g} s): "
                "two lost heartbeats would drop a live worker"
            )
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        try:
            mqtt_params(v)
        except ValueError:
            raise ValueError(
                "must be mqtt://[user:password@]host[:port] (mqtts:// with TLS)"
            ) from None
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        scheme = urlsplit(v).scheme if "://" in v else ""
        if scheme not in ("postgresql", "postgres") and not ("=" in v and "://" not in v):
            raise ValueError(
                "must be a PostgreSQL URL, postgresql://user@host:port/database "
                "(or a key=value connection string)"
            )
        return v

    @field_validator("webhook_url", "public_url", "oidc_issuer")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not _is_http_url(v):  # empty: not set (docker-compose's ${VAR:-})
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, v: dict[str, str]) -> dict[str, str]:
        for name, url in v.items():
            if not name.strip():
                raise ValueError("a webhook needs a name")
            if not _is_http_url(url):
                raise ValueError(f"webhook {name!r}: must be an http:// or https:// URL")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return v

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from(cls, v: str) -> str:
        if "@" not in v:
            raise ValueError("must be an e-mail address (name@host)")
        return v

    @field_validator("report_timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be a timezone name such as Europe/Oslo") from None
        return v

    @field_validator("notify_give_up")
    @classmethod
    def _give_up(cls, v: dict[str, str]) -> dict[str, str]:
        from trygg.alerts.contacts import Channel
        from trygg.durations import parse_duration
        from trygg.model import Severity

        channels = [c.value for c in Channel]
        severities = [s.value for s in Severity]
        keys = {*channels, *severities, *(f"{c}.{s}" for c in channels for s in severities)}
        for k, d in v.items():
            if k.strip().lower() not in keys:
                raise ValueError(
                    f"{k!r} is not a channel ({', '.join(channels)}), a severity "
                    f"({', '.join(severities)}) or channel.severity"
                )
            if str(d).strip().lower() != "never":
                try:
                    parse_duration(str(d))
                except ValueError:
                    raise ValueError(
                        f"{k!r}: {d!r} is not a duration (30m, 6h, 2d) or 'never'"
                    ) from None
        return v


def _is_http_url(v: str) -> bool:
    u = urlsplit(v)
    return u.scheme in ("http", "https") and bool(u.netloc)


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
