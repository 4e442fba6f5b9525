"""docker-compose.yml, checked without a Docker engine (none runs on these machines).

What can be checked here is checked: the file parses, every trygg service's
command is a real ``trygg`` command, every bind-mounted path exists in the
repository, every TRYGG_* variable is a setting trygg knows, and no password
has a default value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, trygg_cli
from trygg.distributed.topics import topic_specs
from trygg.settings import Settings

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


ONE_SHOT = {"migrate", "kafka-topics"}  # jobs that run once and exit


def _trygg_services() -> dict[str, dict]:  # type: ignore[type-arg]
    return {n: s for n, s in SERVICES.items() if s.get("build") == "."}


def test_every_trygg_service_runs_a_real_command() -> None:
    assert _trygg_services(), "no trygg service in docker-compose.yml"
    for name, svc in _trygg_services().items():
        args = [a for a in svc["command"] if not a.startswith("-")]
        out = trygg_cli(*args, "--help", check=False)
        assert out.returncode == 0, f"service {name}: `trygg {' '.join(args)}` is not a command"


def test_every_mounted_path_exists() -> None:
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).resolve().exists(), f"service {name} mounts missing {source}"


def test_every_trygg_variable_is_a_setting() -> None:
    known = {f"TRYGG_{f.upper()}" for f in Settings.model_fields}
    for name, svc in _trygg_services().items():
        for var in svc.get("environment", {}):
            if var.startswith("TRYGG_"):
                assert var in known, f"service {name} sets unknown {var}"


def test_no_default_passwords() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for m in re.finditer(r"\$\{(\w*PASSWORD\w*)([^}]*)\}", text):
        modifier = m.group(2)
        assert modifier == "" or modifier.startswith(":?"), f"{m.group(1)} has a default"
    assert "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?" in text


def test_images_health_checks_and_restart_policies() -> None:
    assert SERVICES["timescaledb"]["image"].startswith("timescale/timescaledb")
    assert SERVICES["mosquitto"]["image"].startswith("eclipse-mosquitto")
    for name in ("mosquitto", "timescaledb"):
        assert "healthcheck" in SERVICES[name]
    for name, svc in SERVICES.items():
        if name not in ONE_SHOT:
            assert svc.get("restart") == "unless-stopped", name
    assert Path(REPO / "Dockerfile").exists()


BROKERS = ("kafka-1", "kafka-2", "kafka-3")


def test_distributed_stack() -> None:
    """Kafka in KRaft mode, two bridges on one shared subscription, two workers."""
    for name in BROKERS:
        kafka = SERVICES[name]
        assert kafka["image"].startswith("apache/kafka")
        assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
        assert "healthcheck" in kafka and f"{name}-data" in COMPOSE["volumes"]
    bridges = [n for n, s in SERVICES.items() if s.get("command") == ["bridge"]]
    workers = [n for n, s in SERVICES.items() if s.get("command") == ["worker"]]
    assert len(bridges) == 2 and len(workers) == 2
    ids = {SERVICES[b]["environment"]["TRYGG_MQTT_CLIENT_ID"] for b in bridges}
    assert len(ids) == 2, "each bridge needs its own MQTT client id (persistent session)"
    assert {SERVICES[b]["environment"]["TRYGG_BRIDGE_GROUP"] for b in bridges} == {"trygg-bridge"}
    for w in workers:
        env = SERVICES[w]["environment"]
        assert "TRYGG_WORKER_WEB" not in env, "the worker's web server stays off in production"
        assert not any(k.startswith("TRYGG_KAFKA_PRODUCER") or "FETCH" in k for k in env), (
            "test-only Kafka settings (tansu) must not reach production"
        )
    # the embedded runner takes the same device topics: it is an opt-in profile only
    assert SERVICES["trygg"].get("profiles") == ["embedded"]


def test_kafka_is_a_three_broker_kraft_quorum() -> None:
    """Three brokers, each broker and controller (KRaft combined mode), one cluster, one
    quorum of all three: one broker can be down and the quorum keeps a majority."""
    envs = [SERVICES[n]["environment"] for n in BROKERS]
    assert sorted(int(e["KAFKA_NODE_ID"]) for e in envs) == [1, 2, 3]
    voters = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({e["CLUSTER_ID"] for e in envs}) == 1, "one cluster id on every broker"
    for name, e in zip(BROKERS, envs, strict=True):
        assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert e["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092", name
        assert "CONTROLLER://:9093" in e["KAFKA_LISTENERS"], name
        assert SERVICES[name]["volumes"] == [f"{name}-data:/var/lib/kafka/data"], name
    # every service that talks to Kafka knows all three and waits for them
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        if "TRYGG_KAFKA_BOOTSTRAP" in env:
            assert env["TRYGG_KAFKA_BOOTSTRAP"].split(",") == [f"{b}:9092" for b in BROKERS], name
    deps = SERVICES["kafka-topics"]["depends_on"]
    assert {b: deps[b]["condition"] for b in BROKERS} == dict.fromkeys(BROKERS, "service_healthy")


def test_kafka_keeps_three_copies_and_acks_need_two() -> None:
    """Replication factor 3 and min.insync.replicas 2, for trygg's topics (created by
    ``trygg kafka topics`` with the settings) and for the brokers' own (offsets, and
    any default)."""
    for name in BROKERS:
        e = SERVICES[name]["environment"]
        assert int(e["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3, name
        assert int(e["KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name
        assert int(e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3, name
        assert int(e["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == 3, name
        assert int(e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2, name
        assert str(e["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]) == "false", name
    env = SERVICES["kafka-topics"]["environment"]
    settings = Settings(
        kafka_replication=int(env["TRYGG_KAFKA_REPLICATION"]),
        kafka_min_insync_replicas=int(env["TRYGG_KAFKA_MIN_INSYNC_REPLICAS"]),
    )
    assert settings.kafka_replication == 3
    specs = topic_specs(settings)
    assert specs and all(t.config["min.insync.replicas"] == "2" for t in specs)
    # the bridges, workers and API take the same Kafka environment
    for name, svc in SERVICES.items():
        e = svc.get("environment") or {}
        if "TRYGG_KAFKA_BOOTSTRAP" in e:
            assert int(e["TRYGG_KAFKA_REPLICATION"]) == 3, name
            assert int(e["TRYGG_KAFKA_MIN_INSYNC_REPLICAS"]) == 2, name


def test_bridges_page_through_the_workers_channels() -> None:
    """A bridge's relay pages a stalled immediate alarm itself (docs/distributed.md, "The
    relay"): it needs the workers' notification settings and their way out."""
    bridges = [n for n, s in SERVICES.items() if s.get("command") == ["bridge"]]
    workers = [n for n, s in SERVICES.items() if s.get("command") == ["worker"]]
    channel_keys = {"TRYGG_WEBHOOK_URL", "TRYGG_WEBHOOK_SECRET"}
    for w in workers:
        assert channel_keys <= set(SERVICES[w]["environment"]), w
    for b in bridges:
        env = SERVICES[b]["environment"]
        for k in channel_keys:
            assert env.get(k) == SERVICES[workers[0]]["environment"][k], (b, k)
        assert set(SERVICES[workers[0]]["networks"]) <= set(SERVICES[b]["networks"]), b


