"""An HTTP upload on a raw socket, for the API's body-limit tests: httpx would
stop at the first refused write and not show the answer the server gave."""

from __future__ import annotations

import socket
import threading
import time


def raw_upload(port: int, head: bytes, chunk: bytes, total: int) -> tuple[bytes, int, float]:
    """Send ``head`` and then up to ``total`` body bytes in ``chunk``s while reading
    the answer, and go on sending after it until the server closes the connection;
    returns (answer, body bytes the socket took, seconds to the answer). A server
    that reads (or reads and discards) the body takes all ``total`` bytes."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    got = bytearray()
    answered = threading.Event()
    t0 = time.monotonic()
    when: list[float] = []

    def read() -> None:
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                if not got:
                    when.append(time.monotonic() - t0)
                got.extend(b)
                answered.set()
        except OSError:
            pass
        answered.set()

    th = threading.Thread(target=read, daemon=True)
    th.start()
    sent = 0
    try:
        s.sendall(head)
        s.settimeout(10)
        while sent < total:
            sent += s.send(chunk)
    except OSError:
        pass  # the server closed the connection: what the test wants
    answered.wait(10)
    th.join(5)
    s.close()
    return bytes(got), sent, when[0] if when else float("inf")
