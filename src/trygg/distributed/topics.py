"""trygg's Kafka topics: names, partitions and retention from the settings.

``trygg kafka topics`` creates them (idempotently) with the aiokafka admin
client. The keyed topics (events, signals, records) and the workers' table
changelogs share one partition count, ``kafka_partitions``: Faust requires a
table's changelog to have as many partitions as the stream that writes it,
and the count bounds how many workers can share the work.
"""

from __future__ import annotations

from dataclasses import dataclass

from trygg.settings import Settings

RULES_TABLE = "rules-state"
ALERTS_TABLE = "alerts-state"
NOTIFY_TABLE = "notify-outbox"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    purpose: str


def changelog_name(settings: Settings, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{settings.worker_id}-{table}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    s = settings
    n = s.kafka_partitions
    # acks=all waits for min.insync.replicas copies: with replication 3 and 2, a
    # broker can be down and no acknowledged record lives on one disk only
    isr = (
        {"min.insync.replicas": str(s.kafka_min_insync_replicas)}
        if s.kafka_min_insync_replicas is not None
        else {}
    )
    keep = {
        "cleanup.policy": "delete",
        "retention.ms": str(s.kafka_retention_hours * 3600_000),
        **isr,
    }
    compact = {"cleanup.policy": "compact", **isr}
    return [
        TopicSpec(s.kafka_events_topic, n, keep, "validated events and timer ticks, by resident"),
        TopicSpec(s.kafka_dead_letters_topic, n, keep, "dead letters with raw bytes and reason"),
        TopicSpec(s.kafka_signals_topic, n, keep, "rule signals, resets, alert ticks, actions"),
        TopicSpec(s.kafka_records_topic, n, keep, "alert lifecycle records for the database"),
        TopicSpec(s.kafka_notifications_topic, n, keep, "notifications to deliver"),
        TopicSpec(changelog_name(s, RULES_TABLE), n, compact, "rule state per resident"),
        TopicSpec(changelog_name(s, ALERTS_TABLE), n, compact, "alert state per resident"),
        TopicSpec(changelog_name(s, NOTIFY_TABLE), n, compact, "notifications to retry, by alert"),
    ]


async def create_topics(settings: Settings) -> list[tuple[str, str]]:
    """Create missing topics; returns (name, "created" | "exists") for each."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        specs = topic_specs(settings)
        new = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=settings.kafka_replication,
                topic_configs=t.config,
            )
            for t in specs
            if t.name not in existing
        ]
        if new:
            await admin.create_topics(new)
        return [(t.name, "exists" if t.name in existing else "created") for t in specs]
    finally:
        await admin.close()
