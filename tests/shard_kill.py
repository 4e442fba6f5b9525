"""Killing a worker of a sharded ``trygg rules`` run (replay or back-test
``--jobs N``) mid-run: the spawn workers of a process, and the run with one of
them SIGKILLed, so that a test can check that the whole run failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def workers(pid: int) -> list[int]:
    """The spawn workers among ``pid``'s children (not multiprocessing's resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for c in children:
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmd:
            found.append(int(c))
    return found


@dataclass
class Killed:
    """How ``trygg`` ended after one of its workers was killed."""

    pid: int
    returncode: int
    stdout: str
    stderr: str


def kill_a_worker(
    args: Sequence[str],
    victims: Callable[[int], list[int]],
    env: dict[str, str] | None = None,
) -> Killed:
    """Run ``trygg *args``; SIGKILL the first of ``victims(pid)`` (which waits
    until the run is where the test wants it), then wait for trygg to end."""
    exe = Path(sys.executable).parent / "trygg"
    proc = subprocess.Popen(
        [str(exe), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        os.kill(victims(proc.pid)[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Killed(proc.pid, proc.returncode, stdout, stderr)


def assert_failed_whole(run: Killed, what: str, nothing: str) -> None:
    """The run failed as a whole: exit 1, ``a <what> worker process ended
    abruptly`` and ``nothing`` (what was not written) on stderr, no traceback,
    nothing on stdout, and no worker left behind."""
    assert run.returncode == 1, run.stderr
    assert f"a {what} worker process ended abruptly" in run.stderr
    assert nothing in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""
    assert not workers(run.pid)
