"""``trygg demo``: the whole pipeline on private services, nothing to configure.

Starts a private mosquitto and PostgreSQL/TimescaleDB (trygg.devenv, the same
helper the tests use), migrates, registers a few dozen simulated homes, runs
the embedded pipeline with a local webhook receiver that prints each alert,
and publishes simulated traffic until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from trygg import logs
from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port
from trygg.registry import Registry, parse_registry
from trygg.runner.embedded import EmbeddedRunner
from trygg.settings import Settings
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry

log = logs.get("trygg.demo")


def demo_registry(homes: int) -> Registry:
    residents, devices = [], []
    teams = ["stovner-nord", "grorud-sor", "frogner-vest", "sagene-ost"]
    for i in range(1, homes + 1):
        rid = f"r-{i:04d}"
        residents.append({"id": rid, "team": teams[i % len(teams)]})
        devices += [
            {"id": f"button-{i:04d}", "resident": rid, "kind": "button", "room": "livingroom"},
            {"id": f"fall-{i:04d}", "resident": rid, "kind": "fall", "room": "bathroom"},
            {"id": f"bed-{i:04d}", "resident": rid, "kind": "bed", "room": "bedroom"},
        ]
    return parse_registry({"residents": residents, "devices": devices}, "demo")


class _Printer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        a = json.loads(body)
        print(
            f"  ALERT {a['severity']:6} {a['code']:5} {a['rule']:22} resident {a['resident']}"
            f"  team {a['team']}",
            flush=True,
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _publish(
    url_port: int, site: str, registry: Registry, stop: threading.Event, speed: float
) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trygg-demo-sim", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    rng = random.Random(7)
    n = 0
    while not stop.is_set():
        dev = rng.choice(registry.devices)
        kind = dev.kind.value
        typ = {
            "bed": rng.choice(["bed.vacant", "bed.occupied"]),
            "button": "heartbeat",
            "fall": "heartbeat",
        }[kind]
        if rng.random() < 0.01 * min(speed, 100) / 10:
            typ = rng.choice(["fall.detected", "button.pressed"])
            typ = "fall.detected" if kind == "fall" else typ
            if typ == "button.pressed" and kind != "button":
                typ = "heartbeat"
        n += 1
        payload = {"id": f"demo-{n}", "type": typ, "time": datetime.now(UTC).isoformat()}
        c.publish(f"trygg/{site}/devices/{dev.id}/events", json.dumps(payload), qos=1)
        stop.wait(0.05)
    c.loop_stop()
    c.disconnect()


def run_demo(homes: int = 24, seconds: float = 0, speed: float = 60.0) -> None:
    work = Path(tempfile.mkdtemp(prefix="trygg-demo-"))
    print(f"trygg demo: starting private PostgreSQL/TimescaleDB and mosquitto in {work}")
    with PrivatePostgres() as pg, PrivateMosquitto() as broker:
        migrate(pg.url)
        registry = demo_registry(homes)
        with psycopg.connect(pg.url) as conn:
            save_registry(conn, registry)
        hook_port = free_port()
        hook = ThreadingHTTPServer(("127.0.0.1", hook_port), _Printer)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        settings = Settings(
            site="demo",
            mqtt_url=broker.url,
            database_url=pg.url,
            webhook_url=f"http://127.0.0.1:{hook_port}/alerts",
            mqtt_client_id="trygg-demo",
            spool_dir=work / "spool",
        )
        print(
            f"  broker   {broker.url}\n  database {pg.url}\n  webhook  http://127.0.0.1:{hook_port}/alerts"
        )
        print(f"  {homes} simulated homes; alerts are printed below. Ctrl-C to stop.\n")
        stop_pub = threading.Event()

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(s, stop.set)
            if seconds:
                loop.call_later(seconds, stop.set)
            runner = EmbeddedRunner(settings)
            task = asyncio.create_task(runner.run(stop))
            await runner.ready.wait()
            pub = threading.Thread(
                target=_publish, args=(broker.port, "demo", registry, stop_pub, speed)
            )
            pub.start()
            await stop.wait()
            stop_pub.set()
            pub.join()
            await task
            st = runner.stats
            print(
                f"\ntrygg demo: {st.events} events, {st.stored} stored, {st.alerts} alerts,"
                f" {st.dead_letters} dead letters"
            )

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
        hook.shutdown()
    time.sleep(0)
