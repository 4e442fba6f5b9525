"""``/metrics``: the runner's and the alert service's counters, gauges and latency
histograms in Prometheus text format.

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
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from trygg.alerts.service import Alerts

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
# The drainer's lag: trygg.runner.drainer.LAG_BUCKETS (the drainer process counts them).


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


class _Trygg(Collector):
    def __init__(self, runner: Any, service: Alerts, http: Any = None) -> None:
        self.runner = runner
        self.service = service
        self.http = http

    def collect(self) -> Iterator[Any]:
        st = getattr(self.runner, "stats", None)
        pending = getattr(self.runner, "pending_bytes", None)
        if pending is not None:
            pending()  # measured now: the drainer reports nothing while the database is away
        if st is not None:
            for name, attr, doc in (
                ("trygg_messages_received", "received", "MQTT messages received"),
                ("trygg_events_received", "events", "valid events decoded"),
                ("trygg_events_duplicate", "duplicates", "re-delivered events dropped"),
                ("trygg_events_stored", "stored", "events written to the database"),
                ("trygg_dead_letters", "dead_letters", "dead letters written"),
            ):
                yield CounterMetricFamily(name, doc, value=float(getattr(st, attr, 0) or 0))
            yield GaugeMetricFamily(
                "trygg_spool_bytes",
                "spooled bytes not yet in the database",
                value=float(getattr(st, "spool_bytes", 0) or 0),
            )
        yield from _mqtt(getattr(self.runner, "_source", None), self.service)
        svc = self.service
        c = CounterMetricFamily(
            "trygg_alert_decisions",
            "alert decisions and staff actions by rule, severity and kind",
            labels=["rule", "severity", "kind"],
        )
        for (rule, sev, kind), n in sorted(svc.alerts_by.items()):
            c.add_metric([rule, sev, kind], float(n))
        yield c
        d = CounterMetricFamily(
            "trygg_notifications",
            "notification deliveries by channel and outcome",
            labels=["channel", "outcome"],
        )
        for (ch, outcome), n in sorted(svc.deliveries_by.items()):
            d.add_metric([ch, outcome], float(n))
        yield d
        f = CounterMetricFamily(
            "trygg_notification_failures",
            "notifications that failed after all retries, by channel",
            labels=["channel"],
        )
        for (ch, outcome), n in sorted(svc.deliveries_by.items()):
            if outcome == "failed":
                f.add_metric([ch], float(n))
        yield f
        g = GaugeMetricFamily("trygg_alerts_open", "open alerts by severity", labels=["severity"])
        counts: dict[str, int] = {"red": 0, "yellow": 0, "green": 0}
        for a in svc.open_alerts():
            counts[a.severity.value] += 1
        for sev, n in counts.items():
            g.add_metric([sev], float(n))
        yield g
        yield GaugeMetricFamily(
            "trygg_console_subscribers", "live console connections", value=svc.feed.subscribers
        )
        yield from _channels(svc)
        yield from _http(self.http)
        yield from _latency(self.runner, svc)


def _mqtt(source: Any, service: Any) -> Iterator[Any]:
    """trygg's own MQTT sessions (the receiver's, the alert channel's): takeovers,
    lost sessions, and retained messages on device event topics (docs/ingest.md)."""
    clients: list[tuple[str, Any]] = []
    if hasattr(source, "takeovers"):
        clients.append(("ingest", source))
    channels = getattr(service, "channels", {})
    clients += [("notify", ch.session) for ch in channels.values() if hasattr(ch, "session")]
    if not clients:
        return
    t = CounterMetricFamily(
        "trygg_mqtt_session_takeovers",
        "another client took over trygg's MQTT session (DISCONNECT reason 142)",
        labels=["client"],
    )
    last = GaugeMetricFamily(
        "trygg_mqtt_session_takeover_last_timestamp_seconds",
        "when trygg's MQTT session was last taken over (0: never)",
        labels=["client"],
    )
    for name, c in clients:
        t.add_metric([name], float(c.takeovers))
        last.add_metric([name], float(c.last_takeover or 0))
    yield t
    yield last
    if hasattr(source, "sessions_lost"):
        yield CounterMetricFamily(
            "trygg_mqtt_sessions_lost",
            "reconnects that found no session at the broker (messages may be lost)",
            value=float(source.sessions_lost),
        )
        yield CounterMetricFamily(
            "trygg_retained_events",
            "retained messages received on device events/scaip topics",
            value=float(source.retained_events),
        )


def _channels(service: Any) -> Iterator[Any]:
    """Each notification channel's health (every attempt counts, retries too)."""
    health = getattr(service, "health", None)
    if health is None:
        return
    up = GaugeMetricFamily(
        "trygg_channel_up", "1 if the channel's last attempt succeeded", labels=["channel"]
    )
    fails = GaugeMetricFamily(
        "trygg_channel_consecutive_failures",
        "failed attempts since the channel's last success",
        labels=["channel"],
    )
    last = GaugeMetricFamily(
        "trygg_channel_last_success_timestamp_seconds",
        "when the channel last delivered (0: never)",
        labels=["channel"],
    )
    since = GaugeMetricFamily(
        "trygg_channel_failing_since_timestamp_seconds",
        "when the channel's current run of failures began (0: not failing)",
        labels=["channel"],
    )
    attempts = CounterMetricFamily(
        "trygg_channel_attempts",
        "delivery attempts by channel and outcome (retries included)",
        labels=["channel", "outcome"],
    )
    for name in health.names():
        s = health.get(name)
        up.add_metric([name], 0.0 if s.consecutive_failures else 1.0)
        fails.add_metric([name], float(s.consecutive_failures))
        last.add_metric([name], float(s.last_success or 0))
        since.add_metric([name], float(s.failing_since or 0))
        attempts.add_metric([name, "ok"], float(s.successes))
        attempts.add_metric([name, "failed"], float(s.failures))
    yield from (up, fails, last, since, attempts)
    yield GaugeMetricFamily(
        "trygg_notifications_retrying",
        "notifications not yet delivered that are being retried",
        value=float(getattr(service, "retrying", 0)),
    )


