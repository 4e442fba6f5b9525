"""The timer scan: every ``worker_timer_interval_s``, a tick for each key whose
deadline has come, sent to its own partition.

Rule timers run to each partition's clock (``clocks``), alert timers (escalations,
reminders) and notification retries to the wall clock. The agents apply a tick
like any other record; the index is rebuilt from the table whenever the owned
partitions change (docs/distributed.md, "Timers").
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from trygg import logs
from trygg.distributed import codecs
from trygg.distributed.worker.base import Out, tick
from trygg.distributed.worker.held_states import HeldRulesStates
from trygg.distributed.worker.timers import TimerIndex

log = logs.get("trygg.worker")


class TimerScan(HeldRulesStates):
    """The scan (``Worker`` runs it as the Faust timer ``trygg-timers``)."""

    async def scan_timers(self) -> None:
        """Tick every owned resident whose next deadline has come (rules, then alerts)."""
        if not self._ready():
            return
        s = self.settings
        wall = self.clock()
        now = wall.timestamp()
        mono = time.monotonic()
        lag = s.worker_event_clock_lag_s
        # rules timers
        parts = self.take_partitions()
        out: list[Out] = []
        for p in parts:
            if s.worker_clock == "event":
                # the slowest bridge's progress on the partition (clocks.Sources)
                wm = self.event_clocks.clock(p)
                if wm is None:
                    continue
                clock = wm - lag
            else:
                # the wall clock less the partition's receipt delay (runner.timer_clock)
                clock = self.wall_clocks.clock(p, wall, mono).timestamp()
            at = datetime.fromtimestamp(clock, UTC)
            for rid in self.rule_timers.pop_due(p, clock):
                out.append(tick(self.events_topic, rid, at, p))
        # alert timers (the wall clock: they are about people answering)
        at = datetime.fromtimestamp(now, UTC)
        if s.worker_clock == "wall":
            t = s.kafka_signals_topic
            due = self._due("alerts", t, self.alert_timers, self.alerts_table, now)
            out += [tick(self.signals_topic, rid, at, p) for p, rid in due]
        # notifications to retry (the wall clock: a receiver coming back is real time)
        rty = codecs.dumps({"op": "rty", "at": at.isoformat()})
        t = s.kafka_notifications_topic
        due = self._due("notify", t, self.notify_timers, self.notify_table, now)
        out += [(self.notifications_topic, aid, rty, p) for p, aid in due]
        if out:
            await self.sender.send_all(out)

    def take_partitions(self) -> frozenset[int]:
        """The owned partitions of the events topic; when they changed, first rebuild
        the rule timers and the partitions' clocks from the rules table.

        The worker calls this when a rebalance's table recovery is complete, before
        Faust resumes the streams (``on_rebalance_complete``), and the scan calls it
        again in case that was missed. Leaving it to the scan alone let the rules
        agent step a partition taken over before its clock had been rebuilt: the scan
        runs every half second and can come seconds late on a busy worker, and in that
        while (300 records measured) the new partition's event clock knew only the
        bridges heard of since the take-over, so the other bridge's older events,
        still on their way, did not hold it, and timers fired before the events that
        cancel them (a false device-offline, 2026-12-07)."""
        s = self.settings
        parts = self._owned(s.kafka_events_topic)
        if parts == self._parts.get("rules"):
            return parts
        items = self.rules_items()
        self.rule_timers.rebuild(set(parts), items)
        if s.worker_clock == "event":
            self.event_clocks.rebuild(set(parts), items)
        else:
            self.wall_clocks.assigned(set(parts), self.rule_timers.wm, time.monotonic())
        self._parts["rules"] = parts
        log.info(
            "partitions owned",
            partitions=sorted(parts),
            residents_with_timers=len(self.rule_timers.due),
            applied=self.stats["applied"],
            duplicates=self.stats["duplicates"],
        )
        return parts

    def _on_rebalance_complete(self, sender: Any, /, *args: Any, signal: Any, **kw: Any) -> None:
        """Faust's tables are recovered and the streams not yet resumed: take the new
        partitions in before the rules agent steps any of their records."""
        self.take_partitions()

    def _due(
        self, name: str, topic: str, index: TimerIndex, table: Any, now: float
    ) -> list[tuple[int, str]]:
        """(partition, key) of each key of ``index`` due by ``now`` (the wall clock) on
        the owned partitions of ``topic``; the index is rebuilt from ``table`` first
        when they changed."""
        parts = self._owned(topic)
        if parts != self._parts.get(name):
            index.rebuild(set(parts), list(table.items()))
            self._parts[name] = parts
        return [(p, key) for p in parts for key in index.pop_due(p, now)]
