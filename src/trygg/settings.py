"""Settings: ``TRYGG_*`` environment variables, over a TOML config file, over defaults.

``TRYGG_CONFIG`` (or ``--config``) names the file. Every field below is also
an environment variable: ``mqtt_url`` is ``TRYGG_MQTT_URL``. The README lists
them; docker-compose.yml only uses names defined here.

Every number has a range and a unit (``json_schema_extra["unit"]``). A wrong
value is reported in one plain line that names the variable, what it holds and
what would be valid (:func:`read_settings`)::

    TRYGG_TARGET_ANSWER_60S=97.5: must be a share between 0 and 1, such as 0.975 (or 97.5%)
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic.config import JsonDict
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from trygg.plain import plain_message


def _percent(v: Any) -> Any:
    """``97.5%`` -> 0.975; anything else is left to the float check."""
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            return float(v.strip()[:-1].strip()) / 100
        except ValueError:
            return v
    return v


# A share of alerts: 0.975, or written as a percentage with its sign, "97.5%".
Share = Annotated[float, BeforeValidator(_percent)]


def _share(example: str) -> JsonDict:
    pct = f"{float(example) * 100:g}%"
    return {"unit": "share", "valid": f"a share between 0 and 1, such as {example} (or {pct})"}


_TOPIC_LEVEL = r"^[^/+#\s]+$"  # one MQTT topic level: no /, +, # or spaces
_KAFKA_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
_TOPIC: JsonDict = {"valid": "a Kafka topic name: up to 249 letters, digits, '.', '_' or '-'"}


def _unit(unit: str, valid: str | None = None) -> JsonDict:
    return {"unit": unit} if valid is None else {"unit": unit, "valid": valid}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRYGG_", extra="forbid")

    site: str = Field(
        "demo",
        pattern=_TOPIC_LEVEL,
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
        json_schema_extra=_unit("seconds"),
    )
    mqtt_shared_group: str | None = Field(
        None,
        pattern=_TOPIC_LEVEL,
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
        json_schema_extra=_unit("seconds"),
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
        json_schema_extra=_unit("bytes"),
    )
    batch_max: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="events per database write",
        json_schema_extra=_unit("events"),
    )
    batch_wait_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        description="extra wait to fill a batch (0: take what is queued, never delay an alarm) "
        "(milliseconds)",
        json_schema_extra=_unit("milliseconds"),
    )
    spool_dir: Path = Field(
        Path("trygg-spool"), description="durable local hand-off to the database"
    )
    spool_max_mb: int = Field(
        4096,
        ge=1,
        le=1 << 24,
        description="stop taking messages when this much is unstored (MiB)",
        json_schema_extra=_unit("MiB"),
    )
    store_stall_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="/readyz is not ready when nothing could be stored for this long "
        "while the spool holds records (seconds)",
        json_schema_extra=_unit("seconds"),
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
    http_host: str = Field("127.0.0.1", min_length=1, description="the API and console listen here")
    http_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="the API and console port (0: no HTTP server)",
        json_schema_extra=_unit("port"),
    )
    http_max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="the largest request body the API reads; a larger one is refused"
        " (413) before it is read, and a request without a valid token before its body",
        json_schema_extra=_unit("bytes"),
    )
    public_url: str | None = Field(None, description="the console's URL as staff reach it")
    session_enrol_minutes: int = Field(
        10,
        ge=1,
        le=1440,
        description="an enrolment link or QR code can be exchanged for a phone session this long,"
        " once",
        json_schema_extra=_unit("minutes"),
    )
    session_device_days: int = Field(
        30,
        ge=1,
        le=366,
        description="an enrolled phone's session lasts this long from its enrolment (fixed; then"
        " the team leader enrols it again); revoked at once by the leader or an admin",
        json_schema_extra=_unit("days"),
    )
    session_signin_hours: int = Field(
        12,
        ge=1,
        le=168,
        description="a console session from an identity-provider sign-in, or from a bearer token"
        " typed into the console, lasts this long (fixed: one shift)",
        json_schema_extra=_unit("hours"),
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
        json_schema_extra=_unit("port"),
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
        json_schema_extra=_unit("seconds"),
    )
    notify_retry_max_s: float = Field(
        15.0,
        gt=0,
        le=86400,
        description="longest wait between retries of a notification (jittered) (seconds)",
        json_schema_extra=_unit("seconds"),
    )
    notify_give_up: dict[str, str] = Field(
        default_factory=dict,
        description='how long a notification is retried, as JSON: {"email": "2h", '
        '"webhook.yellow": "30m", "green": "10m"} (channel.severity, channel or severity; '
        'a duration or "never"); default: red never, yellow and green 1h',
    )
    # --- auditing: response-time targets, reports and retention (docs/auditing.md)
    report_timezone: str = Field("Europe/Oslo", description="local time for hours, days, weeks")
    target_answer_60s: Share = Field(
        0.975,
        gt=0,
        le=1,
        description="share of alerts answered within 60 s (0.975, or 97.5%)",
        json_schema_extra=_share("0.975"),
    )
    target_answer_180s: Share = Field(
        0.99,
        gt=0,
        le=1,
        description="share of alerts answered within 180 s (0.99, or 99%)",
        json_schema_extra=_share("0.99"),
    )
    exception_answer_s: int = Field(
        180,
        ge=1,
        le=86400,
        description="answer time over which an alert needs an exception report (60 or 180) "
        "(seconds)",
        json_schema_extra=_unit("seconds"),
    )
    exception_arrival_min: int = Field(
        60,
        ge=1,
        le=1440,
        description="arrival time that needs an exception (minutes)",
        json_schema_extra=_unit("minutes"),
    )
    retention_events_days: int = Field(
        90,
        ge=1,
        le=36525,
        description="raw sensor events are dropped after this (days)",
        json_schema_extra=_unit("days"),
    )
    retention_dead_letters_days: int = Field(
        30,
        ge=1,
        le=36525,
        description="dead letters are dropped after this (days)",
        json_schema_extra=_unit("days"),
    )
    retention_records_days: int = Field(
        3653,
        ge=1,
        le=36525,
        description="alerts, lifecycle records and exception reports (days; 10 years)",
        json_schema_extra=_unit("days"),
    )
    retention_access_log_days: int = Field(
        3653,
        ge=1,
        le=36525,
        description="the access log (days; 10 years)",
        json_schema_extra=_unit("days"),
    )
    retention_batch: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="rows per DELETE batch in retention",
        json_schema_extra=_unit("rows"),
    )
    # --- the distributed runner: bridges and Faust workers on Kafka (docs/distributed.md)
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", min_length=1, description="Kafka bootstrap servers"
    )
    kafka_events_topic: str = Field(
        "trygg-events",
        pattern=_KAFKA_TOPIC,
        description="events and timer ticks",
        json_schema_extra=_TOPIC,
    )
    kafka_dead_letters_topic: str = Field(
        "trygg-dead-letters",
        pattern=_KAFKA_TOPIC,
        description="dead letters",
        json_schema_extra=_TOPIC,
    )
    kafka_signals_topic: str = Field(
        "trygg-signals",
        pattern=_KAFKA_TOPIC,
        description="rule signals, resets and alert ticks, by resident",
        json_schema_extra=_TOPIC,
    )
    kafka_records_topic: str = Field(
        "trygg-records",
        pattern=_KAFKA_TOPIC,
        description="alert lifecycle records for the database, by resident",
        json_schema_extra=_TOPIC,
    )
    kafka_notifications_topic: str = Field(
        "trygg-notifications",
        pattern=_KAFKA_TOPIC,
        description="notifications to deliver, by alert",
        json_schema_extra=_TOPIC,
    )
    kafka_partitions: int = Field(
        12,
        ge=1,
        le=10000,
        description="partitions of the keyed topics: the most workers that can share the work",
        json_schema_extra=_unit("partitions"),
    )
    kafka_replication: int = Field(
        1,
        ge=1,
        le=100,
        description="replication factor (3 on a real cluster)",
        json_schema_extra=_unit("copies"),
    )
    kafka_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=100,
        description="min.insync.replicas of trygg's topics: copies that must have a record "
        "before acks=all succeeds (2 with replication 3; unset = the broker's default)",
        json_schema_extra=_unit("copies"),
    )
    kafka_retention_hours: int = Field(
        168,
        ge=1,
        le=876600,
        description="retention of the non-compacted topics (hours)",
        json_schema_extra=_unit("hours"),
    )
    bridge_group: str = Field(
        "trygg-bridge",
        pattern=_TOPIC_LEVEL,
        description="MQTT shared-subscription group of the bridges",
        json_schema_extra={"valid": "a name without /, +, # or spaces"},
    )
    worker_id: str = Field(
        "trygg-worker",
        min_length=1,
        description="Faust app id: consumer group and changelog topic prefix",
    )
    worker_data_dir: Path = Field(Path("trygg-worker-data"), description="Faust's local data")
    worker_web: bool = Field(False, description="run Faust's web server (stats) for the worker")
    worker_web_host: str = Field("127.0.0.1", description="where the worker's web server binds")
    worker_web_port: int = Field(
        6066,
        ge=1,
        le=65535,
        description="the worker's web server port",
        json_schema_extra=_unit("port"),
    )
    worker_clock: Literal["wall", "event"] = Field(
        "wall",
        description="what drives absence timers: the wall clock (live), or the event time seen "
        "on each partition less worker_event_clock_lag_s (back-fills through the cluster, tests)",
    )
    worker_event_clock_lag_s: float = Field(
        120.0,
        ge=0,
        le=86400,
        description="event clock: how far behind a partition's newest event timers run (seconds)",
        json_schema_extra=_unit("seconds"),
    )
    worker_timer_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often a worker scans for timers (seconds)",
        json_schema_extra=_unit("seconds"),
    )
    # Tuning for tests against the tansu broker only; leave unset (None) on real Kafka.
    kafka_producer_max_batch_size: int | None = Field(
        None,
        ge=1,
        description="TEST ONLY (tansu): 1 = one record per producer batch",
        json_schema_extra=_unit("bytes"),
    )
    kafka_producer_linger_ms: float | None = Field(
        None,
        ge=0,
        le=60_000,
        description="TEST ONLY (tansu): producer linger; unset = client default (milliseconds)",
        json_schema_extra=_unit("milliseconds"),
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        None,
        ge=0,
        le=60_000,
        description="TEST ONLY (tansu): consumer fetch wait; unset = Faust's 1500 ms "
        "(milliseconds)",
        json_schema_extra=_unit("milliseconds"),
    )
    # Failover (docs/distributed.md, "Failover"): how soon a dead worker's partitions move.
    kafka_session_timeout_s: float = Field(
        6.0,
        ge=1,
        le=3600,
        description="worker consumer session timeout: a worker silent this long is dropped "
        "and its partitions move (production; Kafka's broker allows 6-1800 s by default)",
        json_schema_extra=_unit("seconds"),
    )
    kafka_heartbeat_interval_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="worker heartbeat interval: how soon a worker hears of a rebalance; "
        "at most a third of the session timeout",
        json_schema_extra=_unit("seconds"),
    )
    kafka_group_instance_id: str | None = Field(
        None,
        min_length=1,
        description="static membership: a name per worker, stable across restarts; a "
        "restart within the session timeout then moves no partition (unset: dynamic)",
    )

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


# ------------------------------------------------------------------- loading --

SECRET = frozenset({"webhook_secret", "smtp_password", "oidc_client_secret"})
_URLS = frozenset({"mqtt_url", "database_url", "webhook_url", "public_url", "oidc_issuer"})


class SettingsError(ValueError):
    """Settings that cannot be used; one plain line a problem (``.problems``)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def env_name(field: str) -> str:
    return f"TRYGG_{field.upper()}"


