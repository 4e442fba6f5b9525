"""Test helpers: publish from a separate process, run trygg as a process, receive webhooks."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from trygg.devenv import end_process, free_port

TESTS = Path(__file__).resolve().parent


def start_publisher(
    port: int, messages: Iterable[tuple[str, bytes]], rate: float = 0
) -> subprocess.Popen[str]:
    """Start publishing from a separate process and return at once.

    ``rate`` (messages/s, 0 = as fast as possible) paces the publisher so a
    test can act in the middle of a stream.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for topic, payload in messages:
            f.write(f"{topic}\t{base64.b64encode(payload).decode()}\n")
    return subprocess.Popen(
        [sys.executable, str(TESTS / "publish.py"), str(port), f.name, str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def publish(port: int, messages: Iterable[tuple[str, bytes]]) -> float:
    """Publish ``(topic, payload)`` pairs at QoS 1 from a separate process.

    Returns the ``time.monotonic()`` at which the first message was sent.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for topic, payload in messages:
            f.write(f"{topic}\t{base64.b64encode(payload).decode()}\n")
    try:
        out = subprocess.run(
            [sys.executable, str(TESTS / "publish.py"), str(port), f.name],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:  # publish.py removes it once open; this is for when it did not get so far
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f.name)
    return float(out.stdout.rsplit("first_sent=", 1)[1])


def event_json(eid: str, typ: str, when: str, **extra: Any) -> bytes:
    return json.dumps({"id": eid, "type": typ, "time": when, **extra}).encode()


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that records each POST and when it came."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append((time.monotonic(), dict(self.headers), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def event_counts(url: str) -> tuple[int, int]:
    """Rows in ``events``, and distinct (device, event id) among them: equal when
    nothing was stored twice."""
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT count(*), count(DISTINCT (device, event_id)) FROM events"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class TryggProcess:
    """``trygg run`` as a separate process, configured by TRYGG_* variables."""

    def __init__(self, env: dict[str, str], own_group: bool = False) -> None:
        # own_group: a process group of its own (with its helpers), so that a test can
        # signal the whole group as a terminal, systemd or `kill -- -PGID` would
        self.own_group = own_group
        self.env = {
            **os.environ,
            "TRYGG_LOG_FORMAT": "json",
            # Its own HTTP port: never a fixed one that something else may hold.
            "TRYGG_HTTP_PORT": str(free_port()),
            "TRYGG_SPOOL_DIR": tempfile.mkdtemp(prefix="trygg-spool-"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="trygg-run-", suffix=".log")
        os.close(fd)

    def start(self) -> TryggProcess:
        exe = Path(sys.executable).parent / "trygg"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_group,
            )
        return self

    def wait_connected(self, timeout: float = 60) -> None:
        def connected() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"trygg run exited: {self.output()}")
            return "mqtt connected" in self.output()

        wait_until(connected, timeout)

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        end_process(self.proc, within=15)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> TryggProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
