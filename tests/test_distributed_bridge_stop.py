"""``trygg bridge`` stops at SIGTERM while its start-up waits for a service that is
away: the database (the registry) or Kafka. It takes the stop signals itself, and
used to ignore them for as long as the outage lasted (an orchestrator's SIGKILL
ended it; a hand-run `timeout 8 trygg bridge` was still running 38 minutes later).

A real process; the database and Kafka are ports where nothing listens, or a
private PostgreSQL with trygg's schema.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import wait_until
from trygg.devenv import free_port


def _bridge(database_url: str, kafka: str) -> tuple[subprocess.Popen[bytes], Path]:
    fd, log = tempfile.mkstemp(prefix="trygg-bridge-", suffix=".log")
    env = {
        **os.environ,
        "TRYGG_DATABASE_URL": database_url,
        "TRYGG_KAFKA_BOOTSTRAP": kafka,
        "TRYGG_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "TRYGG_LOG_FORMAT": "json",
        "TRYGG_LOG_LEVEL": "INFO",
    }
    exe = Path(sys.executable).parent / "trygg"
    proc = subprocess.Popen([str(exe), "bridge"], env=env, stdout=fd, stderr=subprocess.STDOUT)
    os.close(fd)
    return proc, Path(log)


@pytest.mark.parametrize("away", ["database", "kafka"])
def test_sigterm_while_start_up_waits_stops_the_bridge(db: str, away: str) -> None:
    url = f"postgresql://trygg@127.0.0.1:{free_port()}/none" if away == "database" else db
    proc, log = _bridge(url, f"127.0.0.1:{free_port()}")
    try:
        said = f"{away} unavailable, retrying"
        assert wait_until(lambda: said in log.read_text(), timeout=60), log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        # a condition with a generous bound, not a timing target: it used to be never
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
        out = log.read_text()
        assert "stopped during start-up" in out
        assert "Traceback" not in out, out[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)