def valid_text(field: str) -> str | None:
    """What a valid value of ``field`` is, in words: 'a whole number of seconds from 0 to 60'."""
    info = Settings.model_fields.get(field)
    if info is None:
        return None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if isinstance(extra.get("valid"), str):
        return str(extra["valid"])
    ann = info.annotation
    args = [a for a in get_args(ann) if a is not type(None)]
    if args:
        ann = args[0]
    lits = get_args(ann) if get_origin(ann) is Literal else ()
    if lits:
        return "one of " + ", ".join(str(x) for x in lits)
    if ann is bool:
        return "true or false"
    if ann not in (int, float):
        return None
    lo, hi = _bounds(info)
    unit = extra.get("unit")
    if unit == "port":
        noun = "a port number"
    else:
        noun = "a whole number" if ann is int else "a number"
        if unit:
            noun += f" of {unit}"
    return noun + _range(lo, hi)


def _bounds(info: FieldInfo) -> tuple[tuple[str, float] | None, tuple[str, float] | None]:
    """A field's lower and upper bound from its Field(ge/gt/le/lt=...) metadata."""
    lo: tuple[str, float] | None = None
    hi: tuple[str, float] | None = None
    for m in info.metadata:
        for kind in ("ge", "gt"):
            if isinstance(getattr(m, kind, None), int | float):
                lo = (kind, float(getattr(m, kind)))
        for kind in ("le", "lt"):
            if isinstance(getattr(m, kind, None), int | float):
                hi = (kind, float(getattr(m, kind)))
    return lo, hi


