"""The routing in force: the routing file given, or the built-in default.

Both runners start from it (the embedded alert service, the distributed
worker and ``trygg api``). The built-in routing sends to a webhook named
``default`` only when one is configured; a routing file that names a webhook
not configured is warned about at start, not first at an alarm.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

import yaml

from trygg import logs
from trygg.alerts.contacts import Channel
from trygg.alerts.routing_config import RoutingConfig, load_routing, parse_routing
from trygg.alerts.routing_config import parse_routing_text as _parse_routing_text

log = logs.get("trygg.alerts")


def default_routing(*, webhook: bool = True) -> RoutingConfig:
    """The built-in routing; ``webhook=False``: without the webhook named
    ``default`` (none is configured), so every team gets its MQTT topic and the
    console only."""
    text = resources.files("trygg.alerts").joinpath("default_routing.yaml").read_text("utf-8")
    source = "built-in routing (trygg/alerts/default_routing.yaml)"
    if webhook:
        return _parse_routing_text(text, source)
    data = yaml.safe_load(text)
    data.pop("recipients", None)
    for team in data["teams"].values():
        team["on_duty"] = {}
    return parse_routing(data, source)


def routing_from(path: Any, webhooks: Iterable[str] | None = None) -> RoutingConfig:
    """The routing file at ``path``, or the built-in default when None.

    ``webhooks``: the names of the configured webhooks, when known. Without
    one named ``default``, the built-in routing has no webhook (and says so,
    once); a routing file that names a webhook not configured is warned about
    here, at start, not first at an alarm."""
    if path:
        routing = load_routing(path)
        if webhooks is not None:
            missing = sorted(
                {c.address for c in _contacts(routing) if c.channel is Channel.WEBHOOK}
                - set(webhooks)
            )
            for name in missing:
                log.error(
                    "the routing file names a webhook that is not configured: its "
                    "notifications will fail (TRYGG_WEBHOOKS, TRYGG_WEBHOOK_URL)",
                    webhook=name,
                    routing=str(path),
                )
        return routing
    if webhooks is not None and "default" not in set(webhooks):
        log.warning(
            "no webhook configured (TRYGG_WEBHOOK_URL): the built-in routing sends alerts "
            "to each team's MQTT topic and the console only"
        )
        return default_routing(webhook=False)
    return default_routing()


def _contacts(routing: RoutingConfig) -> Iterable[Any]:
    for r in routing.recipients.values():
        yield from r.contacts
    for t in routing.teams.values():
        yield from t.contacts
