"""Which records of a partition each agent has taken in, and reading again those
it never received.

Faust 0.15 can drop a record on its way to one agent and still commit past it
(docs/distributed.md, "Faust's holes"): the rules agent and the sink see every
offset of their partitions in order, so they notice a hole and seek the partition
back to it (``Holes``); a record lost at a partition's end leaves no hole, so
``check_tails`` compares an idle agent with what the consumer handed over.
"""

from __future__ import annotations

import time
from typing import Any

from trygg import logs
from trygg.distributed.worker.held_states import HeldRulesStates

log = logs.get("trygg.worker")
TAIL_CHECK_S = 2.0  # how often a worker looks for records missed at a partition's end


class OffsetChecks(HeldRulesStates):
    """The agents' holes and tails, and the rules agent's next offset per partition."""

    async def _rules_skip(self, partition: int, offset: int) -> bool:
        """Whether the rules agent skips this record of ``partition``.

        Below the next offset it expects: taken in already (a partition read again for
        the sink's sake). Above it: a hole, and the partition is read again from the
        first missing record. After an assignment the agent expects the committed
        offset, where Faust sought the partition to, so records lost on their way right
        after the seek are a hole too; from there each resident's state says which of
        its own records it took in (``rules_core.applied_offset``). No offset of the
        partition as a whole can say that: the states are written to the changelog one
        record a resident at each commit, and a worker killed in the middle of those
        writes leaves some residents' states newer than others' (docs/distributed.md,
        "No event applied twice")."""
        want = self._rules_next.get(partition)
        topic = self.settings.kafka_events_topic
        key = ("rules", topic, partition)
        self._seen_at["rules"] = time.monotonic()
        if want is None:
            want = self._committed(topic, partition)
            if want is not None:
                # Kept from here on: Faust's committed offset moves on as the records
                # read before the seek are acknowledged (skipped here as a hole), and
                # taken afresh each time it ran ahead of the record sought back to,
                # which was then skipped as taken in, and the partition's events were
                # never applied again (a fall and two presses, 2026-12-07).
                self._rules_next[partition] = want
        if want is not None and offset < want:
            return True
        if want is not None and offset > want:
            if not await self._gone("rules", topic, partition):
                await self._read_again("rules", topic, partition, want)
                return True
            log.error("events missing from the topic", partition=partition, missing=offset - want)
        self.holes.closed(key)
        self._rules_next[partition] = offset + 1
        return False

    def _committed(self, topic: str, partition: int) -> int | None:
        """The committed offset Faust sought the partition to at its assignment (None:
        none yet, a new group reading from the earliest; Faust also keeps 0 as None)."""
        from faust.types import TP

        committed: Any = getattr(self.app.consumer, "_committed_offset", {})
        offset = committed.get(TP(topic, partition))
        return offset if isinstance(offset, int) and offset > 0 else None

    async def _gone(self, agent: str, topic: str, partition: int) -> bool:
        """Whether the agent's pending hole in the partition is no longer in the topic: asked for
        several times, and the broker's earliest offset is past it (retention)."""
        from faust.types import TP

        key = (agent, topic, partition)
        hole = self.holes.pending(key)
        if hole is None or not self.holes.stubborn(key):
            return False
        now = time.monotonic()
        if now - self._earliest_asked.get(key, 0.0) < 1.0:
            return False  # asked the broker a moment ago
        self._earliest_asked[key] = now
        tp = TP(topic, partition)
        try:
            earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp)
        except Exception as exc:  # the broker will say next time
            log.warning("earliest offset unknown", topic=topic, error=str(exc)[:200])
            return False
        return earliest is not None and earliest > hole

    async def check_tails(self) -> None:
        """Read again a record the consumer fetched that never reached an agent.

        A record lost on its way to an agent at the end of a partition leaves no hole
        for a later record to show (a dead letter is often the only record of its
        partition for a while). So every ``TAIL_CHECK_S`` an agent that is idle (no
        step under way, nothing received for as long, so nothing is queued for it)
        is compared with the consumer: if the consumer has handed the agents the
        partition's records up to or past the agent's next offset (``Handed``), that
        record was lost, and the
        partition is read again from it. An agent behind is not short: a busy agent,
        or records the consumer has not fetched yet (it will), are left alone. (This
        used to compare with the broker's end offset and count only the time since the
        agent's last record: a step or a database write taking 2 s under load, or the
        sink waiting to fill a batch, sought partitions back with no rebalance going
        on, hundreds of times a run.)"""
        from trygg.distributed.worker.sink import checkpoints

        if not self._ready():
            return
        s = self.settings
        now = time.monotonic()

        def idle(key: str) -> bool:
            return key not in self._busy and now - self._seen_at.get(key, 0.0) > TAIL_CHECK_S

        events = s.kafka_events_topic
        if idle("rules"):
            for p in self._owned(events):
                want, read = self._rules_next.get(p), self.handed.get(events, p)
                if want is not None and read is not None and want <= read:
                    await self._read_again("rules", events, p, want, end=read + 1)
        if self.db is None or not idle("sink"):
            return
        topics = (events, s.kafka_dead_letters_topic, s.kafka_records_topic)
        tps = [(t, p) for t in topics for p in sorted(self._owned(t))]
        reads = {tp: self.handed.get(*tp) for tp in tps}
        tps = [tp for tp in tps if reads[tp] is not None]
        if not tps:
            return
        cps = await self.db(checkpoints, tps)
        if not idle("sink"):
            return  # a batch came meanwhile
        for topic, p in tps:
            have, read = cps.get((topic, p)) or 0, reads[(topic, p)]
            if read is not None and have <= read:
                await self._read_again("sink", topic, p, have, end=read + 1)

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kw: Any) -> None:
        """A new owner reads from the committed offset: forget where the rules were
        (after the next assignment they expect the committed offset, ``_committed``)."""
        self._rules_next.clear()
        self.handed.clear()

    async def _read_again(
        self, agent: str, topic: str, partition: int, offset: int, *, end: int | None = None
    ) -> None:
        """Seek a partition back to a record an agent never received.

        Faust can drop a record on its way to one agent but not another (a delivery
        cut short when a rebalance suspends the flow) and still commit past it; an
        agent that sees the hole in the offsets reads the partition again from there.
        Every agent sees those records again; each step is idempotent."""
        from faust.types import TP

        key = (agent, topic, partition)
        if not self.holes.ask(key, offset, time.monotonic()):
            return  # asked already; the re-read records are on their way
        log.warning(
            "records missed, reading again",
            agent=agent,
            topic=topic,
            partition=partition,
            missed=(end - offset) if end is not None else "a hole",
        )
        await self.app.consumer.seek(TP(topic, partition), offset)