def _n(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _range(lo: tuple[str, float] | None, hi: tuple[str, float] | None) -> str:
    if lo and hi and lo[0] == "ge" and hi[0] == "le":
        return f" from {_n(lo[1])} to {_n(hi[1])}"
    parts = []
    if lo:
        parts.append(f"at least {_n(lo[1])}" if lo[0] == "ge" else f"more than {_n(lo[1])}")
    if hi:
        parts.append(f"at most {_n(hi[1])}" if hi[0] == "le" else f"less than {_n(hi[1])}")
    return (", " + " and ".join(parts)) if parts else ""


def _shown(field: str, value: Any) -> str:
    """A value as the user wrote it, secrets hidden."""
    if field in SECRET:
        return "(hidden)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if field in _URLS and isinstance(text, str) and "://" in text:
        try:
            u = urlsplit(text)
            if u.password:
                netloc = u.netloc.replace(f":{u.password}@", ":***@")
                text = urlunsplit(u._replace(netloc=netloc))
        except ValueError:
            pass
    return text


def _toml_key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (or [table]) of a TOML settings file."""
    out: dict[str, int] = {}
    key = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
    table = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
    in_table = False
    for n, line in enumerate(text.splitlines(), 1):
        if m := table.match(line):
            out.setdefault(m.group(1), n)
            in_table = True
        elif not in_table and (m := key.match(line)):
            out.setdefault(next(g for g in m.groups() if g), n)
    return out


class _Env(EnvSettingsSource):
    """The environment source, but a variable that is not valid JSON (a dict
    setting) is noted and left out instead of stopping at the first."""

    def __init__(self, settings_cls: type[BaseSettings], bad: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self.bad = bad

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError:
            self.bad[field_name] = f"must be JSON, such as {_JSON_EXAMPLE.get(field_name, '{}')}"
            return None


_JSON_EXAMPLE = {
    "webhooks": '{"leader": "https://..."}',
    "notify_give_up": '{"email": "2h", "green": "10m"}',
}


class _Without(PydanticBaseSettingsSource):
    """A source with some fields left out (those already reported as wrong)."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, drop: set[str]
    ) -> None:
        super().__init__(settings_cls)
        self.inner = inner
        self.drop = drop

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner().items() if k not in self.drop}


