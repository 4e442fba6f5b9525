"""At-least-once ingest: nothing whose PUBACK was sent is lost, nothing is stored twice.

trygg runs as its own process against a private mosquitto and PostgreSQL;
the publisher is another process. The broker, the database and trygg itself
are stopped or killed in the middle of a stream.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tests.conftest import trygg_cli
from tests.helpers import (
    TryggProcess,
    WebhookReceiver,
    event_counts,
    event_json,
    publish,
    start_publisher,
    wait_until,
)
from trygg.devenv import PrivateMosquitto

SITE = "oslo"
DEVICES = 20


def _registry(tmp_path, url: str) -> None:  # type: ignore[no-untyped-def]
    lines = ["residents:\n"]
    lines += [f"  - {{id: r-{i:04d}, team: t{i % 3}}}\n" for i in range(DEVICES)]
    lines.append("devices:\n")
    lines += [f"  - {{id: bed-{i:04d}, resident: r-{i:04d}, kind: bed}}\n" for i in range(DEVICES)]
    lines += [
        f"  - {{id: fall-{i:04d}, resident: r-{i:04d}, kind: fall}}\n" for i in range(DEVICES)
    ]
    p = tmp_path / "registry.yaml"
    p.write_text("".join(lines))
    trygg_cli("registry", "load", str(p), "--database-url", url)


def _stream(n: int, prefix: str = "e") -> list[tuple[str, bytes]]:
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        (
            f"trygg/{SITE}/devices/bed-{i % DEVICES:04d}/events",
            event_json(
                f"{prefix}-{i}",
                "bed.vacant" if i % 2 else "bed.occupied",
                (start + timedelta(milliseconds=i)).isoformat(),
            ),
        )
        for i in range(n)
    ]


def _env(broker: PrivateMosquitto, url: str, spool: str, **extra: str) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": url,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "trygg-durability",
        "TRYGG_SPOOL_DIR": spool,
        **extra,
    }


def test_broker_restart_mid_stream_loses_nothing(tmp_path, broker, db) -> None:  # type: ignore[no-untyped-def]
    _registry(tmp_path, db)
    n = 20_000
    with TryggProcess(_env(broker, db, str(tmp_path / "spool"))) as trygg:
        trygg.wait_connected()
        pub = start_publisher(broker.port, _stream(n), rate=4000)
        wait_until(lambda: event_counts(db)[0] > 3000, timeout=60)
        broker.restart()
        out, _ = pub.communicate(timeout=180)
        assert pub.returncode == 0, out
        wait_until(lambda: event_counts(db)[0] >= n, timeout=120)
        time.sleep(0.5)
        assert event_counts(db) == (n, n)
        assert "mqtt disconnected" in trygg.output()


def test_sigkill_mid_stream_then_restart_stores_everything_once(tmp_path, broker, db) -> None:  # type: ignore[no-untyped-def]
    _registry(tmp_path, db)
    n = 20_000
    env = _env(broker, db, str(tmp_path / "spool"))
    trygg = TryggProcess(env).start()
    try:
        trygg.wait_connected()
        # 10 s of stream: the kill must land mid-stream even when a busy machine
        # slows the polling below (at 5,000/s, 4 s, all 20,000 were once stored first)
        pub = start_publisher(broker.port, _stream(n), rate=2000)
        wait_until(lambda: event_counts(db)[0] > 4000, timeout=60)
        trygg.kill()  # SIGKILL: no chance to flush anything
        killed_at = event_counts(db)[0]
        out, _ = pub.communicate(timeout=180)  # the broker keeps the session's messages
        assert pub.returncode == 0, out
    finally:
        trygg.kill()
    assert killed_at < n, "the kill came too late to test anything"
    with TryggProcess(env) as again:
        again.wait_connected()
        wait_until(lambda: event_counts(db)[0] >= n, timeout=120)
        time.sleep(0.5)
        assert event_counts(db) == (n, n)


def test_database_outage_does_not_delay_alarms_or_lose_events(tmp_path, broker, own_pg) -> None:  # type: ignore[no-untyped-def]
    url = own_pg.url
    _registry(tmp_path, url)
    with (
        WebhookReceiver() as hook,
        TryggProcess(
            _env(broker, url, str(tmp_path / "spool"), TRYGG_WEBHOOK_URL=hook.url)
        ) as trygg,
    ):
        trygg.wait_connected()
        publish(broker.port, _stream(2000, "before"))
        wait_until(lambda: event_counts(url)[0] == 2000)
        own_pg.stop(remove=False)
        try:
            pub = start_publisher(broker.port, _stream(5000, "during"), rate=1000)
            time.sleep(1)
            sent = publish(
                broker.port,
                [
                    (
                        f"trygg/{SITE}/devices/fall-0003/events",
                        event_json(
                            "fall-during-outage", "fall.detected", datetime.now(UTC).isoformat()
                        ),
                    )
                ],
            )
            # Other rules may fire too (a silent fall detector goes "offline"); find the fall.
            falls = lambda: [r for r in hook.received if r[2]["rule"] == "fall"]  # noqa: E731
            wait_until(falls, timeout=5)
            arrived, _, body = falls()[0]
            assert body["resident"] == "r-0003"
            assert arrived - sent < 1.0, f"alarm took {arrived - sent:.3f} s during the outage"
            out, _ = pub.communicate(timeout=60)
            assert pub.returncode == 0, out
            time.sleep(max(0.0, 30 - (time.monotonic() - sent)))  # a 30 s outage in all
            assert trygg.proc is not None and trygg.proc.poll() is None
        finally:
            own_pg.start()
        wait_until(lambda: event_counts(url)[0] >= 7001, timeout=60)
        time.sleep(0.5)
        assert event_counts(url) == (7001, 7001)
        wait_until(lambda: _alert_rows(url) == 1, timeout=10)


def _alert_rows(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*) FROM alerts WHERE rule = 'fall'").fetchone()
    return int(row[0]) if row else 0


def _children(pid: int) -> dict[str, int]:
    """trygg's live child processes by module (trygg.ingest.receiver, trygg.runner.drainer)."""
    kids: dict[str, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"-m" in argv:
            kids[argv[argv.index(b"-m") + 1].decode()] = int(d.name)
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_killed_receiver_or_drainer_is_started_again_and_nothing_is_lost(  # type: ignore[no-untyped-def]
    tmp_path, broker, db
) -> None:
    """trygg's two helper processes die (SIGKILL) mid-stream: the runner starts them
    again; the broker re-sends what the dead receiver had not acknowledged."""
    _registry(tmp_path, db)
    n = 20_000
    with TryggProcess(_env(broker, db, str(tmp_path / "spool"))) as trygg:
        trygg.wait_connected()
        assert trygg.proc is not None
        pid = trygg.proc.pid
        pub = start_publisher(broker.port, _stream(n), rate=5000)
        wait_until(lambda: event_counts(db)[0] > 3000, timeout=60)
        os.kill(_children(pid)["trygg.ingest.receiver"], signal.SIGKILL)
        wait_until(lambda: event_counts(db)[0] > 8000, timeout=60)
        os.kill(_children(pid)["trygg.runner.drainer"], signal.SIGKILL)
        out, _ = pub.communicate(timeout=180)
        assert pub.returncode == 0, out
        wait_until(lambda: event_counts(db)[0] >= n, timeout=120)
        time.sleep(0.5)
        assert event_counts(db) == (n, n)
        log = trygg.output()
        assert "MQTT receiver process exited" in log and "drainer process exited" in log
        assert set(_children(pid)) == {"trygg.ingest.receiver", "trygg.runner.drainer"}


def test_no_helper_process_outlives_a_killed_trygg(tmp_path, broker, db) -> None:  # type: ignore[no-untyped-def]
    _registry(tmp_path, db)
    with TryggProcess(_env(broker, db, str(tmp_path / "spool"))) as trygg:
        trygg.wait_connected()
        assert trygg.proc is not None
        kids = _children(trygg.proc.pid)
        assert set(kids) == {"trygg.ingest.receiver", "trygg.runner.drainer"}
        trygg.kill()
        wait_until(lambda: not any(_alive(p) for p in kids.values()), timeout=10)
