"""The compiled rule kinds and their per-resident state.

One module per family of kinds, on a shared base:

- :mod:`~trygg.rules.kinds.base`: the resident as the engine sees it
  (:class:`Res`, its device clocks), the engine as a rule sees it
  (:class:`Env`) and :class:`Rule`, the base of the kinds;
- :mod:`~trygg.rules.kinds.matcher`: which events a rule step listens to;
- :mod:`~trygg.rules.kinds.event`: ``event`` and ``threshold`` (one event
  decides, held per device for a guard time);
- :mod:`~trygg.rules.kinds.absence`: ``absence``, per resident or per device;
- :mod:`~trygg.rules.kinds.pattern`: ``sequence`` and ``count``;
- :mod:`~trygg.rules.kinds.clock`: ``clock``, a device clock running ahead.

Every name is importable from here, as callers do.
"""

from trygg.rules.kinds.absence import (
    AbsenceBase,
    AbsenceRule,
    AbsState,
    DevAbsState,
    DeviceAbsenceRule,
)
from trygg.rules.kinds.base import (
    CLEAR,
    FIRE,
    NEVER,
    Env,
    Res,
    Rule,
    device_clock,
    device_clocks,
    load_device_clocks,
    set_device_clock,
)
from trygg.rules.kinds.clock import ClockRule, ClockState
from trygg.rules.kinds.event import EventRule, KeyedState, PendState, ThresholdRule, fire_held
from trygg.rules.kinds.matcher import ALL_TYPES, Matcher
from trygg.rules.kinds.pattern import CountRule, CountState, SeqState, SequenceRule

__all__ = [
    "ALL_TYPES",
    "CLEAR",
    "FIRE",
    "NEVER",
    "AbsState",
    "AbsenceBase",
    "AbsenceRule",
    "ClockRule",
    "ClockState",
    "CountRule",
    "CountState",
    "DevAbsState",
    "DeviceAbsenceRule",
    "Env",
    "EventRule",
    "KeyedState",
    "Matcher",
    "PendState",
    "Res",
    "Rule",
    "SeqState",
    "SequenceRule",
    "ThresholdRule",
    "device_clock",
    "device_clocks",
    "fire_held",
    "load_device_clocks",
    "set_device_clock",
]