def _env_value(field: str) -> tuple[str, str] | None:
    want = env_name(field).upper()
    for k, v in os.environ.items():
        if k.upper() == want:
            return k, v
    return None


def read_settings(config: Path | None = None, **overrides: object) -> tuple[Settings, list[str]]:
    """Settings from defaults < config file < environment < explicit overrides, and
    every problem found on the way, one plain line each. A wrong value is left out
    (its default is used) so that the rest can still be checked."""
    problems: dict[str, str] = {}  # field (or a file's key) -> line
    path = config
    toml: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is None and os.environ.get("TRYGG_CONFIG"):
        path = Path(os.environ["TRYGG_CONFIG"])
        if not path.is_file():
            problems["TRYGG_CONFIG"] = f"TRYGG_CONFIG={path}: no such file"
            path = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
            toml = tomllib.loads(text)
            lines = _toml_key_lines(text)
        except OSError as exc:
            problems[str(path)] = f"{path}: cannot read: {exc.strerror}"
            path = None
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = re.search(r"\s*\(at line (\d+), column \d+\)$", msg)
            where = f"{path}:{m.group(1)}" if m else str(path)
            problems[str(path)] = f"{where}: not valid TOML: {msg[: m.start()] if m else msg}"
            path = None
    values = {k: v for k, v in overrides.items() if v is not None}

    def origin(field: str) -> str:
        if field in values:
            return f"--{field.replace('_', '-')}={_shown(field, values[field])}"
        env = _env_value(field)
        if env is not None:
            return f"{env[0]}={_shown(field, env[1])}"
        if field in toml:
            ln = lines.get(field)
            at = f"{path}:{ln}" if ln else str(path)
            return f"{at}: {field} = {_shown(field, toml[field])}"
        return f"{env_name(field)} (default)"

    drop: set[str] = set()
    for _ in range(len(Settings.model_fields) + 2):
        env_bad: dict[str, str] = {}
        try:
            s = _build(path, {k: v for k, v in values.items() if k not in drop}, drop, env_bad)
        except ValidationError as exc:
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                if field in drop:
                    continue
                drop.add(field)
                problems.setdefault(field, _problem(field, err, origin, toml, lines, path))
            continue
        finally:
            for field, reason in env_bad.items():
                problems.setdefault(field, f"{origin(field)}: {reason}")
        for field, reason in _cross_checks(s):
            problems.setdefault(field, f"{origin(field)}: {reason}")
        return s, list(problems.values())
    raise AssertionError("settings did not settle")  # pragma: no cover


