"""A distributed trygg on this machine: tansu, bridges and workers as processes.

Used by the tests/test_distributed_*.py on tansu and bench/bench_distributed.py.
The test-only Kafka settings for tansu (one record per producer batch, a low
fetch wait, no web server) are set here, in the environment of the processes,
never as defaults. The session and heartbeat timeouts are the production
defaults (docs/distributed.md, "Failover"). ``Prober`` times immediate alarms
from publish to page.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import REPO

TRYGG = str(Path(sys.executable).parent / "trygg")

TEST_ONLY_KAFKA = {
    "TRYGG_KAFKA_PRODUCER_MAX_BATCH_SIZE": "1",
    "TRYGG_KAFKA_PRODUCER_LINGER_MS": "0",
    "TRYGG_KAFKA_FETCH_MAX_WAIT_MS": "10",
}


class Stack:
    def __init__(
        self,
        *,
        bootstrap: str,
        mqtt_url: str,
        database_url: str,
        site: str = "test",
        partitions: int = 4,
        clock: str = "event",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="trygg-dist-"))
        self.env = {
            **os.environ,
            "TRYGG_KAFKA_BOOTSTRAP": bootstrap,
            "TRYGG_MQTT_URL": mqtt_url,
            "TRYGG_DATABASE_URL": database_url,
            "TRYGG_SITE": site,
            "TRYGG_RULES_DIR": str(REPO / "rules"),
            "TRYGG_KAFKA_PARTITIONS": str(partitions),
            "TRYGG_WORKER_CLOCK": clock,
            "TRYGG_LOG_FORMAT": "json",
            "TRYGG_LOG_LEVEL": "WARNING",
            "TRYGG_HTTP_PORT": "0",
            "TRYGG_BATCH_WAIT_MS": "5",
            **TEST_ONLY_KAFKA,
            **(extra or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [TRYGG, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"trygg {' '.join(args)}: {out.stderr}")
        return out.stdout

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        p = subprocess.Popen(
            [TRYGG, *args],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = p
        return p

    def bridge(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, "bridge", TRYGG_MQTT_CLIENT_ID=f"trygg-{name}")

    def worker(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(
            name, "worker", "--without-web", *args, TRYGG_WORKER_DATA_DIR=str(self.dir / name)
        )

    def applied(self, name: str) -> list[tuple[int, int, str, str]]:
        """The events worker ``name`` applied to its rule engine, in order, as
        (partition, offset, device, event id): its ``--applied-log`` (see ``worker``'s
        args). The offset is that of the record whose step applied the event."""
        path = self.dir / f"{name}.applied"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            p, offset, device, eid = line.split("\t")
            out.append((int(p), int(offset), device, eid))
        return out

    def applied_log(self, name: str) -> str:
        """The ``--applied-log`` argument for worker ``name``."""
        return f"--applied-log={self.dir / f'{name}.applied'}"

    def api(self, name: str, port: int) -> subprocess.Popen[bytes]:
        """``trygg api`` on 127.0.0.1:``port``."""
        return self.start(name, "api", TRYGG_HTTP_HOST="127.0.0.1", TRYGG_HTTP_PORT=str(port))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[name]
        if p.poll() is None:
            os.killpg(p.pid, sig)
            p.wait(30)

    def pause(self, name: str, seconds: float) -> None:
        """Stop a process (SIGSTOP) for ``seconds``, then let it go on (SIGCONT): a
        process starved of CPU, as on a busy machine."""
        p = self.procs[name]
        os.killpg(p.pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.killpg(p.pid, signal.SIGCONT)

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after 15 s). The logs stay until
        ``remove``."""
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def remove(self) -> None:
        """Remove the stack's directory (/tmp/trygg-dist-*: logs, the workers' data,
        the applied logs). ``TRYGG_KEEP_STACK=1`` keeps it, to look at a failed run."""
        if os.environ.get("TRYGG_KEEP_STACK") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        """``stop``, then ``remove``: what a test's ``finally`` calls."""
        try:
            self.stop()
        finally:
            self.remove()


def count(database_url: str, sql: str, *args: object) -> int:
    with psycopg.connect(database_url) as c:
        row = c.execute(sql, args).fetchone()
        return int(row[0]) if row else 0


def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of ``topic`` (partitions 0..``partitions``-1) up to the end offsets
    the broker gives at the start of the read, as aiokafka ``ConsumerRecord`` s in
    partition order, then offset order. Stops at those offsets, not after a quiet
    spell: on a busy machine a fetch can come back empty with records still to read."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> list[Any]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)
            got: dict[int, list[Any]] = {p: [] for p in range(partitions)}
            while any([await c.position(tp) < ends[tp] for tp in tps]):
                for tp, msgs in (await c.getmany(timeout_ms=500)).items():
                    got[tp.partition].extend(m for m in msgs if m.offset < ends[tp])
            return [m for p in range(partitions) for m in got[p]]
        finally:
            await c.stop()

    return asyncio.run(read())


