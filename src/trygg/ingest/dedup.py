"""Drop re-delivered events before they reach the rules.

MQTT QoS 1 is at-least-once: after a reconnect the broker re-sends what we
had not acknowledged. The database drops duplicates by its unique key, but
the rules must not see an alarm twice, so ingest remembers the most recent
(device, event id) keys in a bounded set.
"""

from __future__ import annotations


class RecentKeys:
    """A bounded set of recently seen keys: at least the last ``capacity // 2``.

    Two generations of plain sets: keys go into the young one; when it is
    full, it becomes the old one and the previous old one is dropped whole.
    Constant time per key. (The first version evicted the oldest key of an
    insertion-ordered dict with ``next(iter(d))``, which CPython makes scan
    over every deleted slot at the front: once full, each event cost time in
    proportion to the set, and the soak benchmark fell behind after ~100 s.)
    """

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self._young: set[tuple[str, str]] = set()
        self._old: set[tuple[str, str]] = set()

    def seen(self, key: tuple[str, str]) -> bool:
        """True if ``key`` was seen before; otherwise remember it and return False."""
        if key in self._young or key in self._old:
            return True
        self._young.add(key)
        if len(self._young) >= self.capacity // 2:
            self._old, self._young = self._young, set()
        return False

    def restore(self, newest_first: list[tuple[str, str]]) -> None:
        """Remember keys seen before a restart (the newest first, as the database
        gives them), so that what the broker sends again is dropped as live."""
        for key in reversed(newest_first[: self.capacity // 2]):
            self.seen(key)

    def __len__(self) -> int:
        return len(self._young) + len(self._old)
