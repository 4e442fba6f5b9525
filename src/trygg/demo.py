"""``trygg demo``: the whole pipeline on private services, nothing to configure.

Starts a private mosquitto and PostgreSQL/TimescaleDB (trygg.devenv, the same
helper the tests use), migrates, registers a few dozen simulated homes
(trygg.simulate), runs the embedded pipeline with the HTTP API and the
care-staff console, creates a demo care-staff user for every team and prints
the console URL with its token, and publishes the simulator's traffic at a
speed until stopped. A local webhook receiver prints each notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from trygg import logs
from trygg.child import stop_on_signals
from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port
from trygg.runner.embedded import EmbeddedRunner
from trygg.settings import Settings
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry

log = logs.get("trygg.demo")


# What each notification is, as the demo prints it: a new alert once, a reminder
# or an escalation as what it is (they are the same alert again).
_LABELS = {"notify": "ALERT", "renotify": "REMINDER", "escalate": "ESCALATED"}


class _Printer(BaseHTTPRequestHandler):
    seen: ClassVar[set[str]] = set()  # idempotency keys printed: a retried delivery prints once

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        a = json.loads(body)
        n = a.get("notification") or {}
        key = str(n.get("key") or id(a))
        if key not in self.seen:
            self.seen.add(key)
            label = _LABELS.get(str(n.get("action")), "ALERT")
            late = a.get("delay_s") or 0
            print(
                f"  {label:9} {a['severity']:6} {a['code']:5} {a['rule']:22}"
                f" resident {a['resident']}  team {a['team']}"
                + (f"  ({late / 60:.0f} min late)" if late >= 60 else ""),
                flush=True,
            )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run_demo(homes: int = 24, seconds: float = 0, speed: float = 60.0) -> None:
    """Private services, simulated homes (trygg.simulate), the pipeline, the API and
    the console; prints the console URL with a demo care-staff token. Removes its
    work directory on exit."""
    work = Path(tempfile.mkdtemp(prefix="trygg-demo-"))
    print(f"trygg demo: starting private PostgreSQL/TimescaleDB and mosquitto in {work}")
    try:
        _demo(work, homes, seconds, speed)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the spool; the servers remove their own


def _demo(work: Path, homes: int, seconds: float, speed: float) -> None:
    from trygg.simulate import build_homes, generate, make_rates
    from trygg.simulate import publish as sim_publish
    from trygg.store.users import add_user

    with PrivatePostgres() as pg, PrivateMosquitto() as broker:
        migrate(pg.url)
        registry, sim_homes = build_homes(homes, seed=7)
        teams = sorted({r.team for r in registry.residents})
        with psycopg.connect(pg.url) as conn:
            save_registry(conn, registry)
            token = add_user(conn, "demo-nurse", "care_staff", teams)
            admin = add_user(conn, "demo-admin", "admin")
        hook_port = free_port()
        hook = ThreadingHTTPServer(("127.0.0.1", hook_port), _Printer)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        http_port = free_port()
        settings = Settings(
            site="demo",
            mqtt_url=broker.url,
            database_url=pg.url,
            webhook_url=f"http://127.0.0.1:{hook_port}/alerts",
            mqtt_client_id="trygg-demo",
            spool_dir=work / "spool",
            http_port=http_port,
        )
        base = f"http://127.0.0.1:{http_port}"
        print(
            f"  broker   {broker.url}\n  database {pg.url}\n"
            f"  webhook  http://127.0.0.1:{hook_port}/alerts\n"
            f"  API      {base}/docs   (admin token: {admin})\n"
        )
        print(f"  CONSOLE  {base}/console#token={token}\n")
        print(
            f"  {homes} simulated homes in {len(teams)} teams at {speed:g}x;"
            " alerts are printed below. Ctrl-C to stop.\n",
            flush=True,
        )
        stop_pub = threading.Event()

        def simulate() -> None:
            # A day of simulated life, compressed by ``speed`` and timed as it is
            # published: events carry the current time, as live devices' do, so
            # the console's timeline shows them and no clock looks wrong. (The
            # rules' long waits, 20 min out of bed or 4 h without activity, pass
            # in seconds of simulated time and so rarely fire; the alarms do.)
            # First a resident presses the alarm button, so a red alarm shows at once.
            start = datetime.now(UTC)
            button = next(d for d in registry.devices if d.kind.value == "button")
            with contextlib.suppress(Exception):
                _press(broker.url, button.id, start)
            sim = generate(
                sim_homes,
                start - timedelta(days=1),
                start,
                seed=7,
                rates=make_rates({"fall": 4.0}),
            )
            with contextlib.suppress(Exception):
                sim_publish(
                    _now_timed(sim, start, speed), broker.url, "demo", speed=speed, stop=stop_pub
                )

        async def main() -> None:
            stop = stop_on_signals()
            if seconds:
                asyncio.get_running_loop().call_later(seconds, stop.set)
            runner = EmbeddedRunner(settings)
            task = asyncio.create_task(runner.run(stop))
            await runner.ready.wait()
            pub = threading.Thread(target=simulate, daemon=True)
            pub.start()
            await stop.wait()
            stop_pub.set()
            pub.join(10)
            await task
            st = runner.stats
            svc = runner._alerting
            raised = sum(n for (_, _, k), n in svc.alerts_by.items() if k == "raised") if svc else 0
            print(
                f"\ntrygg demo: {st.events} events, {st.stored} stored, {raised} alerts,"
                f" {st.dead_letters} dead letters"
            )

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
        hook.shutdown()


def _now_timed(events: Iterable[Any], start: datetime, speed: float) -> Iterator[Any]:
    """Each simulated event timed when the publisher (pacing by ``speed``) sends it."""
    sim0: float | None = None
    for ev in events:
        if sim0 is None:
            sim0 = ev.ts
        at = start + timedelta(seconds=(ev.ts - sim0) / speed)
        yield ev._replace(time=at.isoformat())


def _press(mqtt_url: str, device: str, when: datetime) -> None:
    """One button press, published as the device would (QoS 1, acknowledged)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from trygg.simulate.mqtturl import parse_mqtt_url

    url = parse_mqtt_url(mqtt_url)
    payload = json.dumps({"id": "demo-press-1", "type": "button.pressed", "time": when.isoformat()})
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trygg-demo-press")
    c.connect(url.host, url.port)
    c.loop_start()
    try:
        c.publish(f"trygg/demo/devices/{device}/events", payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
