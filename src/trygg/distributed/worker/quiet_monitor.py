"""Faust's main sensor, without its bookkeeping per record.

Faust's ``Monitor`` counts and times every message and every stream event (a
dozen dictionary updates and clock reads per record, for each of the two agents
that read an event). It feeds Faust's web ``/stats`` page, which the worker does
not serve; trygg's own counters (``/metrics``, the "partitions owned" log line)
are kept by the agents. So the per-record hooks do nothing here, and what Faust
itself asks of the monitor (committed and end offsets, commit and send timings)
is kept. Set through Faust's public ``Monitor`` setting, not a patch.
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class QuietMonitor(Monitor):
    """``Monitor`` with the hooks Faust calls per record made no-ops."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None
