"""The sink agent's step: a batch of events, dead letters and alert records into
TimescaleDB.

The database side is ``sink.apply_batch`` (one transaction, a checkpoint per topic
partition); here the batch is grouped by partition, a partition with a hole is
not stored past it and is read again (``offsets``), and the receipt lag is measured
as the embedded runner's drainer measures it.
"""

from __future__ import annotations

import time
from typing import Any

from trygg.distributed import codecs
from trygg.distributed.worker.offsets import OffsetChecks
from trygg.runner.drain_lag import receipt_lags


class SinkAgent(OffsetChecks):
    """The sink agent's step (``Worker.sink_agent`` calls it per batch)."""

    async def sink_batch(self, batch: list[tuple[str, int, int, bytes]]) -> None:
        from trygg.distributed.worker.sink import apply_batch

        assert self.db is not None
        by_tp: dict[tuple[str, int], list[tuple[int, dict[str, Any]]]] = {}
        for topic, partition, offset, value in batch:
            by_tp.setdefault((topic, partition), []).append((offset, codecs.loads(value)))
        self._seen_at["sink"] = time.monotonic()
        self._busy.add("sink")
        try:
            accept = frozenset([tp for tp in by_tp if await self._gone("sink", *tp)])
            stored, holes = await self.db(apply_batch, by_tp, accept)
            self.stats["stored"] += stored
            events = [
                r
                for tp, recs in by_tp.items()
                if tp[0] == self.settings.kafka_events_topic and tp not in holes
                for _, r in recs
            ]
            lags = receipt_lags(events, time.time())  # receipt -> stored, as the drainer
            if lags is not None:
                self.sink_lag.add(lags["n"], lags["sum"])
            for tp in by_tp:
                if tp not in holes:
                    self.holes.closed(("sink", *tp))
            for (topic, partition), offset in holes.items():
                await self._read_again("sink", topic, partition, offset)
        finally:
            self._seen_at["sink"] = time.monotonic()
            self._busy.discard("sink")
