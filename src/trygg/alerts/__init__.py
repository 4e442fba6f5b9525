"""Alerts: signals become alerts with a lifecycle, behind quality gates.

Pure cores (no I/O, no wall clock, no globals):

- :mod:`trygg.alerts.alert`: the :class:`Alert` (a fold of its append-only
  :class:`Record` s) and its vocabularies;
- :mod:`trygg.alerts.lifecycle`: the state machine (legal transitions, refusals
  with reasons, optimistic versions, VKP life-cycle codes);
- :mod:`trygg.alerts.gates`: dedup, auto-resolve, silences, inhibition and
  flapping in a :class:`Gatekeeper`;
- :mod:`trygg.alerts.routing`: the routing file, shifts and the
  :class:`Escalator`.

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
from trygg.alerts.gates import (
    Decision,
    DecisionKind,
    DeviceInfo,
    Directory,
    GateConfig,
    Gatekeeper,
    Silence,
    SilenceScope,
)
from trygg.alerts.lifecycle import VKP_EVENT_CODES, ConflictError, TransitionError
from trygg.alerts.routing import (
    Channel,
    EscalationStep,
    Escalator,
    Notification,
    RoutingConfig,
    RoutingError,
    load_routing,
    parse_routing,
)

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
