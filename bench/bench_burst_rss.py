"""Memory under a burst of oversized messages: resident memory of trygg's three processes.

    .venv/bin/python bench/bench_burst_rss.py [--messages 100] [--mb 5] [--append]

Private mosquitto (its default configuration: no packet size limit, so a 5 MB
message is delivered) and PostgreSQL/TimescaleDB (trygg.devenv); ``trygg run``
as its own process. A separate publisher process sends ``--messages``
messages of ``--mb`` MB each at QoS 1, a few in flight at a time, in turn on a
known device's ``events`` and ``scaip`` topics and an unknown device's
``events`` topic. Every one is far above the decoder's payload limit
(256 KiB), so every one must become a dead letter.

Measured per process (runner, MQTT receiver, drainer), from /proc:
- **idle** (the baseline, same run): VmRSS once trygg is connected and has
  been idle for 3 s;
- **peak**: the largest VmRSS sampled every 50 ms from the first publish until
  all dead letters are stored, and the kernel's high-water mark (VmHWM);
- **after**: VmRSS 2 s after the last dead letter was stored.

``--append`` adds a dated section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from bench.machine import cpu_model  # noqa: E402

from trygg.devenv import PrivateMosquitto, PrivatePostgres  # noqa: E402
from trygg.registry import parse_registry  # noqa: E402
from trygg.store.migrate import migrate  # noqa: E402
from trygg.store.registry import save_registry  # noqa: E402

SITE = "bench"
PY = sys.executable
TRYGG = str(Path(PY).parent / "trygg")
INFLIGHT = 4  # the publisher holds at most this many messages in memory
TOPICS = [
    f"trygg/{SITE}/devices/bed-0000/events",
    f"trygg/{SITE}/devices/bed-0000/scaip",
    f"trygg/{SITE}/devices/nobody-0000/events",
]


def publisher(port: int, n: int, mb: float) -> None:
    """The publisher process: ``n`` messages of ``mb`` MB, each built when it is sent."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-burst-publisher", protocol=mqtt.MQTTv5
    )
    acked = 0

    def on_publish(*args: object) -> None:
        nonlocal acked
        acked += 1

    c.on_publish = on_publish
    c.max_inflight_messages_set(INFLIGHT)
    c.connect("127.0.0.1", port)
    c.loop_start()
    size = int(mb * 1024 * 1024)
    now = datetime.now(UTC).isoformat()
    for i in range(n):
        while i - acked >= INFLIGHT:
            time.sleep(0.005)
        head = b'{"id":"burst-%d","type":"heartbeat","time":"%s","pad":"' % (i, now.encode())
        if i % 3 == 1:
            head = b"<mrq><ref>burst%d</ref><cid>1</cid><dty>3</dty><ite>" % i
        body = head + b"x" * (size - len(head) - 2) + b'"}'
        c.publish(TOPICS[i % len(TOPICS)], body, qos=1)
        del body
    deadline = time.monotonic() + 300
    while acked < n and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    print(f"published={n} acked={acked}", flush=True)


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out: dict[str, float] = {"VmRSS": 0.0, "VmHWM": 0.0}  # a process that has gone
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


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


