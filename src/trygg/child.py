"""A helper process of ``trygg run``: started, watched, restarted and stopped by its pipes.

``trygg run`` keeps two helpers beside its event loop, the MQTT receiver
(trygg.ingest.receiver) and the drainer (trygg.runner.drainer), each a
``python -m MODULE`` child that talks only through its standard input and
output. The rules they share live here: a helper exits when its standard
input closes (so a SIGKILL of the runner takes it down), one that dies on its
own is started again after a second, and stopping means closing its input
and waiting a bounded time before killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from trygg import logs

T = TypeVar("T")

log = logs.get("trygg.child")


def leave_stop_signals_to_the_runner() -> None:
    """Called first in a helper: ignore SIGINT and SIGTERM.

    Both reach the whole process group at once: Ctrl-C in a terminal, systemd's
    default ``KillMode=control-group``, ``kill -- -PGID``. The runner gets them
    too and stops its helpers in order (it closes their input once it has
    nothing more for them). A helper that died of the signal itself was started
    again by the runner in the middle of its shutdown, and the new one met a
    closed pipe. A helper whose runner is gone exits anyway: its input closes.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_on_signals() -> asyncio.Event:
    """The stop of a process that takes the stop signals itself (``trygg api``, a
    bridge, the demo): an event the running loop sets at SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None if ``stop`` is set first (``work`` is cancelled then).

    Such a process has taken SIGTERM from the default action, so a start-up that
    waits on a service that is away (retried for as long as it stays away) must
    watch ``stop`` itself, or the signal is ignored until the orchestrator's SIGKILL."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


class ChildProcess:
    """One helper; ``follow`` reads its standard output for as long as it runs."""

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        env: dict[str, str],
        follow: Callable[[asyncio.StreamReader], Awaitable[None]],
        on_exit: Callable[[], None] = lambda: None,
        limit: int = 1 << 16,
    ) -> None:
        self.name = name
        self._argv = ["-m", module, *args]
        self._env = env
        self._follow = follow
        self._on_exit = on_exit  # before it is started again: forget what it held
        self._limit = limit
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            limit=self._limit,
        )
        self._task = asyncio.create_task(self._watch(self.proc), name=self.name)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(asyncio.IncompleteReadError):
            await self._follow(proc.stdout)
        await proc.wait()
        if self._stopping:
            return
        # It should never end on its own; what it does must go on.
        log.error(f"{self.name} process exited; starting it again", code=proc.returncode)
        self._on_exit()
        await asyncio.sleep(1)
        await self.start()

    def write(self, data: bytes) -> None:
        """To its standard input; dropped while it is not running."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(data)

    def close_input(self) -> None:
        """Tell it to finish and exit (and not to be started again)."""
        self._stopping = True
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()

    async def stop(self, within: float = 5.0) -> None:
        """Close its input and wait ``within`` seconds for it to exit, else kill it."""
        self.close_input()
        proc = self.proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            log.warning(f"{self.name} process did not finish in time; killed")
            proc.kill()
            await proc.wait()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 1.0)
