"""Sustained ingest rate: broker -> trygg -> committed rows, against a bare subscriber.

    .venv/bin/python bench/bench_ingest.py [--events 200000] [--batch 50] [--soak SECONDS]

Both consumers are measured the same way: their persistent session is created,
they go away, N QoS 1 messages (about 200 bytes each) are queued at the broker
by a separate publisher process, and the consumer is started again; the clock
runs from its (re)connection until the last message is received (bare) or the
last row is committed (trygg). So the publisher's own speed does not enter.

``--soak`` additionally publishes at a steady rate for that many seconds and
samples the trygg process's resident memory every 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.machine import cpu_model  # noqa: E402

from trygg.devenv import PrivateMosquitto, PrivatePostgres  # noqa: E402
from trygg.registry import parse_registry  # noqa: E402
from trygg.store.migrate import migrate  # noqa: E402
from trygg.store.registry import save_registry  # noqa: E402

SITE = "bench"
DEVICES = 500
PY = sys.executable
TRYGG = str(Path(PY).parent / "trygg")


def payloads(n: int, batch: int, tag: str = "evt") -> list[tuple[str, bytes]]:
    """``n`` events; ``tag`` keeps each phase's event ids apart (ids are unique per
    device by contract, and trygg restores the keys it has stored at start)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    out = []
    i = 0
    while i < n:
        dev = f"motion-{(i // batch) % DEVICES:04d}"
        items = []
        for _ in range(min(batch, n - i)):
            t = (start + timedelta(microseconds=i * 100)).isoformat()
            items.append(
                {
                    "id": f"{tag}-{i:010d}",
                    "type": "motion.detected",
                    "time": t,
                    "room": "livingroom",
                    "value": None,
                    "seq": i,
                    "fw": "2.4.1-rc7",
                    "gw": "zigbee-gateway-01.home",
                }
            )
            i += 1
        body = items[0] if batch == 1 else items
        out.append((f"trygg/{SITE}/devices/{dev}/events", json.dumps(body).encode()))
    return out


