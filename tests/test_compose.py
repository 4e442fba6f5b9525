"""docker-compose.yml, checked without a Docker engine (none runs on these machines).

What can be checked here is checked: the file parses, every trygg service's
command is a real ``trygg`` command, every bind-mounted path exists in the
repository, every TRYGG_* variable is a setting trygg knows, and no password
has a default value.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import REPO, trygg_cli
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


def test_distributed_stack() -> None:
    """Kafka in KRaft mode, two bridges on one shared subscription, two workers."""
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka and "kafka-data" in COMPOSE["volumes"]
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