def wait_until(pred, timeout: float, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def add_probe_residents(data: dict[str, Any], n: int) -> list[str]:
    """Add ``n`` probe residents (team ``probe``), each with a fall detector
    ``pfall-NNN``, to registry ``data`` (``trygg.simulate.homes.registry_data``);
    returns the detectors' ids. As bench/bench_alert_latency.py."""
    devices = []
    for i in range(n):
        data["residents"].append({"id": f"probe-{i:03d}", "team": "probe"})
        data["devices"].append(
            {"id": f"pfall-{i:03d}", "resident": f"probe-{i:03d}", "kind": "fall"}
        )
        devices.append(f"pfall-{i:03d}")
    return devices


class Prober:
    """Immediate alarms as probes of the alarm path: a ``fall.detected`` every
    ``every`` seconds, round the probe detectors, each followed 50 ms later by an
    ``alarm.reset`` that closes the alert again, so the resident's next fall is a new
    alert. Published at QoS 1 from a thread of this process; ``sent`` is each probe's
    event id -> (CLOCK_MONOTONIC at publish, device). Event times are the moment
    of publishing: nothing depends on the date."""

    def __init__(
        self, port: int, site: str, devices: list[str], every: float = 0.25, prefix: str = "probe"
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.site, self.devices, self.every, self.prefix = site, devices, every, prefix
        self.sent: dict[str, tuple[float, str]] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"probe-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._k = 0

    def _publish(self, device: str, eid: str, kind: str) -> None:
        from datetime import UTC, datetime

        body = {"id": eid, "type": kind, "time": datetime.now(UTC).isoformat()}
        self.client.publish(
            f"trygg/{self.site}/devices/{device}/events", json.dumps(body).encode(), qos=1
        )

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            dev = self.devices[self._k % len(self.devices)]
            eid = f"{self.prefix}-{self._k}"
            self.sent[eid] = (time.monotonic(), dev)
            self._publish(dev, eid, "fall.detected")
            time.sleep(0.05)
            self._publish(dev, f"{self.prefix}-reset-{self._k}", "alarm.reset")
            self._k += 1
            nxt += self.every
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def close(self) -> None:
        self.stop()
        self.client.loop_stop()
        self.client.disconnect()

    def between(self, t0: float, t1: float) -> list[str]:
        """The probes published in [t0, t1) (monotonic)."""
        return [e for e, (t, _) in self.sent.items() if t0 <= t < t1]


def pct(xs: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``xs``."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def broker_rebalance_s(bootstrap: str, partitions: int = 4) -> tuple[float, float]:
    """How long the broker itself takes to rebalance a group of two plain aiokafka
    consumers, with the workers' production session and heartbeat timeouts (6 s, 1 s)
    and nothing to commit or restore: (a second member joins -> both have their
    partitions, the first member leaves -> the other has them all), in seconds.

    The failover tests compare their alarm delays with it: what a join or leave costs
    on this broker before trygg's worker does anything (on tansu 0.6: 3 s for the
    member already in the group, 4 s for the new one, 3 s for a leave)."""
    import uuid

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    topic, group = f"rebalance-probe-{tag}", f"rebalance-probe-{tag}"

    class Noted(ConsumerRebalanceListener):
        def __init__(self) -> None:
            self.assigned_at: list[tuple[float, int]] = []

        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            self.assigned_at.append((time.monotonic(), len(assigned)))

    async def member(noted: Noted) -> AIOKafkaConsumer:
        c = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        c.subscribe([topic], listener=noted)
        await c.start()
        return c

    async def poll(c: AIOKafkaConsumer, until: float) -> None:
        while time.monotonic() < until:
            await c.getmany(timeout_ms=50)

    async def settled(notes: list[Noted], counts: list[int], limit: float) -> float:
        """The moment each member's latest assignment has its expected partitions."""
        while time.monotonic() < limit:
            last = [n.assigned_at[-1] if n.assigned_at else (0.0, -1) for n in notes]
            if [k for _, k in last] == counts:
                return max(t for t, _ in last)
            await asyncio.sleep(0.01)
        raise TimeoutError("the probe group did not settle")

    async def run() -> tuple[float, float]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        a, b = Noted(), Noted()
        ca = await member(a)
        pa = asyncio.create_task(poll(ca, time.monotonic() + 60))
        await settled([a], [partitions], time.monotonic() + 30)
        await asyncio.sleep(1.0)
        t_join = time.monotonic()
        cb = await member(b)
        pb = asyncio.create_task(poll(cb, time.monotonic() + 60))
        half = partitions // 2
        join = await settled([a, b], [partitions - half, half], t_join + 30) - t_join
        await asyncio.sleep(1.0)
        pb.cancel()
        t_leave = time.monotonic()
        await cb.stop()
        leave = await settled([a], [partitions], t_leave + 30) - t_leave
        pa.cancel()
        await ca.stop()
        return join, leave

    return asyncio.run(run())
