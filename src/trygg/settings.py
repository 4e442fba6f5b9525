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
    mqtt_shared_group: str | None = Field(
        None, description="share device topics with other ingest processes ($share/<group>/...)"
    )
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/trygg")
    registry: Path | None = Field(None, description="registry YAML to load at start")
    registry_reload_seconds: float = Field(
        10.0, description="how often registry and care-plan changes are picked up"
    )
    rules_dir: Path | None = Field(
        None,
        description="rule catalogue directory: recorded as the active version at the first "
        "start; after that the database's active version runs (trygg rules publish)",
    )
    webhook_url: str | None = Field(None, description="POST every routed alert here")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for X-Trygg-Signature")
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    max_payload_bytes: int = Field(
        256 * 1024,
        description="an MQTT payload above this is a dead letter, refused unread "
        "(the broker's max_packet_size a little above it refuses it at the door)",
    )
    batch_max: int = Field(2000, description="events per database write")
    batch_wait_ms: int = Field(
        0, description="extra wait to fill a batch (0: take what is queued, never delay an alarm)"
    )
    spool_dir: Path = Field(
        Path("trygg-spool"), description="durable local hand-off to the database"
    )
    spool_max_mb: int = Field(4096, description="stop taking messages when this much is unstored")
    store_stall_s: float = Field(
        30.0,
        description="/readyz is not ready when nothing could be stored for this long "
        "while the spool holds records",
    )
    # --- alerting: routing, channels, HTTP API and console (docs/alerts.md, docs/api.md)
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
    http_host: str = Field("127.0.0.1", description="the API and console listen here")
    http_port: int = Field(8080, description="the API and console port (0: no HTTP server)")
    public_url: str | None = Field(None, description="the console's URL as staff reach it")
    smtp_host: str | None = Field(None, description="SMTP server for the e-mail channel")
    smtp_port: int = Field(25, description="SMTP port (587 with STARTTLS, 465 with TLS)")
    smtp_from: str = Field("trygg@localhost", description="From: address of alert e-mails")
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    notify_retry_initial_s: float = Field(
        0.5, description="wait before a failed notification's first retry (doubles each time)"
    )
    notify_retry_max_s: float = Field(
        15.0, description="longest wait between retries of a notification (jittered)"
    )
    notify_give_up: dict[str, str] = Field(
        default_factory=dict,
        description='how long a notification is retried, as JSON: {"email": "2h", '
        '"webhook.yellow": "30m", "green": "10m"} (channel.severity, channel or severity; '
        'a duration or "never"); default: red never, yellow and green 1h',
    )
    # --- auditing: response-time targets, reports and retention (docs/auditing.md)
    report_timezone: str = Field("Europe/Oslo", description="local time for hours, days, weeks")
    target_answer_60s: float = Field(0.975, description="share of alerts answered within 60 s")
    target_answer_180s: float = Field(0.99, description="share of alerts answered within 180 s")
    exception_answer_s: int = Field(
        180, description="answer time over which an alert needs an exception report (60 or 180)"
    )
    exception_arrival_min: int = Field(60, description="arrival time that needs an exception")
    retention_events_days: int = Field(90, description="raw sensor events are dropped after this")
    retention_dead_letters_days: int = Field(30, description="dead letters are dropped after this")
    retention_records_days: int = Field(
        3653, description="alerts, lifecycle records and exception reports (10 years)"
    )
    retention_access_log_days: int = Field(3653, description="the access log (10 years)")
    retention_batch: int = Field(10000, description="rows per DELETE batch in retention")
    # --- the distributed runner: bridges and Faust workers on Kafka (docs/distributed.md)
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_events_topic: str = Field("trygg-events", description="events and timer ticks")
    kafka_dead_letters_topic: str = Field("trygg-dead-letters", description="dead letters")
    kafka_signals_topic: str = Field(
        "trygg-signals", description="rule signals, resets and alert ticks, by resident"
    )
    kafka_records_topic: str = Field(
        "trygg-records", description="alert lifecycle records for the database, by resident"
    )
    kafka_notifications_topic: str = Field(
        "trygg-notifications", description="notifications to deliver, by alert"
    )
    kafka_partitions: int = Field(
        12, description="partitions of the keyed topics: the most workers that can share the work"
    )
    kafka_replication: int = Field(1, description="replication factor (3 on a real cluster)")
    kafka_retention_hours: int = Field(168, description="retention of the non-compacted topics")
    bridge_group: str = Field(
        "trygg-bridge", description="MQTT shared-subscription group of the bridges"
    )
    worker_id: str = Field(
        "trygg-worker", description="Faust app id: consumer group and changelog topic prefix"
    )
    worker_data_dir: Path = Field(Path("trygg-worker-data"), description="Faust's local data")
    worker_web: bool = Field(False, description="run Faust's web server (stats) for the worker")
    worker_web_host: str = Field("127.0.0.1", description="where the worker's web server binds")
    worker_web_port: int = Field(6066, description="the worker's web server port")
    worker_clock: Literal["wall", "event"] = Field(
        "wall",
        description="what drives absence timers: the wall clock (live), or the event time seen "
        "on each partition less worker_event_clock_lag_s (back-fills through the cluster, tests)",
    )
    worker_event_clock_lag_s: float = Field(
        120.0, description="event clock: how far behind a partition's newest event timers run"
    )
    worker_timer_interval_s: float = Field(0.5, description="how often a worker scans for timers")
    # Tuning for tests against the tansu broker only; leave unset (None) on real Kafka.
    kafka_producer_max_batch_size: int | None = Field(
        None, description="TEST ONLY (tansu): 1 = one record per producer batch"
    )
    kafka_producer_linger_ms: float | None = Field(
        None, description="TEST ONLY (tansu): producer linger; unset = client default"
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        None, description="TEST ONLY (tansu): consumer fetch wait; unset = Faust's 1500 ms"
    )
    kafka_session_timeout_s: float | None = Field(
        None, description="TEST ONLY: consumer session timeout; unset = Faust's 60 s"
    )


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
