"""Parse broker URLs: ``mqtt://user:pass@host:1883``, ``mqtts://host`` (TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def redacted(self) -> str:
        """The URL without the password, for logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Parse an MQTT broker URL; raises ValueError with a readable reason."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://[user:pass@]host[:port])")
    if not parts.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"bad port in MQTT URL {url!r}") from None
    return MqttUrl(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=scheme in ("mqtts", "ssl"),
    )