def _http(state: Any) -> Iterator[Any]:
    """The API's refusals before a body is read, and live streams cut off
    because their token stopped signing in (docs/api.md, "Limits")."""
    if state is None:
        return
    refused = getattr(state, "refused", None)
    if refused is not None:
        c = CounterMetricFamily(
            "trygg_http_refused",
            "API requests refused before their body was read, by reason "
            "(unauthenticated, auth_unavailable, body_too_large)",
            labels=["reason"],
        )
        for reason in ("unauthenticated", "auth_unavailable", "body_too_large"):
            c.add_metric([reason], float(refused.get(reason, 0)))
        yield c
    auth = getattr(state, "auth", None)
    if auth is not None:
        yield CounterMetricFamily(
            "trygg_api_streams_revoked",
            "live streams closed because their token was disabled or replaced",
            value=float(auth.revoked_streams),
        )


def _latency(runner: Any, service: Any) -> Iterator[Any]:
    """The latency histograms, and the age of the spool's backlog."""
    latency = getattr(service, "latency", None)
    if latency is not None:
        for h in latency.all():
            yield h.family()
    drainer = getattr(runner, "_drainer", None)
    lag = getattr(drainer, "lag", None)
    if lag is not None:
        yield lag.family()
    backlog = getattr(drainer, "backlog_age", None)
    if backlog is not None:
        yield GaugeMetricFamily(
            "trygg_spool_backlog_age_seconds",
            "age of the oldest spooled record not yet in the database (an event's from its "
            "receipt), 0 when all is stored; grows while the database is away",
            value=float(backlog(datetime.now(UTC))),
        )


class _Histograms(Collector):
    def __init__(self, histograms: Iterable[Histogram]) -> None:
        self.histograms = list(histograms)

    def collect(self) -> Iterator[Any]:
        for h in self.histograms:
            yield h.family()


def render_histograms(histograms: Iterable[Histogram]) -> str:
    """Histograms alone, in the text format (the distributed worker's /metrics)."""
    reg = CollectorRegistry()
    reg.register(_Histograms(histograms))
    return generate_latest(reg).decode()


def render(runner: Any, service: Alerts, http: Any = None) -> str:
    """``http``: the API app's state (its refusal counters), if it is serving."""
    reg = CollectorRegistry()
    reg.register(_Trygg(runner, service, http))
    return generate_latest(reg).decode()
