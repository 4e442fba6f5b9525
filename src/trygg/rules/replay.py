"""``trygg rules replay``: run the engine over a JSONL file of events (DESIGN.md,
contract: replay). The clock is event time; after the last event it runs on to
``until`` (default 24 h after the last event) so that pending timers fire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from pydantic import ConfigDict, ValidationError

from trygg.model import Event, EventPayload, Signal, SignalAction
from trygg.registry import Registry
from trygg.rules.catalogue import Catalogue
from trygg.rules.engine import Engine

RUN_ON = timedelta(hours=24)


class ReplayLine(EventPayload):
    """One JSONL line: the MQTT payload object plus the device id."""

    # do not keep every event id in pydantic's global string cache
    model_config = ConfigDict(cache_strings="keys")

    device: str


_validator = ReplayLine.__pydantic_validator__.validate_json


def make_event(p: ReplayLine, resident: str, kind: Any, room: Any) -> Event:
    """The line's event, enriched from its device (the payload model has done the checks)."""
    pos = p.position
    return Event(
        p.device,
        p.id,
        p.type,
        p.time,
        resident,
        kind,
        p.room or room,
        p.value,
        None if pos is None else (pos.lat, pos.lon),
    )


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    bad: int = 0
    unknown_device: int = 0
    late: int = 0
    alerts: int = 0


def _reason(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def signal_json(s: Signal) -> str:
    return json.dumps(
        {
            "at": s.at.isoformat(),
            "rule": s.rule,
            "resident": s.resident,
            "code": s.code,
            "severity": s.severity.value,
            "events": list(s.events),
        },
        ensure_ascii=False,
    )


def drive(
    events: Iterable[Event],
    engines: Sequence[Engine],
    *,
    until: datetime | None = None,
    run_on: timedelta = RUN_ON,
    on_late: Callable[[Event], None] | None = None,
) -> list[list[Signal]]:
    """Run one or more engines over the same events on event time.

    Every event goes to every engine in turn; afterwards each engine's clock
    runs on to ``until`` (default: ``run_on`` after its latest event) so that
    pending timers fire. Returns, per engine, the fire signals in time order
    (clears are dropped; equal times keep the order they were decided in).
    ``on_late(event)`` is called for an event the first engine did not
    evaluate because it was too late (see the engine's late-event policy).

    This is the loop of ``trygg rules replay`` (events parsed from JSONL) and
    of ``trygg rules backtest`` (events streamed from the database, two
    engines: the current and the candidate catalogue)."""
    fire = SignalAction.FIRE
    out: list[list[Signal]] = [[] for _ in engines]
    if len(engines) == 1:
        eng = engines[0]
        fired = out[0]
        process = eng.process
        for ev in events:
            late = eng.late_events
            sigs = process(ev)
            if sigs:
                for s in sigs:
                    if s.action is fire:
                        fired.append(s)
            elif on_late is not None and eng.late_events != late:
                on_late(ev)
    else:
        first = engines[0]
        pairs = [(e.process, f) for e, f in zip(engines, out, strict=True)]
        for ev in events:
            late = first.late_events
            for process, fired in pairs:
                sigs = process(ev)
                if sigs:
                    for s in sigs:
                        if s.action is fire:
                            fired.append(s)
            if on_late is not None and first.late_events != late:
                on_late(ev)
    for eng, fired in zip(engines, out, strict=True):
        last = eng.watermark()
        end = until if until is not None else (last + run_on if last is not None else None)
        if end is not None:
            for s in eng.advance(end):
                if s.action is fire:
                    fired.append(s)
        fired.sort(key=lambda s: s.at.timestamp())
    return out


def replay(
    lines: Iterable[str | bytes],
    registry: Registry,
    catalogue: Catalogue,
    *,
    until: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    engine: Engine | None = None,
) -> tuple[list[Signal], ReplayStats]:
    """Replay JSONL lines; returns the fire signals in time order (also written to
    ``out`` as the contract's JSON lines) and counts. Bad lines go to ``err``."""
    eng = engine if engine is not None else Engine(catalogue, registry)
    devices = {d.id: (d.resident, d.kind, d.room) for d in registry.devices}
    stats = ReplayStats()
    validate = _validator
    late0 = eng.late_events

    def parsed() -> Iterator[Event]:
        n = events = 0
        for n, line in enumerate(lines, 1):
            try:
                p = validate(line)
            except ValidationError as exc:
                if not line.strip():
                    continue
                stats.bad += 1
                if err is not None:
                    err.write(f"line {n}: {_reason(exc)}\n")
                continue
            dev = devices.get(p.device)
            if dev is None:
                stats.unknown_device += 1
                if err is not None:
                    err.write(f"line {n}: unknown device {p.device!r}\n")
                continue
            events += 1
            stats.lines = n  # the line of the event being evaluated (for on_late)
            yield make_event(p, dev[0], dev[1], dev[2])
        stats.events = events
        stats.lines = n

    def late(ev: Event) -> None:
        if err is not None:
            err.write(
                f"line {stats.lines}: late event {ev.id!r} from {ev.device!r}: not evaluated\n"
            )

    (fired,) = drive(parsed(), [eng], until=until, on_late=late)
    stats.late = eng.late_events - late0
    stats.alerts = len(fired)
    if out is not None:
        for s in fired:
            out.write(signal_json(s) + "\n")
    return fired, stats
