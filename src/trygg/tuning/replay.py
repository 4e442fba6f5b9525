"""``trygg rules replay``: who would have been paged, from a JSONL file of events
(DESIGN.md, contract: replay).

The clock is event time; after the last event it runs on to ``until``
(default: the last event's time) so that timers due by then fire; the timers
still pending at the end are listed (``pending_timers``).

By default the output is the alerts staff would have been paged for: the
engine's fire signals behind the quality gates that need no staff, as live:

- a repeated ``(device, id)`` is dropped before the engine, by live's own
  bounded set of recent keys (``trygg.ingest.dedup.RecentKeys``, same size);
- a new alert of an inactivity-type rule is not paged while a device it
  depends on is offline: live's ``Gatekeeper`` (``trygg.alerts.gates``, pure)
  takes the ``device-offline`` signals and those rules' signals, each at its
  own time, and its offline inhibition decides (``ReplayGates``);
- one ``device-offline`` alert per resident while any of the resident's
  devices is offline (DESIGN.md's gate: one open alert per resident and rule).

Staff actions are not modelled, so nothing is ever acknowledged or resolved:
an event rule that fires again is a new alert, and so is any other fire; a
rule's clear ends its alert. The gates that need staff or only delay a page
(silences, the red alert's hold-back, flapping) do not apply. ``raw`` skips
all gates (the dedup too) and gives every signal, fire and clear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO

from pydantic import ValidationError

from trygg.alerts.gate_config import GateConfig
from trygg.ingest.dedup import RecentKeys
from trygg.model import Event, Signal, SignalAction
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import Engine
from trygg.tuning.replay_format import (
    pending_line,
    raw_signal_json,
    reason_of,
    signal_json,
    validate_line,
)
from trygg.tuning.replay_gates import ReplayGates

PENDING_HORIZON = timedelta(days=400)
"""How far past the end ``pending_timers`` looks for the pending timers' fires
(longer than any window of a week or a year's care-plan durations need)."""

_FIRE = SignalAction.FIRE

Received = tuple[Event, datetime | None]
"""An event with the time trygg received it (None: not known)."""


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    bad: int = 0
    unknown_device: int = 0
    repeated: int = 0  # a (device, id) seen before: dropped, as live
    late: int = 0
    alerts: int = 0  # lines written: paged alerts (or signals with raw)
    inhibited: int = 0  # fires not paged: a device they depend on is offline
    folded: int = 0  # device-offline fires while another device of the resident is offline
    pending: int = 0  # timers still pending at the end
    until: datetime | None = None  # where the clock stopped


# ------------------------------------------------------------------ the loop --


def keeper(gates: ReplayGates | None, clears: bool) -> Callable[[Signal], bool]:
    """What a run keeps of the engine's signals: what the gates page, else the
    fires (and with ``clears``, every signal)."""
    if gates is not None:
        return gates.page
    if clears:
        return lambda s: True
    return lambda s: s.action is _FIRE


def _run_on(
    eng: Engine, until: datetime | None, keep: Callable[[Signal], bool], kept: list[Signal]
) -> datetime | None:
    """Run the engine's clock on to ``until`` (default: its latest event's time),
    keep what ``keep`` keeps of the timers' signals, and put ``kept`` in time
    order (equal times keep the order they were decided in). Returns the end."""
    end = until if until is not None else eng.watermark()
    if end is not None:
        for s in eng.advance(end):
            if keep(s):
                kept.append(s)
    kept.sort(key=lambda s: s.at.timestamp())
    return end


def drive(
    events: Iterable[Event | Received],
    engines: Sequence[Engine],
    *,
    until: datetime | None = None,
    on_late: Callable[[Event], None] | None = None,
    gates: Sequence[ReplayGates | None] | None = None,
) -> list[list[Signal]]:
    """Run one or more engines over the same events on event time.

    Each item of ``events`` is an event, or an ``(event, received)`` pair:
    then the engines judge the device's clock by when trygg received the
    event, as live (``Engine.process(event, received)``). Every event goes to
    every engine in turn; afterwards each engine's clock
    runs on to ``until`` (default: its latest event's time) so that the
    timers due by then fire. Returns, per engine, its fire signals in time
    order (equal times keep the order they were decided in); with ``gates``
    (one per engine, or None for that engine) only the fires its gates page
    (``ReplayGates``, what ``trygg rules replay`` prints). ``on_late(event)``
    is called for an event the first engine counted as late (see the engine's
    late-event policy).

    This is the loop of ``trygg rules backtest`` (events streamed from the
    database, two engines: the current and the candidate catalogue);
    ``replay`` runs the same steps for one engine with the parsing inlined."""
    out: list[list[Signal]] = [[] for _ in engines]
    gs: Sequence[ReplayGates | None] = gates if gates is not None else [None] * len(engines)
    keeps = [keeper(g, False) for g in gs]
    first = engines[0]
    runs = [(e.process, k, f) for e, k, f in zip(engines, keeps, out, strict=True)]
    for item in events:
        if isinstance(item, tuple):
            ev, rx = item
        else:
            ev, rx = item, None
        late = first.late_events
        for process, keep, kept in runs:
            sigs = process(ev, rx)
            if sigs:
                for s in sigs:
                    if keep(s):
                        kept.append(s)
        if on_late is not None and first.late_events != late:
            on_late(ev)
    for eng, keep, kept in zip(engines, keeps, out, strict=True):
        _run_on(eng, until, keep, kept)
    return out


def recent_keys(capacity: int | None = None) -> RecentKeys:
    """Live's bounded set of recent keys, of ``capacity`` (default: live's size)."""
    return RecentKeys() if capacity is None else RecentKeys(capacity)


def earliest_deadline(engine: Engine) -> datetime | None:
    """The earliest instant at which any resident's timers may fire (None: no timer)."""
    dues = [d for r in engine.residents() if (d := engine.deadline_of(r)) is not None]
    return min(dues) if dues else None


def pending_timers(
    engine: Engine,
    registry: Registry,
    horizon: timedelta = PENDING_HORIZON,
    *,
    scratch: Engine | None = None,
) -> list[Signal]:
    """What the engine's pending timers would fire if no event came any more:
    the first fire of each rule, resident and device after the engine's clock,
    in time order (looked up in a copy of each resident's state through
    ``snapshot``/``restore``, in ``scratch``, an empty engine of the same
    catalogue and registry (default: a new one); ``engine`` is left as it is)."""
    start = earliest_deadline(engine)
    if start is None:
        return []
    if scratch is None:
        scratch = Engine(engine.catalogue, registry)
    for rid in engine.residents():
        if engine.deadline_of(rid) is not None:
            scratch.restore(rid, engine.snapshot(rid))
    seen: set[tuple[str, str, str | None]] = set()
    out: list[Signal] = []
    for s in scratch.advance(start + horizon):
        key = (s.rule, s.resident, s.device)
        if s.action is _FIRE and key not in seen:
            seen.add(key)
            out.append(s)
    out.sort(key=lambda s: s.at.timestamp())
    return out


class Writer(Protocol):
    """Where replay's loop writes its warnings (a text stream, or a shard's list)."""

    def write(self, text: str, /) -> object: ...


Devices = Mapping[str, tuple[str, str, Any, Any]]
"""Device id -> (id, resident, kind, room): what replay adds to a line's event."""


def device_table(registry: Registry) -> dict[str, tuple[str, str, Any, Any]]:
    return {d.id: (d.id, d.resident, d.kind, d.room) for d in registry.devices}


def replay_lines(
    numbered: Iterable[tuple[int, str | bytes]],
    eng: Engine,
    devices: Devices,
    seen: Callable[[tuple[str, str]], bool] | None,
    keep: Callable[[Signal], bool],
    kept: list[Signal],
    stats: ReplayStats,
    err: Writer | None,
) -> int:
    """Replay's loop over numbered lines: validate, enrich, drop repeats
    (``seen``), evaluate; what ``keep`` keeps of the signals goes to ``kept``
    in the order decided, bad, unknown, repeated and late lines to ``err``.
    Adds to ``stats``' counts; returns the number of the last line.

    The steps of ``drive`` for one engine, with the parsing inlined: a
    generator between them cost 5-15 % of replay's time. ``replay`` gives it
    every line; a shard of ``trygg.tuning.replay_shards`` only its residents'."""
    validate = validate_line
    process = eng.process
    n = events = 0
    for n, line in numbered:
        try:
            p = validate(line)
        except ValidationError as exc:
            if not line.strip():
                continue
            stats.bad += 1
            if err is not None:
                err.write(f"line {n}: {reason_of(exc)}\n")
            continue
        dev = devices.get(p.device)
        if dev is None:
            stats.unknown_device += 1
            if err is not None:
                err.write(f"line {n}: unknown device {p.device!r}\n")
            continue
        device, eid = dev[0], p.id
        if seen is not None and seen((device, eid)):
            stats.repeated += 1
            if err is not None:
                err.write(f"line {n}: repeated event {eid!r} from {device!r}: dropped\n")
            continue
        events += 1
        pos = p.position  # model.event_of, inlined (a call per event costs ~1 %)
        ev = Event(
            device,
            eid,
            p.type,
            p.time,
            dev[1],
            dev[2],
            p.room or dev[3],
            p.value,
            None if pos is None else (pos.lat, pos.lon),
        )
        late = eng.late_events
        sigs = process(ev, p.received)
        if sigs:
            for s in sigs:
                if keep(s):
                    kept.append(s)
        if eng.late_events != late and err is not None:
            err.write(
                f"line {n}: late event {eid!r} from {device!r}: "
                "evaluated by the immediate rules only\n"
            )
    stats.events += events
    return n


def replay(
    lines: Iterable[str | bytes],
    registry: Registry,
    catalogue: Catalogue,
    *,
    until: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    engine: Engine | None = None,
    raw: bool = False,
    gate_config: GateConfig | None = None,
    dedup_capacity: int | None = None,
) -> tuple[list[Signal], ReplayStats]:
    """Replay JSONL lines (module docstring). Returns the paged alerts' fire
    signals in time order (with ``raw``: every signal, no gates), also written
    to ``out`` as the contract's JSON lines, and counts. Bad lines, repeated
    and late events, and the timers pending at the end go to ``err``.
    ``dedup_capacity``: the size of the set of recent keys (default: live's,
    ``RecentKeys``'); the tests make it small to turn it over."""
    eng = engine if engine is not None else Engine(catalogue, registry)
    gates = None if raw else ReplayGates(registry, gate_config)
    recent = None if raw else recent_keys(dedup_capacity)
    stats = ReplayStats()
    late0 = eng.late_events
    keep = keeper(gates, raw)
    kept: list[Signal] = []
    seen = recent.seen if recent is not None else None
    stats.lines = replay_lines(
        enumerate(lines, 1), eng, device_table(registry), seen, keep, kept, stats, err
    )
    stats.until = _run_on(eng, until, keep, kept)
    stats.late = eng.late_events - late0
    stats.alerts = len(kept)
    if gates is not None:
        stats.inhibited, stats.folded = gates.inhibited, gates.folded
    if out is not None:
        line_of = raw_signal_json if raw else signal_json
        for s in kept:
            out.write(line_of(s) + "\n")
    pending = pending_timers(eng, registry)
    stats.pending = len(pending)
    if err is not None:
        for s in pending:
            err.write(pending_line(s))
    return kept, stats
