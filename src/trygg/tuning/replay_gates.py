"""The quality gates of the replay contract (trygg.tuning.replay's docstring):
live's ``Gatekeeper`` (``trygg.alerts.gates``, pure) configured as replay
drives it, and the ``device-offline`` fold per resident. ``ReplayGates.page``
decides, signal by signal, what staff would have been paged for."""

from __future__ import annotations

import itertools

from trygg.alerts.decisions import DecisionKind
from trygg.alerts.directory import Directory
from trygg.alerts.gate_config import FlappingConfig, GateConfig
from trygg.alerts.gates import Gatekeeper
from trygg.model import Signal, SignalAction
from trygg.registry import Registry

_FIRE = SignalAction.FIRE


def paging_config(live: GateConfig | None = None) -> GateConfig:
    """Live's gate configuration (default: the built-in one) as replay drives it:
    every fire a new alert (no staff to close one, so no dedup of open alerts),
    no flapping fold and no red hold-back (which only delays a page)."""
    cfg = live or GateConfig()
    return cfg.model_copy(
        update={
            "dedup": cfg.dedup.model_copy(update={"enabled": False}),
            "flapping": FlappingConfig(enabled=False),
            "inhibition": cfg.inhibition.model_copy(update={"red_holds_back": False}),
        }
    )


class ReplayGates:
    """The gates of the replay contract over one engine's signals, taken in the
    order the engine emits them (each resident's in time order, as live).

    ``page(signal)`` says whether the signal pages staff. The offline
    inhibition is live's ``Gatekeeper`` (fed only what it needs: the offline
    rule's signals and those of the rules it inhibits); the ``device-offline``
    fold per resident is kept here. Pure: no I/O, no clock but the signals'."""

    def __init__(self, registry: Registry, config: GateConfig | None = None) -> None:
        cfg = paging_config(config)
        ids = itertools.count(1)
        self.gatekeeper = Gatekeeper(
            cfg,
            new_id=lambda: f"replay-{next(ids)}",
            directory=Directory.from_registry(registry),
        )
        self.offline_rule = cfg.inhibition.offline_rule
        self._gated = frozenset({self.offline_rule, *cfg.inhibition.offline_inhibits})
        self._offline: dict[str, set[str | None]] = {}  # resident -> devices offline
        self.inhibited = 0
        self.folded = 0

    def page(self, s: Signal) -> bool:
        """Whether ``s`` raises an alert staff are paged for (and note what it changes)."""
        fire = s.action is _FIRE
        if s.rule not in self._gated:
            return fire
        decision = self.gatekeeper.on_signal(s, s.at)
        if s.rule == self.offline_rule:
            devices = self._offline.get(s.resident)
            if not fire:
                if devices is not None:
                    devices.discard(s.device)
                    if not devices:
                        del self._offline[s.resident]
                return False
            if devices:  # already offline: one alert per resident
                devices.add(s.device)
                self.folded += 1
                return False
            self._offline[s.resident] = {s.device}
            return decision.kind is not DecisionKind.SUPPRESSED
        if not fire:
            return False
        if decision.kind is DecisionKind.SUPPRESSED:
            self.inhibited += 1
            return False
        return True
