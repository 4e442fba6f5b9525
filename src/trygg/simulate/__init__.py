"""Simulated homes: realistic sensor traffic, incidents and their ground truth.

Library API (the CLI in ``trygg.simulate.cli`` is a thin layer over it)::

    registry, homes = build_homes(50, seed=7)
    truth: list[Truth] = []
    for ev in generate(homes, start, end, seed=7, rates=make_rates({"fall": 0.1}), truth=truth):
        ...
    publish(generate(...), "mqtt://localhost:1883", site="demo", speed=60)
"""

from trygg.simulate.events import SimEvent
from trygg.simulate.generate import generate
from trygg.simulate.homes import DEFAULT_TEAMS, Home, SimDevice, build_homes, registry_yaml
from trygg.simulate.incidents import DEFAULT_RATES, INCIDENT_RULES, Truth, make_rates
from trygg.simulate.mqtturl import MqttUrl, parse_mqtt_url
from trygg.simulate.output import WriteStats, write_jsonl, write_truth
from trygg.simulate.publisher import PublishStats, event_topic, publish

__all__ = [
    "DEFAULT_RATES",
    "DEFAULT_TEAMS",
    "INCIDENT_RULES",
    "Home",
    "MqttUrl",
    "PublishStats",
    "SimDevice",
    "SimEvent",
    "Truth",
    "WriteStats",
    "build_homes",
    "event_topic",
    "generate",
    "make_rates",
    "parse_mqtt_url",
    "publish",
    "registry_yaml",
    "write_jsonl",
    "write_truth",
]
