"""The rules step without Faust: one resident's state bytes and one event (or tick)
in, the new state bytes and the signals to send out.

Faust keeps the bytes in a table (changelog topic); ``RulesCore`` only knows the
pure engine (``trygg.rules.Engine``). A step is keyed by resident, so it only reads
and writes that resident's state; it drops a record it has already taken in (the
state keeps the offset of the last record of the resident, ``o``, and the recent
event keys for a message the bridges sent twice); and it returns the signals to
send *before* the new state is written: the worker awaits the broker's ack for
them and only then keeps the state, so a state that says "fired" always has its
signal in Kafka (docs/distributed.md, "Delivery guarantees").
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from trygg.alerts.gates import gated
from trygg.distributed import codecs
from trygg.distributed.worker.clocks import epoch, timestamp
from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules import Engine
from trygg.rules.catalogue import Catalogue
from trygg.rules.kinds import Res
from trygg.rules.overlays import LiveOverlays, Texts
from trygg.rules.snapshots import snapshot_doc

_EMPTY = b'{"v":1,"wm":null,"st":{}}'
RECENT_EVENTS = 64


@dataclass
class RulesStep:
    signals: list[Signal] = field(default_factory=list)
    resets: list[Event] = field(default_factory=list)
    state: bytes | None = None  # None: nothing changed (a duplicate)
    deadline: float | None = None  # epoch seconds of the resident's next timer
    wm: float | None = None  # the resident's newest event time
    event_at: datetime | None = None  # an event's own time (not for a tick)
    late: bool = False  # the event was late for its own device (docs/rules.md)
    applied: list[tuple[str, str]] = field(default_factory=list)  # (device, id) into the engine

    @property
    def duplicate(self) -> bool:
        return self.state is None


def resident_deadline(engine: Engine, resident: str) -> float | None:
    """The resident's next timer deadline (epoch s).

    Reads the engine's per-resident hint; the engine has no public accessor
    for one resident yet (asked for as ``Engine.deadline_of``)."""
    fn = getattr(engine, "deadline_of", None)
    if fn is not None:
        d = fn(resident)
        return timestamp(d) if isinstance(d, datetime) else d
    res = engine._res.get(resident)
    return res.next if res is not None else None


class RulesCore:
    """The rule engine, one resident at a time.

    The engine holds only the resident being stepped: its state is restored
    from the table value, stepped, snapshotted and dropped again, so that a
    tick (``advance``) can only fire this resident's timers.

    On the event clock (``release`` given) an event is not applied on arrival but
    kept in the resident's state (``pend``) until the partition's event clock, the
    slowest bridge's progress (``Sources``), has reached its time; then the events
    kept are applied in time order (ties in arrival order), before a tick's
    timers. Two bridges forward a resident's events side by side, and one starved
    of CPU can be minutes of event time behind the other (a back-fill runs fast):
    applied on arrival, the starved bridge's events would come after the other's
    newer ones, so the engine would fire timers they cancel and judge them late.
    Kept in the state, they move with the partition and survive a crash like the
    rest of it. On the wall clock events are applied at once (live alarms wait for
    nothing), as are any still kept from an event-clock run.

    A record is taken in once: the state keeps the offset of the last record of
    the resident taken in on its partition (``o``), written with the state it
    guards (one value, one changelog record), so a record at or below it is a
    repeat whatever its age (a partition read again from a lagging committed
    offset after a take-over, or sought back to a hole). The recent event keys
    catch what the offsets cannot: the same message sent twice by the bridges
    (an MQTT re-delivery), which has a new offset.

    State bytes: ``{"v": 1, "p": partition, "o": offset, "snap": <engine
    snapshot>, "next": deadline, "wm": newest event time, "keys": [recent event
    keys]}``,
    and on the event clock ``"src"`` (the partition's bridges as ``Sources.seen``)
    and ``"pend"`` (the events kept, as their records). ``next`` is then the
    earlier of the engine's next deadline and the first kept event's time less
    ``lag``, so the timer scan (which runs to the event clock less ``lag``) ticks
    the resident as soon as that event may be applied.
    """

    def __init__(self, engine: Engine, overlays: LiveOverlays | None = None) -> None:
        self.engine = engine
        # resident -> (the state bytes last written, that state without "snap", the
        # engine's live state it was snapshotted from): see ``step``
        self._held: dict[str, tuple[bytes, dict[str, Any], Res | None]] = {}
        # District overlays (docs/rules.md, "Districts"): the engine runs each
        # resident by standard -> their district's overlay -> their care plan, as
        # the embedded runner and replay do (the same apply_overlays).
        self.overlays = overlays or LiveOverlays()
        self._registry: Registry | None = None

    @classmethod
    def layered(
        cls,
        catalogue: Catalogue,
        registry: Registry,
        texts: Texts,
        stored: dict[str, tuple[str, str]] | None = None,
    ) -> RulesCore:
        """The core over ``catalogue`` with the district overlays ``texts`` (and
        stored versions) applied; OverlayError (file:line) if one is refused."""
        overlays = LiveOverlays()
        overlays.update(catalogue, texts, stored)
        core = cls(Engine(catalogue, overlays.registry(registry)), overlays)
        core._registry = registry
        return core

    def update_registry(self, registry: Registry) -> None:
        self.forget()  # held states keep the care plans and devices they were made with
        self.engine.update_registry(self.overlays.registry(registry))
        self._registry = registry

    def forget(self, residents: Iterable[str] | None = None) -> None:
        """Drop the live states held between steps (all, or ``residents``'): the
        next step of each decodes its state from the table value again."""
        if residents is None:
            self._held.clear()
        else:
            for r in residents:
                self._held.pop(r, None)

    def update_overlays(
        self, texts: Texts, stored: dict[str, tuple[str, str]] | None = None
    ) -> bool:
        """Take new district overlays into use; True if they changed. A refused
        overlay (OverlayError, or care plans that no longer fit: CarePlanError)
        raises and leaves the ones in force."""
        before = self.overlays.taken()
        if not self.overlays.update(self.engine.catalogue, texts, stored):
            return False
        if self._registry is not None:
            self.forget()
            try:
                self.engine.update_registry(self.overlays.registry(self._registry))
            except Exception:
                self.overlays.undo(before)
                raise
        return True

    def step(
        self,
        resident: str,
        state: bytes | str | None,
        record: dict[str, Any],
        partition: int,
        sources: dict[str, list[float | None]] | None = None,
        release: float | None = None,
        lag: float = 0.0,
        offset: int | None = None,
    ) -> RulesStep:
        """Apply one record. ``release``: the event clock (epoch s; -inf: not known
        yet), on which events are kept until it reaches them; None: the wall clock.
        ``offset``: the record's offset in ``partition`` (None: not from Kafka)."""
        eng = self.engine
        # The live state this core made the table value from, if the value is still
        # that one: no decode, no restore. Anything else (a take-over, a value
        # recovered from the changelog, a step whose state was never written) is
        # decoded from the value, so the table stays the only truth. Taken out
        # while the step runs: a step that fails leaves nothing held.
        raw = state.encode() if isinstance(state, str) else state
        held = self._held.pop(resident, None)
        if held is not None and raw is not None and held[0] == raw:
            doc: dict[str, Any] | None = held[1]
            live: Res | None = held[2]
        else:
            held = None
            doc = orjson.loads(raw) if raw else None
            live = None
        done = applied_offset(doc, partition)
        if offset is not None and done is not None and offset <= done:
            if held is not None:
                self._held[resident] = held
            return RulesStep()  # taken in already: a partition read again
        keys: deque[str] = deque(doc["keys"] if doc else (), maxlen=RECENT_EVENTS)
        pend: list[dict[str, Any]] = list(doc.get("pend") or ()) if doc else []
        if held is not None:
            eng.detach(resident)
            if live is not None:
                eng.attach(live)
        else:
            eng.restore(resident, orjson.dumps(doc["snap"]) if doc else _EMPTY)
        out = RulesStep()
        op = record["op"]
        try:
            if op == "ev":
                k = f"{record['d']}|{record['i']}"
                if k in keys:
                    return out  # a re-delivery: already applied (or kept)
                keys.append(k)
                if release is None:
                    self._apply(record, out)
                else:
                    # after every kept event of the same time or earlier: time, then arrival
                    t = epoch(record["t"])
                    at = bisect.bisect_right([epoch(r["t"]) for r in pend], t)
                    pend.insert(at, record)
            elif op != "tick":
                return out
            if pend:
                if release is None:
                    due, pend = pend, []
                else:
                    n = bisect.bisect_right([epoch(r["t"]) for r in pend], release)
                    due, pend = pend[:n], pend[n:]
                for r in due:
                    self._apply(r, out)
            if op == "tick":
                out.signals += eng.advance(datetime.fromisoformat(record["at"]))
            out.deadline = resident_deadline(eng, resident)
            if pend:
                first = epoch(pend[0]["t"]) - lag
                if out.deadline is None or first < out.deadline:
                    out.deadline = first
        finally:
            # the engine forgets the resident again (a step that returned early or
            # failed holds nothing: the next decodes the table value)
            live = eng.detach(resident)
        wm = live.wm if live is not None else None
        out.wm = wm
        doc_out: dict[str, Any] = {
            "v": 1,
            "p": partition,
            "snap": snapshot_doc(eng.catalogue, live),
            "next": out.deadline,
            "wm": wm,
            "keys": list(keys),
        }
        last = offset if offset is not None else done
        if last is not None:
            doc_out["o"] = max(last, done) if done is not None else last
        if sources is not None:
            doc_out["src"] = sources
        if pend:
            doc_out["pend"] = pend
        out.state = orjson.dumps(doc_out)
        del doc_out["snap"]
        self._held[resident] = (out.state, doc_out, live)
        return out

    def _apply(self, record: dict[str, Any], out: RulesStep) -> None:
        """Evaluate one event record; its signals and resets go to ``out``."""
        eng = self.engine
        ev = codecs.event_of(record)
        # The bridge's receipt time: the clock a device's clock is judged by,
        # as in the embedded runner (docs/rules.md, late events).
        rx = record.get("rx")
        late = eng.late_events
        out.signals += eng.process(ev, datetime.fromisoformat(rx) if rx else None)
        out.late = eng.late_events > late
        out.event_at = ev.time
        out.applied.append((ev.device, ev.id))
        if gated(ev):  # reset, session abort, resident cancel, session position
            out.resets.append(ev)


def applied_offset(doc: dict[str, Any] | None, partition: int) -> int | None:
    """The offset of the last record of the resident taken in on ``partition``
    (None: none, or the state is of another partition: the topic was re-partitioned)."""
    if not doc or doc.get("p") != partition:
        return None
    o = doc.get("o")
    return o if isinstance(o, int) else None
