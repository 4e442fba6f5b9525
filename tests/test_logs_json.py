"""trygg run's logs: JSON only in JSON mode, under load and with the database
away; dead letters as a handful of lines with counts, every one stored.

Real processes: ``trygg run`` (with its receiver and drainer), a private
mosquitto, a private PostgreSQL/TimescaleDB that a test stops.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import trygg_cli
from tests.helpers import TryggProcess, event_json, publish, wait_until
from trygg.devenv import PrivateMosquitto, PrivatePostgres

SITE = "oslo"


class _Trygg(TryggProcess):
    """``trygg run`` with its standard error apart from its standard output."""

    def start(self) -> _Trygg:
        exe = Path(sys.executable).parent / "trygg"
        self.stdout_path = self.log_path + ".stdout"
        with open(self.log_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen([str(exe), "run"], env=self.env, stdout=out, stderr=err)
        return self


def _registry(tmp_path: Path, url: str) -> None:
    p = tmp_path / "registry.yaml"
    p.write_text(
        "residents:\n"
        + "".join(f"  - {{id: r-{i}, team: t1}}\n" for i in range(5))
        + "devices:\n"
        + "".join(f"  - {{id: bed-{i}, resident: r-{i}, kind: bed}}\n" for i in range(5))
    )
    trygg_cli("registry", "load", str(p), "--database-url", url)


def _env(broker: PrivateMosquitto, url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": url,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": f"trygg-logs-{time.monotonic_ns()}",
        "TRYGG_SPOOL_DIR": str(tmp_path / "spool"),
        "TRYGG_LOG_FORMAT": "json",
        **extra,
    }


def _malformed(n: int) -> list[tuple[str, bytes]]:
    """``n`` dead letters of six devices (one unknown) and four kinds of fault."""
    old = (datetime.now(UTC) - timedelta(days=9)).isoformat()
    out = []
    for i in range(n):
        dev = f"bed-{i % 5}" if i % 6 else "ghost-1"
        kind = i % 4
        payload = (
            b"{not json" + str(i).encode()
            if kind == 0
            else b"[]"
            if kind == 1
            else event_json(f"old-{i}", "bed.vacant", old)
            if kind == 2
            else event_json(f"lev-{i}", "bed.levitating", old)
        )
        out.append((f"trygg/{SITE}/devices/{dev}/events", payload))
    return out


def _json_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    docs, bad = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(doc, dict):
            docs.append(doc)
        else:
            bad.append(line)
    return docs, bad


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_json_mode_writes_only_json_lines_under_load_with_the_database_away(
    tmp_path: Path, broker: PrivateMosquitto, own_pg: PrivatePostgres
) -> None:
    """The database stopped under a burst of events and malformed payloads: the
    pool's "error connecting" and everything else on stderr is JSON (it was not:
    60 of 230 lines came raw from psycopg_pool)."""
    url = own_pg.url
    _registry(tmp_path, url)
    trygg = _Trygg(_env(broker, url, tmp_path, TRYGG_STORE_STALL_S="2"))
    trygg.start()
    try:
        trygg.wait_connected()
        own_pg.stop(remove=False)
        try:
            now = datetime.now(UTC)
            good = [
                (
                    f"trygg/{SITE}/devices/bed-{i % 5}/events",
                    event_json(
                        f"e-{i}",
                        "bed.vacant" if i % 2 else "bed.occupied",
                        (now - timedelta(seconds=3000 - i)).isoformat(),
                    ),
                )
                for i in range(3000)
            ]
            junk = [(f"trygg/{SITE}/nowhere/{i}", b"x") for i in range(20)]
            publish(broker.port, good + _malformed(3000) + junk)
            # The pool tries to connect again and again meanwhile.
            wait_until(lambda: "psycopg.pool" in trygg.output(), timeout=60)
            time.sleep(3)
            trygg.stop()  # SIGTERM during the outage: its lines too
        finally:
            own_pg.start()
    finally:
        trygg.kill()
    docs, bad = _json_lines(trygg.output())
    assert not bad, f"{len(bad)} lines on stderr are not JSON, e.g. {bad[:3]}"
    assert any(d.get("logger") == "psycopg.pool" for d in docs)
    # every JSON line an object with an event, a level and a time
    assert all({"event", "level", "timestamp"} <= d.keys() for d in docs)
    full = [d for d in docs if d["event"] == "dead letter"]
    assert 0 < len(full) <= 30  # not one per message (3,020 dead letters)
    assert "e-2999" not in trygg.output() and "not json" not in trygg.output()


def test_ten_thousand_dead_letters_a_handful_of_lines_all_stored(
    tmp_path: Path, broker: PrivateMosquitto, db: str
) -> None:
    """10,000 malformed messages from six devices, four faults each: the first of
    each device and fault in full, the rest counted (at the minute, or when trygg
    stops); every dead letter is stored, and no payload is in the log."""
    _registry(tmp_path, db)
    with _Trygg(_env(broker, db, tmp_path)) as trygg:
        trygg.wait_connected()
        publish(broker.port, _malformed(10_000))
        wait_until(lambda: _count(db, "SELECT count(*) FROM dead_letters") >= 10_000, timeout=120)
    assert _count(db, "SELECT count(*) FROM dead_letters") == 10_000
    docs, bad = _json_lines(trygg.output())
    assert not bad, bad[:3]
    full = [d for d in docs if d["event"] == "dead letter"]
    counts = [d for d in docs if d["event"].startswith("dead letters: ")]
    # six devices; the unknown device is one fault to the decoder
    assert 10 <= len(full) <= 24, [(d["device"], d["reason"]) for d in full]
    assert len(full) + len(counts) <= 50
    # the counts cover every dead letter (a key seen once has no count line)
    once = len(full) - len(counts)
    assert sum(d["count"] for d in counts) + once == 10_000
    some = counts[0]
    assert {"device", "reason", "count", "seconds"} <= some.keys()
    assert f"{some['count']:,} in the last" in some["event"]
    assert "{not json" not in trygg.output() and "lev-" not in trygg.output()
