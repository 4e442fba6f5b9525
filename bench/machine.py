"""What a benchmark records about the machine it ran on (bench/RESULTS.md asks for it)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, steal, total) clock ticks of all CPUs since boot, from /proc/stat.

    Two readings give what the machine did in between: how busy its cores were,
    and how much time the hypervisor gave to other guests (steal). A latency run
    on a VM whose host is busy shows steal; a run crowded by its own processes
    shows busy near 100 % with no steal.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[0] != "cpu":
        return None
    v = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = v[3] + v[4]
    total = sum(v)
    return total - idle - v[7], v[7], total


def cpu_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> str:
    """The "busy 85 %, steal 0.4 %" of all cores between two ``cpu_ticks`` readings."""
    if before is None or after is None or after[2] <= before[2]:
        return "unknown"
    span = after[2] - before[2]
    busy = 100 * (after[0] - before[0]) / span
    steal = 100 * (after[1] - before[1]) / span
    return f"busy {busy:.0f} %, steal {steal:.1f} %"
