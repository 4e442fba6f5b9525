"""``/metrics``: the runner's and the alert service's counters in Prometheus text format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class _Trygg(Collector):
    def __init__(self, runner: Any, service: Any) -> None:
        self.runner = runner
        self.service = service

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


def render(runner: Any, service: Any) -> str:
    reg = CollectorRegistry()
    reg.register(_Trygg(runner, service))
    return generate_latest(reg).decode()
