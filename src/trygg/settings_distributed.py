"""The distributed runner's settings: bridges and Faust workers on Kafka
(docs/distributed.md).

A group of the fields :class:`trygg.settings.Settings` is made of; the checks of
their values are in trygg.settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from trygg.settings_units import TOPIC_LEVEL, unit

# A Kafka topic's name, as every kafka_*_topic setting takes it.
KafkaTopic = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        json_schema_extra={
            "valid": "a Kafka topic name: up to 249 letters, digits, '.', '_' or '-'"
        },
    ),
]


class DistributedSettings(BaseModel):
    """The distributed runner: bridges and Faust workers on Kafka (docs/distributed.md)."""

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", min_length=1, description="Kafka bootstrap servers"
    )
    kafka_events_topic: KafkaTopic = Field("trygg-events", description="events and timer ticks")
    kafka_dead_letters_topic: KafkaTopic = Field("trygg-dead-letters", description="dead letters")
    kafka_signals_topic: KafkaTopic = Field(
        "trygg-signals", description="rule signals, resets and alert ticks, by resident"
    )
    kafka_records_topic: KafkaTopic = Field(
        "trygg-records", description="alert lifecycle records for the database, by resident"
    )
    kafka_notifications_topic: KafkaTopic = Field(
        "trygg-notifications", description="notifications to deliver, by alert"
    )
    kafka_partitions: int = Field(
        12,
        ge=1,
        le=10000,
        description="partitions of the keyed topics: the most workers that can share the work",
        json_schema_extra=unit("partitions"),
    )
    kafka_replication: int = Field(
        1,
        ge=1,
        le=100,
        description="replication factor (3 on a real cluster)",
        json_schema_extra=unit("copies"),
    )
    kafka_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=100,
        description="min.insync.replicas of trygg's topics: copies that must have a record "
        "before acks=all succeeds (2 with replication 3; unset = the broker's default)",
        json_schema_extra=unit("copies"),
    )
    kafka_retention_hours: int = Field(
        168,
        ge=1,
        le=876600,
        description="retention of the non-compacted topics (hours)",
        json_schema_extra=unit("hours"),
    )
    bridge_group: str = Field(
        "trygg-bridge",
        pattern=TOPIC_LEVEL,
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
        json_schema_extra=unit("port"),
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
        json_schema_extra=unit("seconds"),
    )
    worker_timer_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often a worker scans for timers (seconds)",
        json_schema_extra=unit("seconds"),
    )
    relay_after_s: float = Field(
        0.75,
        ge=0,
        le=60,
        description="a bridge pages an immediate alarm (a fall, a button, a pull cord, a fire) "
        "itself when no worker has notified it this many seconds after the bridge forwarded it "
        "(workers rebalancing or dead); 0: off. Wall clock only (docs/distributed.md, 'The relay')",
        json_schema_extra=unit("seconds"),
    )
    # Tuning for tests against the tansu broker only; leave unset (None) on real Kafka.
    kafka_producer_max_batch_size: int | None = Field(
        None,
        ge=1,
        description="TEST ONLY (tansu): 1 = one record per producer batch",
        json_schema_extra=unit("bytes"),
    )
    kafka_producer_linger_ms: float | None = Field(
        None,
        ge=0,
        le=60_000,
        description="TEST ONLY (tansu): producer linger; unset = client default (milliseconds)",
        json_schema_extra=unit("milliseconds"),
    )
    kafka_fetch_max_wait_ms: int | None = Field(
        None,
        ge=0,
        le=60_000,
        description="TEST ONLY (tansu): consumer fetch wait; unset = Faust's 1500 ms "
        "(milliseconds)",
        json_schema_extra=unit("milliseconds"),
    )
    # Failover (docs/distributed.md, "Failover"): how soon a dead worker's partitions move.
    kafka_session_timeout_s: float = Field(
        6.0,
        ge=1,
        le=3600,
        description="worker consumer session timeout: a worker silent this long is dropped "
        "and its partitions move (production; Kafka's broker allows 6-1800 s by default)",
        json_schema_extra=unit("seconds"),
    )
    kafka_heartbeat_interval_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="worker heartbeat interval: how soon a worker hears of a rebalance; "
        "at most a third of the session timeout",
        json_schema_extra=unit("seconds"),
    )
    kafka_group_instance_id: str | None = Field(
        None,
        min_length=1,
        description="static membership: a name per worker, stable across restarts; a "
        "restart within the session timeout then moves no partition (unset: dynamic)",
    )
