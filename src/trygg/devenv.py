"""Private PostgreSQL (with TimescaleDB) and mosquitto instances.

The tests and ``trygg demo`` both need a broker and a database they own: on
their own 127.0.0.1 port and data directory, started and stopped by the
caller, never the machine's shared services. This module is that one helper.
It needs the Debian packages ``scripts/setup`` installs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def end_process(proc: subprocess.Popen[bytes] | None, within: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited ``within`` seconds: a private
    server stops in order when it can, and never outlives its test."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian layout)."""
    env = os.environ.get("TRYGG_PG_BINDIR")
    if env:
        return Path(env)
    root = Path("/usr/lib/postgresql")
    versions = (
        sorted(
            (p for p in root.iterdir() if (p / "bin" / "postgres").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if root.exists()
        else []
    )
    if not versions:
        raise RuntimeError(
            "no PostgreSQL server found under /usr/lib/postgresql: run scripts/setup"
        )
    return versions[-1] / "bin"


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1.

    ``timescaledb=False`` starts it without the extension preloaded, which is
    how trygg is tested against plain PostgreSQL (managed services without
    TimescaleDB). ``durable=False`` turns off fsync for fast tests.
    """

    timescaledb: bool = True
    port: int = field(default_factory=free_port)
    durable: bool = False
    database: str = "trygg"
    data_dir: Path | None = None
    _owned_dir: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True)

    def start(self) -> PrivatePostgres:
        bindir = pg_bindir()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="trygg-pg-"))
            self._owned_dir = True
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)
        if fresh:
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            conf = [
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port}",
                f"unix_socket_directories = '{self.data_dir}'",
                "max_connections = 60",
                "shared_buffers = '128MB'",
                "timezone = 'UTC'",
                "log_min_messages = warning",
            ]
            if self.timescaledb:
                conf += [
                    "shared_preload_libraries = 'timescaledb'",
                    "timescaledb.telemetry_level = off",
                ]
            if not self.durable:
                conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
            with open(self.data_dir / "postgresql.conf", "a") as f:
                f.write("\n# trygg private instance\n" + "\n".join(conf) + "\n")
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        if fresh:
            self._run(
                str(bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                f'CREATE DATABASE "{self.database}"',
            )
        return self

    def stop(self, remove: bool = True) -> None:
        if self.data_dir is None or not (self.data_dir / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                str(pg_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"
            )
        if remove and self._owned_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PrivateMosquitto:
    """A private mosquitto broker on 127.0.0.1 with persistence in its own directory.

    ``config`` adds lines to the generated configuration (e.g. a password and
    ACL file for the device-security tests); anonymous access is allowed
    unless ``config`` sets ``allow_anonymous false``. With ``listener`` off,
    ``config`` brings its own listeners (ingest/mosquitto.conf's, with per-listener
    settings), ``port`` being one of them.
    """

    port: int = field(default_factory=free_port)
    config: str = ""
    listener: bool = True
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _owned_dir: bool = False

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> PrivateMosquitto:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="trygg-mqtt-"))
            self._owned_dir = True
        conf_path = self.data_dir / "mosquitto.conf"
        lines = [
            *([f"listener {self.port} 127.0.0.1"] if self.listener else []),
            "persistence true",
            f"persistence_location {self.data_dir}/",
            # Saved on shutdown too; saving a deep queue every second made publishing crawl.
            "autosave_interval 60",
            "max_queued_messages 0",  # 0 = no limit: a persistent session keeps everything
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self.listener and "allow_anonymous" not in self.config:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf_path.write_text("\n".join(lines) + "\n" + self.config + "\n")
        with open(self.data_dir / "mosquitto.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(conf_path)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, remove: bool = True) -> None:
        end_process(self.proc)
        self.proc = None
        if remove and self._owned_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port and persistence directory."""
        self.stop(remove=False)
        self.start()

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
