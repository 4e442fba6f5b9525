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


TLS_BLOCK = re.compile(r"^listener 8883\n(?:[^\n]+\n)*", re.M)


def production_config(
    generated: Path,
    port: int,
    service_port: int,
    tls_port: int | None = None,
    certs: Path | None = None,
) -> str:
    """ingest/mosquitto.conf for a private broker: files, ports and log moved.

    The TLS listener (8883) moves to ``tls_port`` with the certificate and key
    in ``certs``; without them it is left out."""
    text = CONF.read_text()
    assert TLS_BLOCK.search(text), "the TLS listener moved?"
    if tls_port is None or certs is None:
        text = TLS_BLOCK.sub("", text)
    else:
        text = text.replace("/mosquitto/certs/", f"{certs}/")
        text = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", text, flags=re.M)
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
    tls_port: int | None = None  # with certs: the TLS listener (8883) on this port
    certs: Path | None = None

    def start(self) -> ProductionMosquitto:
        self.config = production_config(
            self.generated, self.port, self.service_port, self.tls_port, self.certs
        )
        super().start()
        return self

    def service_url(self, user: str, password: str) -> str:
        return f"mqtt://{user}:{password}@127.0.0.1:{self.service_port}"

    def __enter__(self) -> ProductionMosquitto:
        return self.start()