def dead_letters(url: str) -> tuple[int, int]:
    """(rows, bytes of payload kept) in dead_letters."""
    with psycopg.connect(url) as c:
        row = c.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM dead_letters")
        got = row.fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--label", default="", help="what the run measures (for RESULTS.md)")
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--publish", nargs=3, metavar=("PORT", "N", "MB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        publisher(int(args.publish[0]), int(args.publish[1]), float(args.publish[2]))
        return
    machine = f"nproc {os.cpu_count()}, {cpu_model()}"
    print(f"machine: {machine}")
    with PrivatePostgres() as pg, PrivateMosquitto() as broker:
        migrate(pg.url)
        reg = parse_registry(
            {
                "residents": [{"id": "r-0000", "team": "t"}],
                "devices": [{"id": "bed-0000", "resident": "r-0000", "kind": "bed"}],
            },
            "bench",
        )
        with psycopg.connect(pg.url) as conn:
            save_registry(conn, reg)
        spool = tempfile.mkdtemp(prefix="bench-spool-")
        log = Path(spool) / "trygg.log"
        env = {
            **os.environ,
            # The trygg of this checkout, whatever the virtualenv has installed.
            "PYTHONPATH": str(REPO / "src"),
            "TRYGG_MQTT_URL": broker.url,
            "TRYGG_DATABASE_URL": pg.url,
            "TRYGG_SITE": SITE,
            "TRYGG_MQTT_CLIENT_ID": "bench-burst",
            "TRYGG_SPOOL_DIR": spool,
            "TRYGG_HTTP_PORT": "0",
            "TRYGG_LOG_FORMAT": "json",
            "TRYGG_LOG_LEVEL": "WARNING",
        }
        with open(log, "ab") as f:
            proc = subprocess.Popen(
                [TRYGG, "run"], env={**env, "TRYGG_LOG_LEVEL": "INFO"}, stdout=f, stderr=f
            )
        try:
            deadline = time.monotonic() + 60
            while '"mqtt connected"' not in log.read_text():
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit(f"trygg did not connect:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            time.sleep(3)
            procs = {"runner": proc.pid} | children(proc.pid)
            idle = {k: status(p)["VmRSS"] for k, p in procs.items()}
            peak = dict(idle)
            pub = subprocess.Popen(
                [PY, __file__, "--publish", str(broker.port), str(args.messages), str(args.mb)],
                stdout=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            stored_at = None
            while stored_at is None or time.monotonic() < stored_at + 2:
                for k, p in procs.items():
                    peak[k] = max(peak[k], status(p)["VmRSS"])
                if stored_at is None and dead_letters(pg.url)[0] >= args.messages:
                    stored_at = time.monotonic()
                if time.monotonic() - t0 > 600:
                    sys.exit("not all dead letters stored within 600 s")
                time.sleep(0.05)
            out, _ = pub.communicate(timeout=60)
            # Helpers started again (a crash) would not be the processes measured.
            restarted = children(proc.pid) != {k: v for k, v in procs.items() if k != "runner"}
            final = {k: status(p) for k, p in procs.items()}
            rows, kept = dead_letters(pg.url)
        finally:
            proc.terminate()
            proc.wait(30)
    assert stored_at is not None
    lines = [
        f"- machine: {machine}",
        f"- command: `.venv/bin/python bench/bench_burst_rss.py --messages {args.messages}"
        f" --mb {args.mb:g}`" + (f" ({args.label})" if args.label else ""),
        f"- burst: {args.messages} messages of {args.mb:g} MB ({out.strip()}), "
        f"{rows} dead letters stored in {stored_at - t0:.1f} s, "
        f"{kept / 1024 / 1024:.1f} MB of payload kept in dead_letters"
        + ("; a helper process was restarted during the burst" if restarted else ""),
        "- RSS MB per process: idle (baseline, same run) / peak sampled / VmHWM / 2 s after:",
    ]
    for k in procs:
        lines.append(
            f"  - {k}: {idle[k]:.0f} / {peak[k]:.0f} / {final[k]['VmHWM']:.0f}"
            f" / {final[k]['VmRSS']:.0f}"
        )
    lines.append(
        f"  - all three: {sum(idle.values()):.0f} / {sum(peak.values()):.0f}"
        f" / {sum(f['VmHWM'] for f in final.values()):.0f}"
        f" / {sum(f['VmRSS'] for f in final.values()):.0f}"
    )
    print("\n".join(lines))
    if args.append:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(
                f"\n## {datetime.now(UTC).date()} — burst of oversized messages "
                "(bench_burst_rss.py)\n\n" + "\n".join(lines) + "\n"
            )


if __name__ == "__main__":
    main()