def publish_all(port: int, msgs: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
    acked = 0

    def on_pub(*a: object) -> None:
        nonlocal acked
        acked += 1

    c.on_publish = on_pub
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i, (topic, body) in enumerate(msgs):
        # paho's message ids wrap at 65,535: never have that many outstanding.
        while i - acked > 20_000:
            time.sleep(0.01)
        c.publish(topic, body, qos=1)
    while acked < len(msgs):
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()


def bare_rate(broker: PrivateMosquitto, msgs: list[tuple[str, bytes]]) -> float:
    script = str(REPO / "bench" / "bare_subscriber.py")
    subprocess.run([PY, script, str(broker.port), "bare", "0"], check=True, capture_output=True)
    publish_all(broker.port, msgs)
    out = subprocess.run(
        [PY, script, str(broker.port), "bare", str(len(msgs))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    vals = dict(kv.split("=") for kv in out.split())
    return len(msgs) / (float(vals["done"]) - float(vals["connected"]))


def count(url: str) -> int:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def commits(url: str) -> int:
    """Transactions committed in the database so far (all sessions)."""
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


PROFILE_DIR = "."
PROFILE: list[str] = []  # a py-spy command prefix, from --py-spy


def start_trygg(env: dict[str, str], log: Path, name: str = "") -> subprocess.Popen[bytes]:
    cmd = [TRYGG, "run"]
    if PROFILE and name:
        # Collapsed stacks of every thread, for `flamegraph.pl` or a quick sort.
        cmd = [*PROFILE, "-o", f"{PROFILE_DIR}/{name}.txt", "--", *cmd]
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def connected_at(log: Path, after: int) -> float:
    deadline = time.time() + 60
    while time.time() < deadline:
        lines = log.read_text().splitlines()[after:]
        for line in lines:
            if '"mqtt connected"' in line:
                ts = json.loads(line)["timestamp"]
                return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        time.sleep(0.05)
    raise TimeoutError("trygg did not connect")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pattern: str) -> float:
    """CPU seconds of the processes whose command line contains ``pattern``,
    and of their children (PostgreSQL's backends name no data directory)."""
    parent: dict[int, int] = {}
    roots: set[int] = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                pid = int(d.name)
                parent[pid] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if pattern in (d / "cmdline").read_bytes().decode(errors="replace"):
                    roots.add(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    total = 0.0
    for pid in parent:
        if pid in roots or parent[pid] in roots:
            try:
                total += cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
    return total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def trygg_rate(
    broker: PrivateMosquitto,
    pg: PrivatePostgres,
    msgs: list[tuple[str, bytes]],
    n_events: int,
    client_id: str,
) -> float:
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    env = {
        **os.environ,
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": pg.url,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": client_id,
        "TRYGG_SPOOL_DIR": spool,
        "TRYGG_LOG_FORMAT": "json",
        "TRYGG_LOG_LEVEL": "WARNING",
    }
    log = Path(spool) / "trygg.log"
    env_info = {**env, "TRYGG_LOG_LEVEL": "INFO"}
    p = start_trygg(env_info, log)
    connected_at(log, 0)
    p.terminate()
    p.wait()
    before = count(pg.url)
    publish_all(broker.port, msgs)
    lines = len(log.read_text().splitlines())
    p = start_trygg(env_info, log, client_id)
    pg0, mq0 = tree_cpu(str(pg.data_dir)), tree_cpu(str(broker.data_dir))
    x0 = commits(pg.url)
    t0 = connected_at(log, lines)
    target = before + n_events
    # Counting rows costs the database CPU too: poll every 0.1 s (<= 0.1 s of error).
    while count(pg.url) < target:
        time.sleep(0.1)
    t1 = time.time()
    kids = children(p.pid)
    used = {"runner": cpu_seconds(p.pid)} | {k: cpu_seconds(v) for k, v in kids.items()}
    pg1, mq1 = tree_cpu(str(pg.data_dir)), tree_cpu(str(broker.data_dir))
    per = ", ".join(f"{k} {v / n_events * 1e6:.0f}" for k, v in used.items())
    print(
        f"  CPU per event: trygg {sum(used.values()) / n_events * 1e6:.0f} us ({per};"
        " incl. start-up),"
        f" PostgreSQL {(pg1 - pg0) / n_events * 1e6:.0f} us,"
        f" broker {(mq1 - mq0) / n_events * 1e6:.0f} us; wall {t1 - t0:.1f} s;"
        f" {commits(pg.url) - x0:,} transactions"
    )
    # SIGINT reaches trygg through py-spy too; py-spy then writes its profile.
    p.send_signal(signal.SIGINT)
    p.wait()
    return n_events / (t1 - t0)


def children(pid: int) -> dict[str, int]:
    """A process's children by the module they run (``python -m MODULE``)."""
    kids: dict[str, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == pid and b"-m" in argv:
                kids[argv[argv.index(b"-m") + 1].decode().rsplit(".", 1)[-1]] = int(d.name)
    return kids


def soak(
    broker: PrivateMosquitto, pg: PrivatePostgres, seconds: int, rate: int
) -> tuple[list[dict[str, float]], int, int]:
    """Publish ``rate`` single-event messages/s for ``seconds`` (a separate publisher
    process); sample the RSS of trygg's processes every 10 s. Returns (samples,
    messages the broker acknowledged, events stored when the last was stored or
    60 s after publishing ended)."""
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    env = {
        **os.environ,
        "TRYGG_MQTT_URL": broker.url,
        "TRYGG_DATABASE_URL": pg.url,
        "TRYGG_SITE": SITE,
        "TRYGG_MQTT_CLIENT_ID": "soak",
        "TRYGG_SPOOL_DIR": spool,
        "TRYGG_LOG_FORMAT": "json",
        "TRYGG_LOG_LEVEL": "INFO",
    }
    log = Path(spool) / "trygg.log"
    before = count(pg.url)
    p = start_trygg(env, log)
    connected_at(log, 0)
    procs = {"runner": p.pid, **children(p.pid)}
    pub = subprocess.Popen(
        [PY, str(REPO / "bench" / "soak_publisher.py"), str(broker.port), str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples = []
    start = time.time()
    while pub.poll() is None:
        time.sleep(max(0.0, start + 10 * (len(samples) + 1) - time.time()))
        if pub.poll() is None:
            samples.append({name: rss_mb(pid) for name, pid in procs.items()})
    out = dict(kv.split("=") for kv in (pub.stdout.read() if pub.stdout else "").split())
    published = int(out.get("acked", 0))
    deadline = time.time() + 60
    while (stored := count(pg.url) - before) < published and time.time() < deadline:
        time.sleep(0.5)
    lag = time.time() - (deadline - 60)
    print(f"  stored {stored:,} of {published:,} published, {lag:.1f} s after publishing ended")
    p.terminate()
    p.wait()
    return samples, published, stored


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--soak", type=int, default=0, help="seconds of steady load for memory")
    ap.add_argument("--soak-rate", type=int, default=10_000)
    ap.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record trygg's measured runs with py-spy (must be on PATH) into DIR",
    )
    args = ap.parse_args()
    if args.py_spy:
        global PROFILE_DIR
        PROFILE_DIR = args.py_spy
        Path(PROFILE_DIR).mkdir(parents=True, exist_ok=True)
        PROFILE.extend(
            [
                "py-spy",
                "record",
                "--format",
                "raw",
                "--threads",
                "--gil",
                "--subprocesses",
                "--rate",
                "200",
            ]
        )
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}")
    with PrivatePostgres() as pg, PrivateMosquitto() as broker:
        migrate(pg.url)
        reg = parse_registry(
            {
                "residents": [{"id": f"r-{i:04d}", "team": "t"} for i in range(DEVICES)],
                "devices": [
                    {
                        "id": f"motion-{i:04d}",
                        "resident": f"r-{i:04d}",
                        "kind": "motion",
                        "room": "livingroom",
                    }
                    for i in range(DEVICES)
                ],
            },
            "bench",
        )
        with psycopg.connect(pg.url) as conn:
            save_registry(conn, reg)
        single = payloads(args.events, 1)
        print(f"payload size: {len(single[0][1])} bytes")
        bare = bare_rate(broker, single)
        print(f"bare subscriber:   {bare:,.0f} msg/s")
        ours = trygg_rate(broker, pg, single, args.events, "trygg-single")
        print(f"trygg single:      {ours:,.0f} events/s  ratio {ours / bare:.2f}")
        batched = payloads(args.events * 2, args.batch, tag="bat")
        ours_b = trygg_rate(broker, pg, batched, args.events * 2, "trygg-batched")
        print(f"trygg batched x{args.batch}: {ours_b:,.0f} events/s")
        if args.soak:
            samples, published, stored = soak(broker, pg, args.soak, args.soak_rate)
            print(
                f"soak {args.soak} s at {args.soak_rate}/s: {published:,} published"
                f" ({published / args.soak:,.0f}/s), {stored:,} stored"
            )
            for name in samples[0] if samples else []:
                print(
                    f"  RSS MB of {name} every 10 s: " + " ".join(f"{s[name]:.0f}" for s in samples)
                )


if __name__ == "__main__":
    main()
