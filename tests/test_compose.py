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
        if name != "migrate":
            assert svc.get("restart") == "unless-stopped", name
    assert Path(REPO / "Dockerfile").exists()
