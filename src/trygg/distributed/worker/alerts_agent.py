"""The alerts agent's step: a signal, reset, tick or staff action of the signals topic.

Around ``AlertsCore`` (gates, lifecycle, escalation, one resident at a time): sends
the alert records, the notifications and a ``cls`` for each alert closed, awaits the
broker's ack, then writes the alerts state. Also the worker's latency histograms
of the raise, and its /metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trygg.api.exposition import render_histograms
from trygg.distributed import codecs
from trygg.distributed.worker.base import WorkerBase, key_text


class AlertsAgent(WorkerBase):
    """The alerts agent's step (``Worker.alerts_agent`` calls it per record)."""

    def _alerts_now(self, rec: dict[str, Any]) -> datetime:
        if self.settings.worker_clock == "event" and rec.get("at"):
            return datetime.fromisoformat(rec["at"])
        return self.clock()

    async def alerts_step(self, key: Any, value: bytes, partition: int) -> None:
        rid = key_text(key)
        rec = codecs.loads(value)
        res = self.alerts.step(
            rid, self.alerts_table.get(rid), rec, partition, self._alerts_now(rec)
        )
        if res.duplicate:
            return
        self._observe_raised(rec, res.decisions)
        out = [(self.records_topic, rid, codecs.dumps(r), None) for r in res.records]
        out += [
            (self.notifications_topic, n["row"]["alert_id"], codecs.dumps(n), None)
            for n in res.notifications
        ]
        # a closed alert's notifications still being retried are dropped (NotifyOutbox)
        out += [
            (self.notifications_topic, aid, codecs.dumps({"op": "cls", "id": aid}), None)
            for aid in res.closed
        ]
        await self.sender.send_all(out)
        self.stats["records"] += len(res.records)
        assert res.state is not None
        self.alerts_table[rid] = res.state.decode()
        self.alert_timers.update(partition, rid, res.deadline, None)

    def _observe_raised(self, rec: dict[str, Any], decisions: Sequence[Any]) -> None:
        """New alerts into the latency histograms, as the embedded service counts them."""
        cause = None
        if rec.get("op") == "sig" and rec.get("by"):
            rx = rec.get("brx")
            cause = (str(rec["by"]), datetime.fromisoformat(rx) if isinstance(rx, str) else None)
        now = self.clock()
        for d in decisions:
            if d.alert is not None and d.previous_version is None:
                self.latency.observe_raise(d.alert, now, cause)

    def metrics(self) -> str:
        """The worker's /metrics: the latency histograms of the steps it does (the
        raise, the notifications, the sink's lag); staff's are the API's."""
        lat = self.latency
        return render_histograms(
            [lat.receipt_to_raised, lat.event_to_raised, lat.raised_to_notified, self.sink_lag]
        )
