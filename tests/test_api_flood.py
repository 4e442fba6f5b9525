"""Issue 16's attack on ``trygg run`` as its own process: 300 MB request bodies
without a token, sent over and over, while a fall is published over MQTT.

Each upload must get its 401 without its body being read (the runner's memory
does not grow, the connection is closed so the client cannot go on sending),
and the fall must still reach the webhook in under 100 ms.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, WebhookReceiver, event_json, publish, wait_until
from tests.http_raw import raw_upload
from trygg.devenv import PrivateMosquitto

SITE = "oslo"
BODY = 300 << 20


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _count(db: str, sql: str) -> int:
    with psycopg.connect(db) as c:
        row = c.execute(sql).fetchone()
    return int(row[0]) if row else 0


def test_300_mb_unauthenticated_bodies_are_not_read_and_a_fall_still_pages_at_once(
    broker: PrivateMosquitto, db: str, tmp_path: Path
) -> None:
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "residents:\n  - {id: r-1, team: t1}\n  - {id: r-2, team: t1}\n"
        "devices:\n"
        "  - {id: fall-1, resident: r-1, kind: fall, room: bathroom}\n"
        "  - {id: fall-2, resident: r-2, kind: fall, room: bathroom}\n"
    )
    trygg_cli("registry", "load", str(reg), "--database-url", db)
    with WebhookReceiver() as hook:
        env = {
            "TRYGG_MQTT_URL": broker.url,
            "TRYGG_DATABASE_URL": db,
            "TRYGG_SITE": SITE,
            "TRYGG_MQTT_CLIENT_ID": f"trygg-flood-{time.monotonic_ns()}",
            "TRYGG_WEBHOOK_URL": hook.url,
        }
        with TryggProcess(env) as trygg:
            trygg.wait_connected()
            assert trygg.proc is not None
            port = int(trygg.env["TRYGG_HTTP_PORT"])
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=30)
            now = datetime.now(UTC).isoformat()
            topic = f"trygg/{SITE}/devices/{{}}/events"
            # Warm the paths (a fall paged, an upload refused): the measurement below
            # is of steady state, not of first connections.
            publish(broker.port, [(topic.format("fall-2"), event_json("w", "fall.detected", now))])
            wait_until(lambda: hook.received, timeout=10)
            assert httpx.post(f"{base}/api/silences", json={}).status_code == 401
            time.sleep(0.5)
            base_rss = _rss_kib(trygg.proc.pid)

            mb = b"\0" * (1 << 20)
            heads = [
                b"POST /api/silences HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % BODY,
                b"POST /api/alerts/x/take HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer forged\r\nTransfer-Encoding: chunked\r\n\r\n",
            ]
            chunks = [mb, b"100000\r\n" + mb + b"\r\n"]
            stop = threading.Event()
            results: list[tuple[bytes, int, float]] = []
            peak = [base_rss]

            def attack() -> None:
                i = 0
                while not stop.is_set():
                    results.append(raw_upload(port, heads[i % 2], chunks[i % 2], BODY))
                    i += 1

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], _rss_kib(trygg.proc.pid))  # type: ignore[union-attr]
                    time.sleep(0.01)

            threads = [threading.Thread(target=f, daemon=True) for f in (attack, sample)]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: len(results) >= 4, timeout=30)
                sent = publish(
                    broker.port,
                    [
                        (
                            topic.format("fall-1"),
                            event_json("f-1", "fall.detected", now, room="bathroom"),
                        )
                    ],
                )
                wait_until(lambda: len(hook.received) == 2, timeout=5)
                arrived = hook.received[1][0]
                wait_until(lambda: len(results) >= 8, timeout=30)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
    latency = arrived - sent
    grew_mib = (peak[0] - base_rss) / 1024
    print(
        f"fall to webhook {latency * 1000:.1f} ms during {len(results)} refused uploads;"
        f" runner RSS {base_rss // 1024} MiB, peak +{grew_mib:.1f} MiB"
    )
    assert hook.received[1][2]["resident"] == "r-1"
    assert latency < 0.1, f"the fall reached the webhook after {latency * 1000:.0f} ms"
    for answer, took_in, answered_after in results:
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
        assert b"application/problem+json" in answer
        # the server closed the connection: the client could not send the 300 MB
        assert took_in < 64 << 20, took_in
        assert answered_after < 1.0, answered_after
    assert grew_mib < 30, f"the runner grew by {grew_mib:.0f} MiB"
