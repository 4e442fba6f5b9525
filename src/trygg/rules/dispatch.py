"""Which handlers an event reaches under a care plan (a rules tuple): event type
-> the bound ``on_event`` handlers of the enabled rules listening to it. Every
resident with the same care plan shares one table, built on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trygg.model import Event, EventType, Signal
from trygg.rules.kinds import EventRule, Res, Rule

Handler = Callable[[Any, Res, Event, float], "list[Signal] | None"]
Dispatch = dict[EventType, tuple[Handler, ...]]


class Dispatches:
    """The dispatch tables of the rules tuples in use, by the tuple's identity."""

    def __init__(self, index: Mapping[Any, tuple[int, ...]]) -> None:
        self._index = index  # the catalogue's: event type -> the rules listening to it
        # per distinct rules tuple (care plan): event type -> the on_event handlers
        self._tables: dict[int, tuple[tuple[Rule | None, ...], Dispatch, Dispatch]] = {}

    def of(self, rules: tuple[Rule | None, ...]) -> tuple[Dispatch, Dispatch]:
        """The handlers for an event in time, and for a late one: only the
        immediate rules (kind: event), which judge an event by itself and so
        are evaluated whatever its delay."""
        hit = self._tables.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1], hit[2]
        d: Dispatch = {}
        late: Dispatch = {}
        for t, idxs in self._index.items():
            d[t] = tuple(r.handler() for i in idxs if (r := rules[i]) is not None)
            late[t] = tuple(r.handler() for i in idxs if isinstance(r := rules[i], EventRule))
        self._tables[id(rules)] = (rules, d, late)
        return d, late

    def keep(self, live: set[int]) -> None:
        """Forget the tables of rules tuples no longer in use (``live``: the ids in use)."""
        self._tables = {k: v for k, v in self._tables.items() if k in live}
