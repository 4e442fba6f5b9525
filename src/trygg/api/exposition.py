"""``/metrics``: the runner's and the alert service's counters, gauges and latency
histograms in Prometheus text format.

What is collected at each scrape: the runner's counts (messages, events, the
spool), the alert service's decisions, notifications and channels' health,
trygg's MQTT sessions, the API's refusals, and the latency histograms that the
code seeing each moment keeps (:mod:`trygg.api.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from trygg.api.metrics import Histogram

if TYPE_CHECKING:
    from trygg.alerts.service import Alerts


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