def _problem(
    field: str,
    err: Any,
    origin: Any,
    toml: dict[str, Any],
    lines: dict[str, int],
    path: Path | None,
) -> str:
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(field, list(Settings.model_fields), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        ln = lines.get(field)
        at = f"{path}:{ln}" if ln else str(path)
        return f"{at}: {field}: not a trygg setting{hint}"
    if err["type"] in ("value_error", "assertion_error") or len(err["loc"]) > 1:
        reason = plain_message(err)
    else:
        valid = valid_text(field)
        reason = f"must be {valid}" if valid else plain_message(err)
    return f"{origin(field)}: {reason}"


def _cross_checks(s: Settings) -> list[tuple[str, str]]:
    out = []
    if s.notify_retry_max_s < s.notify_retry_initial_s:
        out.append(
            (
                "notify_retry_max_s",
                f"must be at least TRYGG_NOTIFY_RETRY_INITIAL_S ({s.notify_retry_initial_s:g} s)",
            )
        )
    return out


def _build(
    path: Path | None, values: dict[str, Any], drop: set[str], env_bad: dict[str, str]
) -> Settings:
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
            sources: list[PydanticBaseSettingsSource] = [init_settings, _Env(settings_cls, env_bad)]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(_Without(settings_cls, src, drop) for src in sources)

    checked = _FromFile(**values)
    # A plain Settings (picklable, no sources of its own) with the values just validated.
    return Settings.model_construct(_fields_set=checked.model_fields_set, **dict(checked))


def load_settings(config: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults < config file < environment < explicit overrides.

    Raises SettingsError (a ValueError) listing every problem, one plain line each.
    """
    s, problems = read_settings(config, **overrides)
    if problems:
        raise SettingsError(problems)
    return s


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
