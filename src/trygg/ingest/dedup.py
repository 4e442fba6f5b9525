"""Drop re-delivered events before they reach the rules.

MQTT QoS 1 is at-least-once: after a reconnect the broker re-sends what we
had not acknowledged. The database drops duplicates by its unique key, but
the rules must not see an alarm twice, so ingest remembers the most recent
(device, event id) keys in a bounded, insertion-ordered set.
"""

from __future__ import annotations


class RecentKeys:
    """A bounded set of recently seen keys; the oldest are forgotten first."""

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self._keys: dict[tuple[str, str], None] = {}

    def seen(self, key: tuple[str, str]) -> bool:
        """True if ``key`` was seen before; otherwise remember it and return False."""
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            del self._keys[next(iter(self._keys))]
        return False

    def __len__(self) -> int:
        return len(self._keys)
