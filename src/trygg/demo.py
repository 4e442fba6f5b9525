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
import signal
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from trygg import logs
from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port
from trygg.runner.embedded import EmbeddedRunner
from trygg.settings import Settings
from trygg.store.migrate import migrate
from trygg.store.registry import save_registry

log = logs.get("trygg.demo")


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


def run_demo(homes: int = 24, seconds: float = 0, speed: float = 60.0) -> None:
    """Private services, simulated homes (trygg.simulate), the pipeline, the API and
    the console; prints the console URL with a demo care-staff token."""
    from trygg.simulate import build_homes, generate, make_rates
    from trygg.simulate import publish as sim_publish
    from trygg.store.access import add_user

    work = Path(tempfile.mkdtemp(prefix="trygg-demo-"))
    print(f"trygg demo: starting private PostgreSQL/TimescaleDB and mosquitto in {work}")
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
            # The last six days of simulated life, compressed by ``speed``: event
            # times stay in the past, as trygg's clock-skew check requires.
            end = datetime.now(UTC)
            events = generate(
                sim_homes,
                end - timedelta(days=6),
                end,
                seed=7,
                rates=make_rates({"fall": 4.0}),
            )
            with contextlib.suppress(Exception):
                sim_publish(events, broker.url, "demo", speed=speed, stop=stop_pub)

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
    time.sleep(0)
