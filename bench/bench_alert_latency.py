"""Benchmark: latency from an MQTT publish of ``fall.detected`` to the webhook
receiver and to the console's live feed, under 2,000 events/s of background
traffic from the simulator.

    .venv/bin/python bench/bench_alert_latency.py [--samples 300] [--rate 2000]
        [--batch-wait-ms 20] [--append]

Private mosquitto and PostgreSQL/TimescaleDB (trygg.devenv); ``trygg run`` as
its own process with the HTTP API on; the background traffic is the
simulator's events (``trygg.simulate.generate``, re-timed to the last hours)
published at ``--rate`` by a separate process (tests/publish.py). The probe
publishes one ``fall.detected`` every 100 ms, rotating over 60 residents, and
resets each alarm (``alarm.reset``) after it was measured so that dedup and
flapping never fold a probe.

Measured in the same run, all with CLOCK_MONOTONIC in one process:
- **webhook**: publish -> the POST arrives at a local HTTP receiver;
- **console**: publish -> the alert arrives on the SSE feed (``/api/stream``);
- **baseline**: publish -> a bare paho subscriber on the same topic gets it.
It prints the machine (nproc, CPU model from /proc/cpuinfo) first, and warns
when the background did not reach ``--rate`` at trygg (a busy machine).
``--append`` adds a dated section to bench/RESULTS.md (machine, command, the lines).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from bench.machine import cpu_model, cpu_share, cpu_ticks  # noqa: E402
from bench.webhook_receiver import Hook  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from trygg.devenv import PrivateMosquitto, PrivatePostgres, free_port  # noqa: E402
from trygg.registry import parse_registry  # noqa: E402
from trygg.simulate import build_homes, generate  # noqa: E402
from trygg.store.migrate import migrate  # noqa: E402
from trygg.store.registry import save_registry  # noqa: E402
from trygg.store.users import add_user  # noqa: E402

SITE = "bench"
PROBES = 60
CHILDREN: list[subprocess.Popen[Any]] = []  # ended whatever happens (see __main__)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--homes", type=int, default=500)
    ap.add_argument("--batch-wait-ms", type=int, default=None)
    ap.add_argument("--append", action="store_true")
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="run trygg with sys.setswitchinterval(S) (default: Python's 0.005 s)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trygg-bench-alert-"))
    sse_times: dict[str, float] = {}
    raw_times: dict[str, float] = {}
    sent: dict[str, float] = {}
    by_event: dict[str, str] = {}

    with PrivatePostgres() as pg, PrivateMosquitto() as broker:
        migrate(pg.url)
        registry, homes = build_homes(args.homes, seed=3)
        data: dict[str, Any] = {
            "residents": [{"id": r.id, "team": r.team} for r in registry.residents],
            "devices": [
                {"id": d.id, "resident": d.resident, "kind": d.kind.value} for d in registry.devices
            ],
        }
        for i in range(PROBES):
            data["residents"].append({"id": f"probe-{i:03d}", "team": "probe"})
            data["devices"].append(
                {"id": f"pfall-{i:03d}", "resident": f"probe-{i:03d}", "kind": "fall"}
            )
        with psycopg.connect(pg.url) as conn:
            save_registry(conn, parse_registry(data, "bench"))
            token = add_user(conn, "bench", "admin")

        # Background: the simulator's homes (6 h of their events), re-timed so that
        # each event's time is the moment the paced publisher sends it. Events
        # hours old would hold trygg's timers back (the backlog rule, see
        # ARCHITECTURE.md) and raise device-offline and inactivity for every home.
        end = datetime.now(UTC) - timedelta(minutes=1)
        n_bg = int(args.rate * (args.samples * 0.1 + 25))
        background = []
        for ev in generate(homes, end - timedelta(hours=6), end, seed=3):
            if ev.malformed or ev.duplicate or ev.type in ("fall.detected", "alarm.reset"):
                continue
            background.append(ev)
            if len(background) >= n_bg:
                break

        hook = Hook()
        http_port = free_port()
        env = {
            **os.environ,
            "TRYGG_MQTT_URL": broker.url,
            "TRYGG_DATABASE_URL": pg.url,
            "TRYGG_SITE": SITE,
            "TRYGG_WEBHOOK_URL": hook.url,
            "TRYGG_HTTP_PORT": str(http_port),
            "TRYGG_SPOOL_DIR": str(work / "spool"),
            "TRYGG_LOG_LEVEL": "WARNING",
            "TRYGG_LOG_FORMAT": "json",
        }
        if args.batch_wait_ms is not None:
            env["TRYGG_BATCH_WAIT_MS"] = str(args.batch_wait_ms)
        log = open(work / "trygg.log", "wb")  # noqa: SIM115
        cmd = [str(Path(sys.executable).parent / "trygg"), "run"]
        if args.switch_interval is not None:
            cmd = [
                sys.executable,
                "-c",
                f"import sys; sys.setswitchinterval({args.switch_interval});"
                " sys.argv = ['trygg', 'run']; from trygg.cli import main; main()",
            ]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        CHILDREN.append(proc)

        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"trygg did not become ready; see {work / 'trygg.log'}")
            time.sleep(0.2)

        # console feed reader
        def sse() -> None:
            with contextlib.suppress(httpx.HTTPError):  # trygg stopped
                _sse()

        def _sse() -> None:
            with httpx.stream(
                "GET",
                f"{base}/api/stream",
                headers={"Authorization": f"Bearer {token}"},
                timeout=None,
            ) as r:
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    t = time.monotonic()
                    m = json.loads(line[5:])
                    a = m.get("alert") or {}
                    if m.get("type") == "alert":
                        for e in a.get("events", []):
                            sse_times.setdefault(e, t)

        threading.Thread(target=sse, daemon=True).start()

        raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)

        def on_raw(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            raw_times.setdefault(json.loads(m.payload)["id"], time.monotonic())

        raw.on_message = on_raw
        raw.connect("127.0.0.1", broker.port)
        raw.subscribe(f"trygg/{SITE}/devices/+/events", qos=1)
        raw.loop_start()
        # the baseline subscriber only looks at the probes' topics
        raw.unsubscribe(f"trygg/{SITE}/devices/+/events")
        for i in range(PROBES):
            raw.subscribe(f"trygg/{SITE}/devices/pfall-{i:03d}/events", qos=1)

        pub = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5
        )
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        time.sleep(1.0)

        bg = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)  # noqa: SIM115
        t0 = datetime.now(UTC) + timedelta(seconds=1.5)  # about when the publisher starts
        for k, ev in enumerate(background):
            at = (t0 + timedelta(seconds=k / args.rate)).isoformat()
            body = base64.b64encode(ev._replace(time=at).payload_bytes()).decode()
            bg.write(f"trygg/{SITE}/devices/{ev.device}/events\t{body}\n")
        bg.close()
        bgp = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "publish.py"),
                str(broker.port),
                bg.name,
                str(args.rate),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        CHILDREN.append(bgp)
        time.sleep(3.0)  # let the background rate settle
        stats0 = httpx.get(f"{base}/metrics", timeout=30).text
        ticks0 = cpu_ticks()
        t_start = time.monotonic()
        for k in range(args.samples):
            i = k % PROBES
            dev = f"pfall-{i:03d}"
            eid = f"probe-{k}"
            when = datetime.now(UTC).isoformat()
            fall = json.dumps({"id": eid, "type": "fall.detected", "time": when}).encode()
            sent[eid] = time.monotonic()
            pub.publish(f"trygg/{SITE}/devices/{dev}/events", fall, qos=1)
            by_event[eid] = dev
            time.sleep(0.05)
            reset = json.dumps(
                {"id": f"reset-{k}", "type": "alarm.reset", "time": datetime.now(UTC).isoformat()}
            ).encode()
            pub.publish(f"trygg/{SITE}/devices/{dev}/events", reset, qos=1)
            time.sleep(0.05)
        t_probe = time.monotonic() - t_start
        ticks1 = cpu_ticks()
        time.sleep(2.0)
        stats1 = httpx.get(f"{base}/metrics", timeout=30).text
        bgp.kill()
        bgp.wait()
        # the background's events, 9 MB at 2,000/s; tests/publish.py removes the file
        # itself once it has it open, so it may be gone already
        Path(bg.name).unlink(missing_ok=True)
        with psycopg.connect(pg.url) as conn:
            # where the time goes: the probe's own time is its publish (wall clock), and
            # received_at is when trygg's consumer took its batch
            receipt = conn.execute(
                "SELECT count(*),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)"
                " FROM (SELECT extract(epoch FROM received_at - time) * 1000 AS ms"
                " FROM events WHERE type = 'fall.detected' AND event_id LIKE 'probe-%') p"
            ).fetchone()
            # the probes' deliveries only: a background alert is not what was timed
            inside = conn.execute(
                "SELECT d.channel, count(*),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY d.latency_ms),"
                " percentile_cont(0.99) WITHIN GROUP (ORDER BY d.latency_ms)"
                " FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id"
                " WHERE a.resident LIKE 'probe-%' GROUP BY d.channel ORDER BY d.channel"
            ).fetchall()
            others = conn.execute(
                "SELECT rule, count(*) FROM alerts WHERE resident NOT LIKE 'probe-%'"
                " GROUP BY rule ORDER BY rule"
            ).fetchall()
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            print("trygg did not stop within 20 s of SIGTERM; killed", file=sys.stderr)
            proc.kill()
            proc.wait()
        hook.stop()
    shutil.rmtree(work, ignore_errors=True)  # trygg's spool and log (kept if it failed to start)

    def lat(d: dict[str, float]) -> list[float]:
        return [(d[e] - sent[e]) * 1000 for e in sent if e in d]

    wh, cs, bl = lat(hook.times), lat(sse_times), lat(raw_times)

    def received(m: str) -> float:
        for line in m.splitlines():
            if line.startswith("trygg_events_received_total"):
                return float(line.split()[-1])
        return 0.0

    bg_rate = (received(stats1) - received(stats0)) / (t_probe + 2.0)
    nproc = os.cpu_count()
    lines = [
        f"machine: nproc {nproc}, {cpu_model()}",
        f"samples sent {len(sent)}; background measured at trygg: {bg_rate:.0f} events/s",
        f"all cores during the probes: {cpu_share(ticks0, ticks1)}",
    ]
    if bg_rate < 0.95 * args.rate:  # a busy machine: the figures are not "at --rate"
        lines.append(f"WARNING: the background reached {bg_rate:.0f} of {args.rate:g} events/s")
    for name, xs in (("webhook", wh), ("console SSE", cs), ("baseline raw MQTT", bl)):
        if xs:
            lines.append(
                f"{name:18} n={len(xs):4d}  median {statistics.median(xs):6.2f} ms"
                f"  p99 {pct(xs, 99):6.2f} ms  max {max(xs):6.2f} ms"
            )
        else:
            lines.append(f"{name:18} no samples")
    lines.append(
        "alerts from the background traffic: "
        + (", ".join(f"{rule} {n}" for rule, n in others) or "none")
    )
    if receipt and receipt[0]:
        lines.append(
            f"  inside trygg, publish -> batch taken (probes): n={receipt[0]}"
            f" median {receipt[1]:.2f} ms p99 {receipt[2]:.2f} ms"
        )
    for ch, n, p50, p99 in inside:
        lines.append(
            f"  inside trygg, {ch} send (probes): n={n} median {p50:.2f} ms p99 {p99:.2f} ms"
        )
    print("\n".join(lines))
    if args.append:
        command = "python bench/bench_alert_latency.py " + " ".join(sys.argv[1:])
        bw = args.batch_wait_ms if args.batch_wait_ms is not None else "default (0)"
        section = (
            f"\n## {date.today().isoformat()} — alert latency"
            " (fall.detected → webhook / console)\n\n"
            f"- machine: nproc {nproc}, {cpu_model()}\n"
            f"- command: `{command.replace(' --append', '')}`\n"
            f"- trygg run as its own process (HTTP API on), private mosquitto and TimescaleDB; "
            f"background traffic from the simulator at {args.rate:g} events/s (paced publisher "
            f"process); batch wait {bw} ms\n\n"
            "```\n" + "\n".join(lines) + "\n```\n"
        )
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(section)


if __name__ == "__main__":
    try:
        main()
    finally:
        for child in CHILDREN:
            if child.poll() is None:
                child.kill()
                child.wait()
