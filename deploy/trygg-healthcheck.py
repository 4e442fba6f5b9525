#!/usr/bin/env python3
"""Container healthcheck for trygg's services that serve no HTTP (bridges, workers).

    trygg-healthcheck PORT [PORT ...]

Healthy (exit 0) while the container holds an established TCP connection to
every PORT of a peer: a bridge to the broker (1884) and Kafka (9092), a worker
to Kafka. A bridge that lost its broker or Kafka and has not got it back turns
unhealthy after the healthcheck's retries. Reads /proc/net/tcp and tcp6 of the
container's own network namespace (only trygg runs there); the standard
library only, so it runs in the image as it is (docker-compose.yml,
Dockerfile).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

ESTABLISHED = "01"
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def established_peer_ports(lines: Iterable[str]) -> set[int]:
    """Remote ports of the ESTABLISHED sockets in /proc/net/tcp{,6} lines."""
    ports: set[int] = set()
    for line in lines:
        fields = line.split()
        # sl local_address rem_address st ...; the header's 4th field is "st"
        if len(fields) > 3 and fields[3] == ESTABLISHED and ":" in fields[2]:
            ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def main(argv: list[str], tables: Iterable[str] = TABLES) -> int:
    try:
        wanted = {int(a) for a in argv}
    except ValueError:
        print("usage: trygg-healthcheck PORT [PORT ...]", file=sys.stderr)
        return 2
    if not wanted:
        print("usage: trygg-healthcheck PORT [PORT ...]", file=sys.stderr)
        return 2
    have: set[int] = set()
    for path in tables:
        try:
            with open(path, encoding="ascii") as f:
                have |= established_peer_ports(f)
        except OSError:
            continue
    missing = sorted(wanted - have)
    if missing:
        print("no established connection to port " + ", ".join(map(str, missing)))
        return 1
    print("connected to port " + ", ".join(map(str, sorted(wanted))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
