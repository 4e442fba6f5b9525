"""The rules agent's step: an event, a tick or a bridge's progress of the events topic.

Around ``RulesCore`` (the engine, one resident at a time): feeds the partition's
event or wall clock, sends the signals and resets and awaits the broker's ack, and
only then keeps the new state (``held_states``), unless a revocation overtook the
step (docs/distributed.md, "Delivery guarantees").
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from trygg.distributed import codecs
from trygg.distributed.worker.base import key_text
from trygg.distributed.worker.held_states import HeldRulesStates


class RulesAgent(HeldRulesStates):
    """The rules agent's step (``Worker.rules_agent`` calls it per record)."""

    async def rules_step(
        self, key: Any, value: bytes, partition: int, offset: int | None = None
    ) -> None:
        rid = key_text(key)
        rec = codecs.loads(value)
        op = rec.get("op")
        on_events = self.settings.worker_clock == "event"
        if op == "wm":  # a bridge's progress (codecs.watermark_record)
            if on_events:
                self.event_clocks.see(partition, rec)
            return
        if op not in ("ev", "tick"):
            return
        sources, release, lag = None, None, 0.0
        if on_events:
            # events wait in the state until the slowest bridge has reached them (RulesCore)
            if op == "ev":
                self.event_clocks.see(partition, rec)
            sources = self.event_clocks.state(partition)
            clock = self.event_clocks.clock(partition)
            release = clock if clock is not None else float("-inf")
            lag = self.settings.worker_event_clock_lag_s
        revokes = self._revokes
        res = self.rules.step(
            rid,
            self.rules_state(rid),
            rec,
            partition,
            sources,
            release=release,
            lag=lag,
            offset=offset,
        )
        if res.duplicate:
            self.stats["duplicates"] += 1
            return
        if res.applied:
            self.stats["applied"] += len(res.applied)
            if self._applied_fd is not None:
                at = "" if offset is None else offset
                lines = "".join(f"{partition}\t{at}\t{d}\t{i}\n" for d, i in res.applied)
                os.write(self._applied_fd, lines.encode())
        if op == "ev":
            self.stats["events"] += 1
            if not on_events and res.event_at is not None and not res.late:
                # The receipt delay: from the event's time to the engine, at least to the
                # bridge's receipt (a backlog at mosquitto or at Kafka, e.g. a take-over).
                got = self.clock()
                rx = rec.get("rx")
                if rx:
                    got = max(got, datetime.fromisoformat(rx))
                self.wall_clocks.note(partition, got - res.event_at, time.monotonic())
        else:
            self.stats["ticks"] += 1
        # An event's signals say which event they were evaluated for and its receipt
        # (the alerts agent's latency histograms: trigger=event, receipt -> raised).
        cause = {"by": rec.get("i"), "brx": rec.get("rx")} if op == "ev" else {}
        out = [
            (self.signals_topic, rid, codecs.dumps({**codecs.signal_record(sig), **cause}), None)
            for sig in res.signals
        ]
        out += [
            (self.signals_topic, rid, codecs.dumps(codecs.reset_record(ev)), None)
            for ev in res.resets
        ]
        # The signals must be in Kafka before the state that says they fired.
        await self.sender.send_all(out)
        self.stats["signals"] += len(res.signals)
        assert res.state is not None
        if revokes != self._revokes:
            # the partitions were taken away while this step sent its signals: the new
            # owner reads from the committed offset and applies the record again (its
            # state, never written, is lost with this application)
            return
        self._unwritten[rid] = (partition, res.state.decode())
        self.rule_timers.update(partition, rid, res.deadline, res.wm)
