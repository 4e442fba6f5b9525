"""Routing and escalation: who is told about an alert, and when.

An import surface only, for code that still imports from here (the
distributed runner). The code lives in one module per concept:

- :mod:`trygg.alerts.routing_config`: the routing file, its model and its
  reading (every problem at its line);
- :mod:`trygg.alerts.contacts`: channels, recipients and their contacts;
- :mod:`trygg.alerts.shifts`: shift calendars;
- :mod:`trygg.alerts.escalation`: the escalation timetable
  (:class:`Escalator`) and the notifications it plans.
"""

from __future__ import annotations

from trygg.alerts.contacts import Channel, Contact, Recipient
from trygg.alerts.escalation import EscalationStep, Escalator, Notification
from trygg.alerts.routing_config import (
    TEAM_LEADER,
    TEAM_ON_DUTY,
    Policy,
    PolicyStep,
    RoutingConfig,
    RoutingError,
    TeamConfig,
    cross_problems,
    load_routing,
    parse_routing,
    parse_routing_text,
    routing_problems,
)
from trygg.alerts.shifts import Shift

__all__ = [
    "TEAM_LEADER",
    "TEAM_ON_DUTY",
    "Channel",
    "Contact",
    "EscalationStep",
    "Escalator",
    "Notification",
    "Policy",
    "PolicyStep",
    "Recipient",
    "RoutingConfig",
    "RoutingError",
    "Shift",
    "TeamConfig",
    "cross_problems",
    "load_routing",
    "parse_routing",
    "parse_routing_text",
    "routing_problems",
]