def test_workers_run_with_production_timeouts() -> None:
    """Session and heartbeat set on every worker, for failover within seconds (docs/
    distributed.md, "Failover"), valid for trygg and within what the brokers allow."""
    workers = [n for n, s in SERVICES.items() if s.get("command") == ["worker"]]
    for w in workers:
        env = SERVICES[w]["environment"]
        session = float(env["TRYGG_KAFKA_SESSION_TIMEOUT_S"])
        heartbeat = float(env["TRYGG_KAFKA_HEARTBEAT_INTERVAL_S"])
        # valid settings (the heartbeat at most a third of the session)
        Settings(kafka_session_timeout_s=session, kafka_heartbeat_interval_s=heartbeat)
        assert session <= 10, f"{w}: a crash would hold alarms longer than {session} s"
        for b in BROKERS:
            low = int(SERVICES[b]["environment"]["KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS"])
            assert low <= session * 1000, f"{b} refuses {w}'s session timeout"
    for name in ("kafka_session_timeout_s", "kafka_heartbeat_interval_s"):
        text = Settings.model_fields[name].description or ""
        assert "TEST ONLY" not in text, name
    readme = (REPO / "README.md").read_text()
    row = readme.split("| `TRYGG_KAFKA_SESSION_TIMEOUT_S` | ", 1)[1].split("\n", 1)[0]
    assert "TEST ONLY" not in row and "production" in row


def test_the_timeouts_reach_the_worker() -> None:
    """The session, heartbeat and static-membership settings are what the worker
    hands Faust (the compose values above are worth nothing if they stop at
    Settings: Faust's own defaults are a 60 s session and a 3 s heartbeat)."""
    pytest.importorskip("faust")
    from trygg.distributed.worker.app import faust_settings

    conf = faust_settings(Settings())
    assert conf["broker_session_timeout"] == 6.0
    assert conf["broker_heartbeat_interval"] == 1.0
    assert "consumer_group_instance_id" not in conf  # static membership is off by default
    conf = faust_settings(
        Settings(
            kafka_session_timeout_s=9,
            kafka_heartbeat_interval_s=3,
            kafka_group_instance_id="worker-a",
        )
    )
    assert conf["broker_session_timeout"] == 9
    assert conf["broker_heartbeat_interval"] == 3
    assert conf["consumer_group_instance_id"] == "worker-a"
