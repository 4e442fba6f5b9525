"""trygg run when things go wrong: a stop during an outage, a restart that sees
its events again, a spool holding a record the database refuses, a spool at its
limit under sustained load.

Real processes throughout: ``trygg run``, a private mosquitto, a private
PostgreSQL/TimescaleDB that the test stops and starts, a webhook receiver.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

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
from trygg.devenv import PrivateMosquitto, PrivatePostgres
from trygg.runner.spool import Spool

SITE = "oslo"
CLIENT = "trygg-faults"


def _registry(tmp_path: Path, url: str, n: int = 10) -> None:
    lines = ["residents:\n"]
    lines += [f"  - {{id: r-{i:04d}, team: t1}}\n" for i in range(n)]
    lines.append("devices:\n")
    lines += [f"  - {{id: bed-{i:04d}, resident: r-{i:04d}, kind: bed}}\n" for i in range(n)]
    lines += [f"  - {{id: fall-{i:04d}, resident: r-{i:04d}, kind: fall}}\n" for i in range(n)]
    p = tmp_path / "registry.yaml"
    p.write_text("".join(lines))
    trygg_cli("registry", "load", str(p), "--database-url", url)


def _env(broker: PrivateMosquitto, url: str, spool: Path, **extra: str) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": url,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": CLIENT,
        "TRYGG_SPOOL_DIR": str(spool),
        **extra,
    }


def _beds(n: int, prefix: str) -> list[tuple[str, bytes]]:
    start = datetime.now(UTC) - timedelta(minutes=30)
    return [
        (
            f"trygg/{SITE}/devices/bed-{i % 10:04d}/events",
            event_json(
                f"{prefix}-{i}",
                "bed.vacant" if i % 2 else "bed.occupied",
                (start + timedelta(milliseconds=i)).isoformat(),
            ),
        )
        for i in range(n)
    ]


def _fall(eid: str, device: str = "fall-0001") -> list[tuple[str, bytes]]:
    return [
        (
            f"trygg/{SITE}/devices/{device}/events",
            event_json(eid, "fall.detected", datetime.now(UTC).isoformat()),
        )
    ]


def _readyz(trygg: TryggProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{trygg.env['TRYGG_HTTP_PORT']}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc: dict[str, Any] = json.load(r)
    except urllib.error.HTTPError as exc:
        doc = json.load(exc)
    return doc


def _terminate(trygg: TryggProcess) -> float:
    """SIGTERM; the seconds until the process has exited (all of it: its helpers too)."""
    assert trygg.proc is not None
    began = time.monotonic()
    trygg.proc.send_signal(signal.SIGTERM)
    trygg.proc.wait(30)
    return time.monotonic() - began


def _falls(hook: WebhookReceiver) -> list[str]:
    return [body["events"][0] for _, _, body in hook.received if body["rule"] == "fall"]


def test_sigterm_during_a_database_outage_exits_in_time_and_loses_nothing(
    tmp_path: Path, broker: PrivateMosquitto, own_pg: PrivatePostgres
) -> None:
    """While the database is away, /readyz says so with a reason, the backlog shows
    in trygg_spool_bytes, and SIGTERM still ends trygg within 10 s. After a restart
    with the database back, every event is stored exactly once."""
    url = own_pg.url
    _registry(tmp_path, url)
    env = _env(broker, url, tmp_path / "spool", TRYGG_STORE_STALL_S="2")
    trygg = TryggProcess(env).start()
    try:
        trygg.wait_connected()
        publish(broker.port, _beds(500, "before"))
        wait_until(lambda: event_counts(url)[0] == 500)
        own_pg.stop(remove=False)
        try:
            publish(broker.port, _beds(3000, "during"))

            def stalled() -> dict[str, Any] | None:
                d = _readyz(trygg)
                return d if "spool_reason" in d else None

            doc = wait_until(stalled, timeout=30)
            assert doc["ready"] is False and doc["database"] is False
            assert "nothing stored for" in doc["spool_reason"]
            assert "the database is unavailable" in doc["spool_reason"]
            assert doc["spool_bytes"] > 3000 * 100  # the backlog, not 0
            took = _terminate(trygg)
            assert took < 10, f"trygg took {took:.1f} s to stop during the outage"
        finally:
            own_pg.start()
    finally:
        trygg.kill()
    with TryggProcess(env) as again:
        again.wait_connected()
        wait_until(lambda: event_counts(url)[0] >= 3500, timeout=60)
        time.sleep(0.5)  # nothing more may come
        assert event_counts(url) == (3500, 3500)
        wait_until(lambda: _readyz(again)["ready"], timeout=10)


def test_sigterm_while_start_up_waits_for_the_database(
    tmp_path: Path, broker: PrivateMosquitto, own_pg: PrivatePostgres
) -> None:
    """Start-up waits for the database (the registry); SIGTERM used to be ignored
    for as long as the database stayed away (20 min seen)."""
    _registry(tmp_path, own_pg.url)
    own_pg.stop(remove=False)
    try:
        trygg = TryggProcess(_env(broker, own_pg.url, tmp_path / "spool")).start()
        try:
            wait_until(lambda: "database unavailable" in trygg.output(), timeout=60)
            took = _terminate(trygg)
            assert took < 10, f"trygg took {took:.1f} s to stop during start-up"
            assert "stopping during start-up" in trygg.output()
        finally:
            trygg.kill()
    finally:
        own_pg.start()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_stops_trygg_cleanly(
    tmp_path: Path, broker: PrivateMosquitto, db: str, sig: signal.Signals
) -> None:
    """systemd (KillMode=control-group), a terminal's Ctrl-C and `kill -- -PGID`
    signal trygg and its helper processes at once. trygg used to start the drainer
    again that the same SIGTERM had killed, mid-shutdown, and the new one died with a
    BrokenPipeError traceback. Now the helpers leave the stop to the runner: it exits
    0, restarts nothing, prints no traceback, and every event published before is
    stored."""
    _registry(tmp_path, db)
    trygg = TryggProcess(_env(broker, db, tmp_path / "spool"), own_group=True).start()
    try:
        trygg.wait_connected()
        publish(broker.port, _beds(300, "group"))
        wait_until(lambda: event_counts(db)[0] == 300)
        assert trygg.proc is not None
        os.killpg(trygg.proc.pid, sig)
        assert trygg.proc.wait(30) == 0, trygg.output()[-3000:]
        out = trygg.output()
        assert "starting it again" not in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert event_counts(db) == (300, 300)
    finally:
        trygg.kill()


def test_an_event_sent_again_after_a_restart_raises_no_second_alert(
    tmp_path: Path, broker: PrivateMosquitto, db: str
) -> None:
    """A device (or the broker) sending a fall again after trygg restarted: the
    recent event keys are restored at start, so it is dropped as a repeat."""
    _registry(tmp_path, db)
    with WebhookReceiver() as hook:
        env = _env(broker, db, tmp_path / "spool", TRYGG_WEBHOOK_URL=hook.url)
        fall = _fall("fall-once")
        with TryggProcess(env) as trygg:
            trygg.wait_connected()
            publish(broker.port, fall)
            wait_until(lambda: _falls(hook) == ["fall-once"])
        with TryggProcess(env) as again:
            again.wait_connected()
            assert '"keys": 1' in again.output() or "keys=1" in again.output()
            publish(broker.port, fall)  # the same (device, id) again
            publish(broker.port, _fall("fall-new", "fall-0002"))
            wait_until(lambda: "fall-new" in _falls(hook))
            time.sleep(0.5)  # the repeat was published first; nothing more may come
            assert sorted(_falls(hook)) == ["fall-new", "fall-once"]


def test_a_restart_with_a_poisoned_spool_starts_connects_and_alerts(
    tmp_path: Path, broker: PrivateMosquitto, db: str
) -> None:
    """A spool left holding a record PostgreSQL refuses (NUL in an event id, from
    a version of trygg before the decoder refused it). Start-up waits for the
    spool to be stored; it used to wait forever while the drainer crash-looped."""
    _registry(tmp_path, db)
    spool = Spool(tmp_path / "spool" / CLIENT)
    now = datetime.now(UTC)
    rec: dict[str, Any] = {
        "op": "ev",
        "d": "bed-0001",
        "i": "a\x00b",
        "y": "heartbeat",
        "t": now.isoformat(),
        "r": "r-0001",
        "k": "bed",
        "m": None,
        "v": None,
        "p": None,
        "rx": now.isoformat(),
        "late": False,
    }
    good = {**rec, "i": "good-1"}
    spool.append([good, rec, {**good, "i": "good-2"}])
    spool.close()
    with WebhookReceiver() as hook:
        env = _env(broker, db, tmp_path / "spool", TRYGG_WEBHOOK_URL=hook.url)
        with TryggProcess(env) as trygg:
            trygg.wait_connected(timeout=60)
            publish(broker.port, _fall("fall-after-poison"))
            wait_until(lambda: _falls(hook) == ["fall-after-poison"], timeout=10)
            with psycopg.connect(db) as c:
                ids = {r[0] for r in c.execute("SELECT event_id FROM events")}
                letters = c.execute("SELECT reason FROM dead_letters").fetchall()
            assert {"good-1", "good-2", "fall-after-poison"} <= ids
            assert len(letters) == 1 and "the database refused" in letters[0][0]
            assert _readyz(trygg)["ready"] is True


def test_the_spool_limit_holds_under_sustained_load(
    tmp_path: Path, broker: PrivateMosquitto, own_pg: PrivatePostgres
) -> None:
    """With the database away and messages streaming in, trygg stops taking them
    at TRYGG_SPOOL_MAX_MB (the broker keeps them), instead of growing past it
    (a 2 MB limit once held 10.5 MB). Nothing is lost once the database is back."""
    url = own_pg.url
    _registry(tmp_path, url)
    spool_dir = tmp_path / "spool"
    limit = 1 << 20
    env = _env(broker, url, spool_dir, TRYGG_SPOOL_MAX_MB="1")
    n = 12_000  # ~250 bytes a record: about 3 MB in all
    with TryggProcess(env) as trygg:
        trygg.wait_connected()
        own_pg.stop(remove=False)
        try:
            pub = start_publisher(broker.port, _beds(n, "load"), rate=4000)
            biggest = 0
            while pub.poll() is None:
                size = sum(p.stat().st_size for p in (spool_dir / CLIENT).glob("spool-*"))
                biggest = max(biggest, size)
                time.sleep(0.05)
            assert pub.returncode == 0
            wait_until(lambda: "spool full" in trygg.output(), timeout=10)
            time.sleep(1)
            size = sum(p.stat().st_size for p in (spool_dir / CLIENT).glob("spool-*"))
            biggest = max(biggest, size)
            # The limit, plus what one check interval can append (a twentieth of it)
            # and one group commit.
            assert biggest < limit * 1.25, f"spool grew to {biggest} bytes"
            assert _readyz(trygg)["spool"] is False
        finally:
            own_pg.start()
        wait_until(lambda: event_counts(url)[0] >= n, timeout=120)
        time.sleep(0.5)
        assert event_counts(url) == (n, n)
        assert "spool below its limit again" in trygg.output()
