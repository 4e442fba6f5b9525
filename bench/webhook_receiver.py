"""A local webhook receiver for the benchmarks: when each event's first level-1 POST arrived.

Keep-alive (HTTP/1.1), as a real receiver (a reverse proxy, a paging service)
has it: with HTTP/1.0 every POST paid a new connection and a new server thread,
and that showed in the latency figures.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trygg.devenv import free_port


class Hook:
    """``times``: event id -> monotonic time of its first level-1 notification."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                t = time.monotonic()
                outer.posts += 1
                p = json.loads(body)
                if p.get("notification", {}).get("level") == 1:
                    for e in p.get("events", []):
                        outer.times.setdefault(e, t)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.srv.shutdown()
