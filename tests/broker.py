"""mosquitto as in production: ingest/mosquitto.conf with the files ``trygg devices
credentials`` writes, on two private ports.

The shipped configuration itself is run (its paths and ports rewritten), so a
test of it is a test of what an operator deploys: the device listener
(``use_username_as_clientid``) and the service listener, each with its own
password file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO
from trygg.devenv import PrivateMosquitto, free_port

CONF = REPO / "ingest" / "mosquitto.conf"


def production_config(generated: Path, port: int, service_port: int) -> str:
    """ingest/mosquitto.conf for a private broker: files, ports and log moved."""
    text = CONF.read_text()
    text = text.replace("/mosquitto/config/generated/", f"{generated}/")
    # PrivateMosquitto sets the persistence directory (mosquitto refuses a second).
    text = re.sub(r"^persistence_location .*\n", "", text, flags=re.M)
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^listener 1884$", f"listener {service_port} 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^log_dest stdout$", "log_dest stderr", text, flags=re.M)
    assert f"listener {port} " in text and f"listener {service_port} " in text, "listeners moved?"
    return text


@dataclass
class ProductionMosquitto(PrivateMosquitto):
    """``port``: the device listener; ``service_port``: trygg's own listener."""

    generated: Path = Path("ingest/generated")
    service_port: int = field(default_factory=free_port)
    listener: bool = False

    def start(self) -> ProductionMosquitto:
        self.config = production_config(self.generated, self.port, self.service_port)
        super().start()
        return self

    def service_url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.service_port}"

    def __enter__(self) -> ProductionMosquitto:
        return self.start()
