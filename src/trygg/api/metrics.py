"""The latency histograms, and the alert service's set of them, that ``/metrics``
exports (in Prometheus text format: :mod:`trygg.api.exposition`).

The latency histograms (docs/api.md, "Latency histograms") are kept by the code
that sees each moment: the alert service (raise, delivery, staff actions) and
the drainer process, whose lags reach the runner over its pipe
(``trygg.runner.drainer``). They are :class:`Histogram` here, not
prometheus_client's own, because the drainer reports thousands of events per
stored run as a few (seconds, count) pairs, and an observation here takes a
count.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

SEVERITIES = ("red", "yellow", "green")

# Bucket upper bounds in seconds, one set per histogram (what each can take).
# The receipt -> raise decision: in-process work, milliseconds (a batch's decode and rules).
RECEIPT_TO_RAISED_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# The event's own time -> raise: the device's and the broker's delay too, and late
# events (a device that was offline sends hours later; up to 7 days are accepted).
EVENT_TO_RAISED_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0,
    10800.0, 43200.0, 86400.0,
)  # fmt: skip
# The notify step -> delivered, retries included (a receiver that is down: minutes).
RAISED_TO_NOTIFIED_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0,
    1800.0,
)  # fmt: skip
# Staff answering: the targets are 60 s and 180 s (REFERENCE.md §2), both bucket bounds.
NOTIFIED_TO_ACKNOWLEDGED_BUCKETS = (
    5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# Staff on their way: minutes (the arrival target is 30 min from the raise).
ACKNOWLEDGED_TO_ARRIVED_BUCKETS = (
    60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1500.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0,
    14400.0,
)  # fmt: skip
# The drainer's lag: trygg.runner.drain_lag.LAG_BUCKETS (the drainer process counts them).


class Histogram:
    """A histogram of seconds, by label values, observed on the runner's event loop.

    ``observe(seconds, *label_values, n=1)``: ``n`` observations of the same
    value at once; ``add``: counts per bucket that another process made with the
    same buckets. A negative value (a device clock ahead of trygg's) counts as
    0. Series named in ``init`` are exported at zero before their first
    observation, so that ``rate()`` and ``increase()`` see the first one.
    """

    def __init__(
        self,
        name: str,
        doc: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
        init: Iterable[Sequence[str]] = (),
    ) -> None:
        self.name = name
        self.doc = doc
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self.labels = tuple(labels)
        # label values -> (per-bucket counts, the last one +Inf; the sum)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        if not self.labels:
            self._get(())
        for values in init:
            self._get(tuple(values))

    def _get(self, values: tuple[str, ...]) -> tuple[list[int], list[float]]:
        s = self._series.get(values)
        if s is None:
            if len(values) != len(self.labels):
                raise ValueError(f"{self.name}: labels {self.labels}, got {values}")
            s = self._series[values] = ([0] * (len(self.buckets) + 1), [0.0])
        return s

    def observe(self, seconds: float, *values: str, n: int = 1) -> None:
        if n <= 0 or not math.isfinite(seconds):
            return
        seconds = max(0.0, seconds)
        counts, total = self._get(values)
        counts[bisect.bisect_left(self.buckets, seconds)] += n
        total[0] += seconds * n

    def add(self, counts: Sequence[int], seconds: float, *values: str) -> bool:
        """Counts per bucket (the last one +Inf, not cumulative) and their sum;
        False (and nothing added) if they are not for this histogram's buckets."""
        if len(counts) != len(self.buckets) + 1 or not math.isfinite(seconds):
            return False
        mine, total = self._get(values)
        for i, n in enumerate(counts):
            mine[i] += max(0, int(n))
        total[0] += max(0.0, seconds)
        return True

    def count(self, *values: str) -> int:
        """Observations so far (of one series, or of all when no values are given)."""
        if values:
            s = self._series.get(values)
            return sum(s[0]) if s is not None else 0
        return sum(sum(c) for c, _ in self._series.values())

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        go: Any = floatToGoString  # the client's own "le" spelling (untyped)
        bounds = [go(b) for b in (*self.buckets, math.inf)]
        for values, (counts, total) in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for bound, c in zip(bounds, counts, strict=True):
                cumulative += c
                buckets.append((bound, float(cumulative)))
            fam.add_metric(list(values), buckets, total[0])
        return fam


class AlertLatencies:
    """The alert service's latency histograms (observed by trygg.runner.alerting)."""

    def __init__(self, channels: Iterable[str] = ()) -> None:
        by_severity = [(s,) for s in SEVERITIES]
        self.receipt_to_raised = Histogram(
            "trygg_alert_receipt_to_raised_seconds",
            "from the causing event's receipt at trygg to the decision that raised its alert "
            "(new alerts raised by an event; held and suppressed ones too), by severity",
            RECEIPT_TO_RAISED_BUCKETS,
            ("severity",),
            by_severity,
        )
        self.event_to_raised = Histogram(
            "trygg_alert_event_to_raised_seconds",
            "from the time the alert's condition happened to the decision that raised it: "
            "trigger=event, the causing event's own time (the device's clock: its delay and "
            "late events included); trigger=timer, when an absence rule's timer fell due",
            EVENT_TO_RAISED_BUCKETS,
            ("severity", "trigger"),
            [(s, t) for s in SEVERITIES for t in ("event", "timer")],
        )
        self.raised_to_notified = Histogram(
            "trygg_alert_raised_to_notified_seconds",
            "from an alert's first notify step (its raise, or the release of a held or "
            "silenced alert) to each of its notifications delivered, retries included, "
            "by channel (failed deliveries are not observed)",
            RAISED_TO_NOTIFIED_BUCKETS,
            ("channel",),
            [(c,) for c in channels],
        )
        self.notified_to_acknowledged = Histogram(
            "trygg_alert_notified_to_acknowledged_seconds",
            "from an alert's first notified record to its acknowledgement by staff "
            "(acknowledge or take), by severity",
            NOTIFIED_TO_ACKNOWLEDGED_BUCKETS,
            ("severity",),
            by_severity,
        )
        self.acknowledged_to_arrived = Histogram(
            "trygg_alert_acknowledged_to_arrived_seconds",
            "from an alert's acknowledgement to staff arriving at the resident, by severity",
            ACKNOWLEDGED_TO_ARRIVED_BUCKETS,
            ("severity",),
            by_severity,
        )

    def observe_raise(
        self, a: Any, now: datetime, cause: tuple[str, datetime | None] | None
    ) -> None:
        """A new alert, decided at ``now``: raised by the event being evaluated
        (``cause``: its id and receipt; it is among the alert's events), or by a
        timer (the timer task's, or one that the event's time passed; its events
        are older ones). The embedded service and the distributed worker both
        call this, so the two runners count alike."""
        sev = a.severity.value
        trigger = "timer"
        if cause is not None and cause[0] in a.events:
            trigger = "event"
            if cause[1] is not None:
                self.receipt_to_raised.observe((now - cause[1]).total_seconds(), sev)
        if a.signal_at is not None:
            seconds = (now - a.signal_at).total_seconds()
            self.event_to_raised.observe(seconds, sev, trigger)

    def observe_staff(self, alert: Any, new: Iterable[Any]) -> None:
        """notified -> acknowledged and acknowledged -> arrived, from an alert's new
        records (a staff action's): an alert acknowledged before it was notified
        (held, suppressed) is not observed."""
        from trygg.alerts.alert import Step

        def first_at(step: Step) -> datetime | None:
            return next((r.at for r in alert.records if r.step is step), None)

        sev = alert.severity.value
        for r in new:
            if r.step is Step.ACKNOWLEDGED:
                since, h = first_at(Step.NOTIFIED), self.notified_to_acknowledged
            elif r.step is Step.ARRIVED:
                since, h = first_at(Step.ACKNOWLEDGED), self.acknowledged_to_arrived
            else:
                continue
            if since is not None:
                h.observe((r.at - since).total_seconds(), sev)

    def all(self) -> tuple[Histogram, ...]:
        return (
            self.receipt_to_raised,
            self.event_to_raised,
            self.raised_to_notified,
            self.notified_to_acknowledged,
            self.acknowledged_to_arrived,
        )


def drainer_lag(buckets: Sequence[float]) -> Histogram:
    """The drainer's lag (kept by trygg.runner.drainer.DrainerProcess, which gets
    counts per bucket from the drainer process)."""
    return Histogram(
        "trygg_drainer_lag_seconds",
        "from an event's receipt at trygg to its commit in the database by the drainer",
        buckets,
    )
