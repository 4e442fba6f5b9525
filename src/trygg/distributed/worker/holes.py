"""Holes an agent found in a partition's offsets, and its requests to read them again.

Pure bookkeeping (every time is passed in); the worker's offset checks
(``offsets.OffsetChecks``) seek and ask the broker.
"""

from __future__ import annotations

from typing import Any


class Holes:
    """Holes an agent found in a partition's offsets, and its requests to read them again.

    Faust 0.15 can commit past a record that reached one agent and not another
    (docs/distributed.md, "Faust's holes"). An agent that sees every offset of a
    partition in order (the rules agent on the events topic; the sink on its
    topics) notices the jump and asks for the partition to be read again from the
    hole. ``ask`` says whether to seek now (not when the same hole was asked for
    within ``retry_s``: the re-read records are on their way). After ``check_after``
    requests, ``stubborn`` says it is time to ask the broker whether the hole is
    still in the topic at all (retention may have deleted it); only the broker's
    earliest offset decides that, never the count: a busy worker can take many
    seconds to reach a re-read (a take-over's backlog), and giving up then would
    lose the records.
    """

    def __init__(self, retry_s: float = 1.0, check_after: int = 3) -> None:
        self.retry_s = retry_s
        self.check_after = check_after
        self._asked: dict[Any, tuple[int, int, float]] = {}  # key -> offset, times, when

    def ask(self, key: Any, offset: int, now: float) -> bool:
        prev = self._asked.get(key)
        if prev is not None and prev[0] == offset:
            if now - prev[2] < self.retry_s:
                return False
            self._asked[key] = (offset, prev[1] + 1, now)
        else:
            self._asked[key] = (offset, 1, now)
        return True

    def pending(self, key: Any) -> int | None:
        """The hole last asked for under ``key`` (None: none)."""
        prev = self._asked.get(key)
        return prev[0] if prev is not None else None

    def stubborn(self, key: Any) -> bool:
        """The pending hole was asked for ``check_after`` times or more."""
        prev = self._asked.get(key)
        return prev is not None and prev[1] >= self.check_after

    def closed(self, key: Any) -> None:
        self._asked.pop(key, None)
