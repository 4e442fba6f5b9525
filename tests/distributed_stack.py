"""A distributed trygg on this machine: tansu, bridges and workers as processes.

Used by tests/test_distributed_integration.py and bench/bench_distributed.py.
The test-only Kafka settings of the issue (one record per producer batch, a
low fetch wait, a 10 s session timeout, no web server) are set here, in the
environment of the processes, never as defaults.
"""

from __future__ import annotations

import asyncio
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
    "TRYGG_KAFKA_SESSION_TIMEOUT_S": "10",
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
