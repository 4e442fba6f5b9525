"""Alerts: signals become alerts with a lifecycle, behind quality gates.

Pure cores (no I/O, no wall clock, no globals):

- :mod:`trygg.alerts.alert`: the :class:`Alert` (a fold of its append-only
  :class:`Record` s) and its vocabularies;
- :mod:`trygg.alerts.lifecycle`: the state machine (one function per action,
  optimistic versions, VKP life-cycle codes), over
  :mod:`trygg.alerts.transitions` (the table of legal transitions and the
  words of their refusals);
- :mod:`trygg.alerts.gates`: dedup, auto-resolve, silences, inhibition and
  flapping in a :class:`Gatekeeper`, configured by
  :mod:`trygg.alerts.gate_config`, with :mod:`trygg.alerts.silences`,
  :mod:`trygg.alerts.directory` and :mod:`trygg.alerts.decisions`;
- :mod:`trygg.alerts.routing_config`: the routing file, with
  :mod:`trygg.alerts.contacts` and :mod:`trygg.alerts.shifts`;
- :mod:`trygg.alerts.escalation`: the :class:`Escalator`.

See docs/alerts.md.
"""

from trygg.alerts.alert import (
    OPEN_STATES,
    SYSTEM,
    Alert,
    CancelReason,
    Outcome,
    Record,
    State,
    Step,
)
from trygg.alerts.contacts import Channel
from trygg.alerts.decisions import Decision, DecisionKind
from trygg.alerts.directory import DeviceInfo, Directory
from trygg.alerts.escalation import EscalationStep, Escalator, Notification
from trygg.alerts.gate_config import GateConfig
from trygg.alerts.gates import Gatekeeper
from trygg.alerts.lifecycle import VKP_EVENT_CODES
from trygg.alerts.refusals import ConflictError, TransitionError
from trygg.alerts.routing_config import RoutingConfig, RoutingError, load_routing, parse_routing
from trygg.alerts.silences import Silence, SilenceScope

__all__ = [
    "OPEN_STATES",
    "SYSTEM",
    "VKP_EVENT_CODES",
    "Alert",
    "CancelReason",
    "Channel",
    "ConflictError",
    "Decision",
    "DecisionKind",
    "DeviceInfo",
    "Directory",
    "EscalationStep",
    "Escalator",
    "GateConfig",
    "Gatekeeper",
    "Notification",
    "Outcome",
    "Record",
    "RoutingConfig",
    "RoutingError",
    "Silence",
    "SilenceScope",
    "State",
    "Step",
    "TransitionError",
    "load_routing",
    "parse_routing",
]
