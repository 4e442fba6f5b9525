"""The worker's steps, without Faust: one resident's state bytes and one record in,
the new state bytes and what to send out.

Faust keeps the bytes in tables (changelog topics); these classes only know
the pure cores (``trygg.rules.Engine``, ``trygg.alerts``). Each step:

- is keyed by resident, so it only reads and writes that resident's state;
- drops a record it has already applied: the rules state keeps the offset of
  the last record of the resident it took in (``o``), so a partition read again
  from an old offset after a rebalance is skipped however long the replay, and
  the resident's recent event keys for a message the bridges sent twice (a new
  offset); the alerts state keeps the recent signal keys;
- returns the records to send *before* the new state is written: the worker
  awaits the broker's ack for them and only then writes the table, so a state
  that says "fired" always has its signal in Kafka (see docs/distributed.md).
"""

from __future__ import annotations

import bisect
import heapq
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, Record
from trygg.alerts.gates import Decision, Directory, Gatekeeper, Silence, SilenceScope, gated
from trygg.alerts.routing import EscalationStep, Escalator, RoutingConfig
from trygg.distributed import codecs
from trygg.model import Event, Signal
from trygg.registry import Registry
from trygg.rules import Engine
from trygg.rules.catalogue import Catalogue
from trygg.rules.kinds import Res
from trygg.rules.overlays import LiveOverlays, Texts
from trygg.runner.timer_clock import ReceiptClock
from trygg.store import spooled

_EMPTY = b'{"v":1,"wm":null,"st":{}}'
RECENT_EVENTS = 64
RECENT_SIGNALS = 64
ALERT_ID_NAMESPACE = uuid.UUID("5f0c8f0e-3f57-4a53-9b8e-7d1f1a6c2b11")


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


# --------------------------------------------------------------------- rules


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
        return _ts(d) if isinstance(d, datetime) else d
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
                    t = _epoch(record["t"])
                    at = bisect.bisect_right([_epoch(r["t"]) for r in pend], t)
                    pend.insert(at, record)
            elif op != "tick":
                return out
            if pend:
                if release is None:
                    due, pend = pend, []
                else:
                    n = bisect.bisect_right([_epoch(r["t"]) for r in pend], release)
                    due, pend = pend[:n], pend[n:]
                for r in due:
                    self._apply(r, out)
            if op == "tick":
                out.signals += eng.advance(datetime.fromisoformat(record["at"]))
            out.deadline = resident_deadline(eng, resident)
            if pend:
                first = _epoch(pend[0]["t"]) - lag
                if out.deadline is None or first < out.deadline:
                    out.deadline = first
            snap = eng.snapshot(resident)
        finally:
            # the engine forgets the resident again (a step that returned early or
            # failed holds nothing: the next decodes the table value)
            live = eng.detach(resident)
        wm = live.wm if live is not None else None
        out.wm = wm
        doc_out: dict[str, Any] = {
            "v": 1,
            "p": partition,
            "snap": orjson.Fragment(snap),
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


def applied_floors(
    items: Iterable[tuple[str, bytes | str]], partitions: Iterable[int]
) -> dict[int, int]:
    """Per partition, the next offset that no resident's state has taken in: every
    record below it was taken in (the rules agent reads a partition in offset order
    and never past a hole). A partition no resident of which has an offset is left out."""
    want = set(partitions)
    out: dict[int, int] = {}
    for _, state in items:
        if not state:
            continue
        doc = orjson.loads(state)
        p = doc.get("p")
        if p not in want:
            continue
        o = applied_offset(doc, p)
        if o is not None and o >= out.get(p, 0):
            out[p] = o + 1
    return out


def state_index(state: bytes | str) -> tuple[int | None, float | None, float | None]:
    """(partition, next deadline, newest event time) of a rules or alerts state."""
    doc = orjson.loads(state)
    return doc.get("p"), doc.get("next"), doc.get("wm")


# --------------------------------------------------------------------- timers


class TimerIndex:
    """Each owned partition's residents by next deadline, rebuilt from the table.

    A scan pops only the due residents (a heap per partition). Entries go
    stale when a resident's deadline moves; ``due`` keeps the current one and
    stale entries are skipped. A resident that was ticked is ticked again
    after ``retry_s`` if its deadline has not moved (the tick was lost, e.g.
    in a rebalance).
    """

    def __init__(self, retry_s: float = 5.0) -> None:
        self.heaps: dict[int, list[tuple[float, str]]] = {}
        self.due: dict[str, tuple[int, float]] = {}
        self.wm: dict[int, float] = {}
        self.ticked: dict[str, tuple[float, float]] = {}
        self.retry_s = retry_s

    def update(
        self, partition: int, resident: str, deadline: float | None, wm: float | None
    ) -> None:
        if wm is not None and wm > self.wm.get(partition, float("-inf")):
            self.wm[partition] = wm
        if deadline is None:
            self.due.pop(resident, None)
            return
        if self.due.get(resident) == (partition, deadline):
            return
        self.due[resident] = (partition, deadline)
        heapq.heappush(self.heaps.setdefault(partition, []), (deadline, resident))

    def rebuild(self, partitions: set[int], items: Iterable[tuple[str, bytes | str]]) -> None:
        """Start over from the table's entries of the owned ``partitions``."""
        self.heaps = {p: [] for p in partitions}
        self.due.clear()
        self.ticked.clear()
        self.wm = {}
        for resident, state in items:
            if not state:
                continue
            p, nxt, wm = state_index(state)
            if p in partitions:
                self.update(p, resident, nxt, wm)
        for h in self.heaps.values():
            heapq.heapify(h)

    def pop_due(self, partition: int, now: float) -> list[str]:
        h = self.heaps.get(partition)
        if not h:
            return []
        out: list[str] = []
        keep: list[tuple[float, str]] = []
        mono = time.monotonic()
        while h and h[0][0] <= now:
            d, rid = heapq.heappop(h)
            if self.due.get(rid) != (partition, d):
                continue  # stale
            t = self.ticked.get(rid)
            keep.append((d, rid))
            if t is not None and t[0] == d and mono - t[1] < self.retry_s:
                continue
            self.ticked[rid] = (d, mono)
            out.append(rid)
        for e in keep:
            heapq.heappush(h, e)
        return out

    def next_deadline(self, partitions: Iterable[int]) -> float | None:
        best: float | None = None
        for p in partitions:
            h = self.heaps.get(p)
            if h and (best is None or h[0][0] < best):
                best = h[0][0]
        return best


# --------------------------------------------------------------------- clocks

SOURCE_IDLE_S = 30.0  # a bridge quiet on a partition this long no longer holds its clock
TAKEOVER_HOLD_S = 30.0  # wall clock: how long a new partition's clock may wait for its backlog


class Sources:
    """One partition's event clock: the bridges' progress, like Flink's per-input watermark.

    Two bridges forward a resident's events side by side, and each forwards its
    share of the MQTT stream in the order it received it. The newest event time of
    a partition is therefore no measure of what is still on its way: while one
    bridge is starved of CPU, the other's newer events move the partition's
    newest time ahead, and a clock derived from it fires timers before the starved
    bridge's older events arrive. So every bridge stamps each event with its own
    progress (``bw``: the newest event time it has forwarded, at most its receipt
    time) and sends that progress on its own (``op: wm``) to every partition once a
    second when it moved, and once at start with no progress. A partition's event
    clock is the *smallest* progress over its bridges: nothing a bridge sends later
    is older than its progress, so no event still in flight is older than that.

    A bridge that has not been heard of on this partition for ``idle_s`` of the
    partition's receipt time (the newest ``rx`` from any bridge) is idle: it no
    longer holds the clock back (Flink's idle sources), and is forgotten. A bridge
    announced without progress holds the clock (None) until its first event or
    until it is idle. The clock never goes back. Records without a stamp (an older
    bridge) count as one unnamed source whose progress is their event time.

    ``seen``: bridge -> [progress or None, newest rx] (epoch s), as kept in the
    rules state (``src``) so a new owner of the partition starts from it.
    """

    __slots__ = ("floor", "idle_s", "seen")

    def __init__(self, idle_s: float = SOURCE_IDLE_S) -> None:
        self.idle_s = idle_s
        self.seen: dict[str, list[float | None]] = {}
        self.floor: float | None = None

    def see(self, bridge: str, progress: float | None, rx: float) -> None:
        prev = self.seen.get(bridge)
        if prev is None:
            self.seen[bridge] = [progress, rx]
            return
        p0, rx0 = prev
        if progress is not None and (p0 is None or progress > p0):
            prev[0] = progress
        if rx0 is None or rx > rx0:
            prev[1] = rx

    def merge(self, seen: dict[str, Any]) -> None:
        """Take in a stored ``src`` map (a resident's state)."""
        for bridge, (progress, rx) in seen.items():
            self.see(bridge, progress, rx)

    def watermark(self) -> float | None:
        """The smallest progress over the bridges not idle (None: not known yet)."""
        seen = self.seen
        if seen:
            newest = max(v[1] or 0.0 for v in seen.values())
            for bridge in [b for b, v in seen.items() if newest - (v[1] or 0.0) > self.idle_s]:
                del seen[bridge]
            ps = [v[0] for v in seen.values()]
            if all(p is not None for p in ps):
                low = min(p for p in ps if p is not None)
                if self.floor is None or low > self.floor:
                    self.floor = low
        return self.floor


def record_source(rec: dict[str, Any]) -> tuple[str, float | None, float] | None:
    """(bridge, progress, receipt time) of an events-topic record, as epoch seconds;
    None for a record that says nothing about a bridge (a tick)."""
    op = rec.get("op")
    if op == "wm":
        bw = rec.get("bw")
        return rec["b"], _epoch(bw) if bw else None, _epoch(rec["rx"])
    if op != "ev":
        return None
    rx = _epoch(rec["rx"])
    bw = rec.get("bw")
    if bw:
        return rec.get("b") or "", _epoch(bw), rx
    return "", min(_epoch(rec["t"]), rx), rx


def _epoch(v: str | datetime) -> float:
    return (v if isinstance(v, datetime) else datetime.fromisoformat(v)).timestamp()


class EventClocks:
    """The event clock (``worker_clock = event``) of each owned partition (``Sources``)."""

    def __init__(self, idle_s: float = SOURCE_IDLE_S) -> None:
        self.idle_s = idle_s
        self.parts: dict[int, Sources] = {}

    def _of(self, partition: int) -> Sources:
        src = self.parts.get(partition)
        if src is None:
            src = self.parts[partition] = Sources(self.idle_s)
        return src

    def see(self, partition: int, rec: dict[str, Any]) -> bool:
        """Take in a record's stamp; False if it carries none."""
        s = record_source(rec)
        if s is None:
            return False
        self._of(partition).see(*s)
        return True

    def state(self, partition: int) -> dict[str, list[float | None]]:
        """What to keep in a resident's state (a copy of the partition's ``seen``)."""
        src = self.parts.get(partition)
        return {b: list(v) for b, v in src.seen.items()} if src is not None else {}

    def rebuild(self, partitions: set[int], items: Iterable[tuple[str, bytes | str]]) -> None:
        """Keep the partitions still owned; take the stored ``src`` maps of the table in.

        Merging is a running maximum, so a partition kept loses nothing and one taken
        over starts where its last owner's newest state left it."""
        self.parts = {p: src for p, src in self.parts.items() if p in partitions}
        for _, state in items:
            if not state:
                continue
            doc = orjson.loads(state)
            p, seen = doc.get("p"), doc.get("src")
            if seen and p in partitions:
                self._of(p).merge(seen)

    def clock(self, partition: int) -> float | None:
        src = self.parts.get(partition)
        return src.watermark() if src is not None else None


class WallClocks:
    """The wall clock of each owned partition (``worker_clock = wall``, production).

    The embedded runner's receipt-delay correction (``trygg.runner.timer_clock``,
    the same class), one per partition: a worker behind on one partition (a take-over,
    a backlog at Kafka or at mosquitto) holds only that partition's timers back. A
    partition's delay is fed with each event the rules agent applies (not late, not a
    repeat): the time it reached the engine - its event time.

    A partition just taken over has read none of its backlog when the first scan
    comes, and its window is empty, which would mean "live": its clock is held at
    the newest event time its table holds until the rules agent has applied a new
    event of it, or ``hold_s`` at most (a quiet partition)."""

    def __init__(self, hold_s: float = TAKEOVER_HOLD_S) -> None:
        self.hold_s = hold_s
        self.parts: dict[int, ReceiptClock] = {}
        self.held: dict[int, tuple[float, float]] = {}  # partition -> (clock, until (mono))

    def assigned(self, partitions: set[int], newest: dict[int, float], at: float) -> None:
        """The owned partitions changed: start a clock (held) for each new one."""
        for p in [p for p in self.parts if p not in partitions]:
            del self.parts[p]
            self.held.pop(p, None)
        for p in partitions:
            if p not in self.parts:
                self.parts[p] = ReceiptClock()
                if p in newest:
                    self.held[p] = (newest[p], at + self.hold_s)

    def note(self, partition: int, delay: timedelta, at: float) -> None:
        self.held.pop(partition, None)
        rc = self.parts.get(partition)
        if rc is None:
            rc = self.parts[partition] = ReceiptClock()
        rc.note(delay, at)

    def clock(self, partition: int, now: datetime, at: float) -> datetime:
        held = self.held.get(partition)
        if held is not None:
            if at < held[1]:
                return min(now, datetime.fromtimestamp(held[0], UTC))
            del self.held[partition]
        rc = self.parts.get(partition)
        return rc.clock(now, at) if rc is not None else now


# --------------------------------------------------------------------- holes


class Holes:
    """Holes an agent found in a partition's offsets, and its requests to read them again.

    Faust 0.15 can commit past a record that reached one agent and not another
    (docs/distributed.md, "Faust's holes"). An agent that sees every offset of a
    partition in order (the rules agent on the events topic; the sink on its
    topics) notices the jump and asks for the partition to be read again from the
    hole. ``ask`` says whether to seek now (not when the same hole was asked for
    within ``retry_s``: the re-read records are on their way). After ``check_after``
    requests, ``stubborn`` says it is time to ask the broker whether the hole is
    still in the topic at all (retention may have deleted it); only the broker's
    earliest offset decides that, never the count: a busy worker can take many
    seconds to reach a re-read (a take-over's backlog), and giving up then would
    lose the records.
    """

    def __init__(self, retry_s: float = 1.0, check_after: int = 3) -> None:
        self.retry_s = retry_s
        self.check_after = check_after
        self._asked: dict[Any, tuple[int, int, float]] = {}  # key -> offset, times, when

    def ask(self, key: Any, offset: int, now: float) -> bool:
        prev = self._asked.get(key)
        if prev is not None and prev[0] == offset:
            if now - prev[2] < self.retry_s:
                return False
            self._asked[key] = (offset, prev[1] + 1, now)
        else:
            self._asked[key] = (offset, 1, now)
        return True

    def pending(self, key: Any) -> int | None:
        """The hole last asked for under ``key`` (None: none)."""
        prev = self._asked.get(key)
        return prev[0] if prev is not None else None

    def stubborn(self, key: Any) -> bool:
        """The pending hole was asked for ``check_after`` times or more."""
        prev = self._asked.get(key)
        return prev is not None and prev[1] >= self.check_after

    def closed(self, key: Any) -> None:
        self._asked.pop(key, None)


# --------------------------------------------------------------------- alerts


@dataclass
class AlertsStep:
    records: list[dict[str, Any]] = field(default_factory=list)  # for the sink (spooled)
    notifications: list[dict[str, Any]] = field(default_factory=list)  # for the notify agent
    decisions: list[Decision] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # alerts this step closed
    state: bytes | None = None
    deadline: float | None = None

    @property
    def duplicate(self) -> bool:
        return self.state is None


class AlertsCore:
    """Gatekeeper, lifecycle and escalation for one resident at a time.

    State bytes: ``{"v": 1, "p": partition, "alerts": [[record, ...], ...],
    "sil": [silence, ...], "seen": [recent signal keys], "next": deadline}``,
    the open alerts and those closed within the gates' lookback.

    Alert ids are derived from what raised them (resident, signal key), so a
    signal applied again after a crash that lost the state raises the *same*
    alert, with the same record numbers: the store keeps the first copy.
    """

    def __init__(self, routing: RoutingConfig, directory: Directory | None = None) -> None:
        self.routing = routing
        self.escalator = Escalator(routing)
        self.directory = directory or Directory()
        self._seed = ""
        self._n = 0
        self.silences: list[Silence] | None = None  # the database's, once loaded

    def update_registry(self, registry: Registry) -> None:
        self.directory = Directory.from_registry(registry)

    def update_silences(self, silences: Iterable[Silence]) -> None:
        """The silences of the database (``trygg api`` writes them; the worker reloads
        them). Once given, they replace the state's per-resident ``sil`` list, so an
        ended or changed silence takes effect for every resident of this worker."""
        self.silences = list(silences)

    def resident_of(self, silence: Silence) -> str | None:
        """The resident a silence is about (a device silence: the device's resident)."""
        if silence.scope is SilenceScope.RESIDENT:
            return silence.target
        info = self.directory.devices.get(silence.target)
        return info.resident if info is not None else None

    def _silences_of(self, resident: str, doc: dict[str, Any]) -> list[Silence]:
        if self.silences is None:
            return [Silence.model_validate(s) for s in doc.get("sil", ())]
        return [s for s in self.silences if self.resident_of(s) == resident]

    def _new_id(self) -> str:
        self._n += 1
        return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{self._seed}|{self._n}"))

    def step(
        self,
        resident: str,
        state: bytes | str | None,
        record: dict[str, Any],
        partition: int,
        now: datetime,
    ) -> AlertsStep:
        doc = orjson.loads(state) if state else {"alerts": [], "sil": [], "seen": []}
        seen: deque[str] = deque(doc.get("seen", ()), maxlen=RECENT_SIGNALS)
        alerts = [Alert.from_records(Record.from_dict(r) for r in recs) for recs in doc["alerts"]]
        silences = self._silences_of(resident, doc)
        gk = Gatekeeper.rebuild(
            self.routing.gates, alerts, silences, new_id=self._new_id, directory=self.directory
        )
        out = AlertsStep()
        op = record["op"]
        before = {a.id: a for a in alerts}
        acted: Alert | None = None
        if op == "sig":
            sig = codecs.signal_of(record)
            key = codecs.signal_key(sig)
            if key in seen:
                return out
            seen.append(key)
            self._seed, self._n = f"{resident}|{key}", 0
            out.decisions.append(gk.on_signal(sig, now))
        elif op == "reset":
            ev = codecs.event_of(record)
            key = f"reset|{ev.device}|{ev.id}"
            if key in seen:
                return out
            seen.append(key)
            out.decisions.extend(gk.on_event(ev, now))
        elif op == "tick":
            out.decisions.extend(gk.release_due(now))
        elif op == "act":
            a = gk.get(record["id"])
            if a is None:
                return out  # not open here (closed, or not this resident's)
            kw = {k: record.get(k) for k in ("expected_version", "assignee", "outcome", "reason")}
            try:
                acted = lc.act(
                    a,
                    record["action"],
                    now,
                    record["actor"],
                    note_text=record.get("note") or "",
                    **kw,
                )
            except (lc.TransitionError, lc.ConflictError):
                acted = None  # refused: the API told the user already (docs/distributed.md)
            if acted is not None:
                gk.update(acted)
        else:
            return out
        # escalation: routed decisions at once, then whatever is due now
        for d in out.decisions:
            if d.route and d.alert is not None:
                for step in self.escalator.steps_due(d.alert, now):
                    self._step(gk, step, now, out)
        if op in ("tick", "act"):
            for step in self.escalator.due(gk.open_alerts(), now):
                self._step(gk, step, now, out)
        # persist every alert that changed (records since its version before the step)
        touched: dict[str, Alert] = {}
        for d in out.decisions:
            if d.alert is not None:
                touched[d.alert.id] = gk.get(d.alert.id) or d.alert
        if acted is not None:
            touched[acted.id] = gk.get(acted.id) or acted
        for a in gk.open_alerts():
            prev = before.get(a.id)
            if prev is None or prev.version != a.version:
                touched[a.id] = a
        change_records = []
        for a in touched.values():
            prev = before.get(a.id)
            new = a.records[prev.version if prev is not None else 0 :]
            if new:
                snap = a.to_dict()
                snap["shadow"] = False
                change_records.append(spooled.alert_change_record(snap, [r.to_dict() for r in new]))
        out.records[:0] = change_records
        out.closed = [
            a.id
            for a in touched.values()
            if not a.is_open and (before.get(a.id) is None or before[a.id].is_open)
        ]
        horizon = now - self.routing.gates.lookback
        merged = {**before, **touched}
        keep = sorted(
            (a for a in merged.values() if a.is_open or a.last_at > horizon),
            key=lambda a: (a.raised_at, a.id),
        )
        nd = self._deadline(gk, now)
        out.deadline = _ts(nd)
        out.state = orjson.dumps(
            {
                "v": 1,
                "p": partition,
                "alerts": [[r.to_dict() for r in a.records] for a in keep],
                "sil": [s.model_dump(mode="json") for s in gk.silences()],
                "seen": list(seen),
                "next": out.deadline,
            }
        )
        return out

    def _deadline(self, gk: Gatekeeper, now: datetime) -> datetime | None:
        times = [
            t
            for t in (
                gk.next_deadline(now),
                self.escalator.next_deadline(gk.open_alerts(), now),
            )
            if t is not None
        ]
        return min(times) if times else None

    def _step(self, gk: Gatekeeper, step: EscalationStep, now: datetime, out: AlertsStep) -> None:
        a = gk.get(step.alert_id)
        if a is None:
            return
        b = step.apply(a, now)
        gk.update(b)
        rows = []
        for n in step.notifications:
            row = n.to_row(n.address.replace("{team}", a.team))
            rows.append(row)
            out.notifications.append({"op": "ntf", "row": row, "alert": b.to_dict()})
        if rows:
            out.records.append(spooled.notifications_record(rows))


# --------------------------------------------------------------------- notify

CLOSED_KEEP_S = 24 * 3600.0  # an alert's outbox entry is kept this long after it closed


@dataclass
class Attempt:
    """A delivery the notify agent is to attempt now (one try, no wait)."""

    key: str
    row: dict[str, Any]
    alert: dict[str, Any]
    attempts: int  # made before this one
    first_failed: float | None  # epoch s of the first failed attempt (None: this is the first)


@dataclass
class Outcome:
    """What became of an attempt: delivered, failed for good, or to be tried again."""

    attempts: int  # made so far, this one included
    ok: bool
    retry: bool  # a failure worth trying again (HTTP 5xx, a timeout, no connection)
    error: str | None = None


class NotifyOutbox:
    """The notify agent's durable outbox, one alert's notifications at a time.

    The embedded runner retries a failed notification in a task of its own until it
    is delivered, the alert is closed or the channel's give-up time has passed
    (docs/alerts.md, "The outbox"). The notify agent cannot wait in its stream: a
    notification retried there holds every one behind it, and one it gives up on is
    lost (it used to stop after 5 attempts). So a failed notification is kept in
    the agent's table (``notify-outbox``, keyed by alert id like the notifications
    topic, so it moves with its partition) with its attempt count, when it first
    failed and when it may be tried again (``nb``, from the embedded runner's
    ``RetryPolicy``, the same backoff and jitter). The worker's timer scan sends a
    ``rty`` record to the alert's partition when the earliest ``nb`` has come, and
    the agent makes one attempt per due notification then, never sleeping.

    Every notification the agent has handled stays in the entry as done, so a
    ``ntf`` record read again after a rebalance is not sent again. The alerts agent
    sends ``cls`` when an alert closes: what is still pending is dropped (outcome
    ``cancelled``) and the entry is deleted ``CLOSED_KEEP_S`` later.

    State bytes: ``{"v": 1, "p": partition, "next": epoch s or null, "closed": epoch
    s or null, "n": {key: entry}}``, an entry being ``{"done": true}`` or
    ``{"row", "alert", "a": attempts, "t0": first failure, "nb": not before}``.
    """

    def __init__(self, policy: Any, give_up: Any) -> None:
        self.policy = policy  # trygg.notify.retry.RetryPolicy
        self.give_up = give_up  # trygg.notify.retry.GiveUp

    @staticmethod
    def load(state: bytes | str | None, partition: int) -> dict[str, Any]:
        doc = orjson.loads(state) if state else {}
        return {
            "v": 1,
            "p": partition,
            "next": doc.get("next"),
            "closed": doc.get("closed"),
            "n": dict(doc.get("n") or {}),
        }

    @staticmethod
    def dump(doc: dict[str, Any]) -> bytes:
        nbs = [e["nb"] for e in doc["n"].values() if "nb" in e]
        if doc["closed"] is not None:
            doc["next"] = doc["closed"] + CLOSED_KEEP_S
        else:
            doc["next"] = min(nbs) if nbs else None
        return orjson.dumps(doc)

    @staticmethod
    def take(doc: dict[str, Any], record: dict[str, Any]) -> Attempt | None:
        """A new notification (``ntf``): the attempt to make now, or None if it was
        handled already (a record read again) or its alert is closed."""
        row = record["row"]
        if doc["closed"] is not None or row["key"] in doc["n"]:
            return None
        return Attempt(row["key"], row, record["alert"], 0, None)

    @staticmethod
    def due(doc: dict[str, Any], now: float) -> list[Attempt]:
        """The pending notifications whose time has come (on ``rty``)."""
        return [
            Attempt(k, e["row"], e["alert"], e["a"], e["t0"])
            for k, e in sorted(doc["n"].items(), key=lambda kv: (kv[1].get("nb", 0), kv[0]))
            if "nb" in e and e["nb"] <= now
        ]

    def settle(self, doc: dict[str, Any], at: Attempt, out: Outcome, now: float) -> str | None:
        """Record an attempt's outcome in the entry. Returns None while it is to be
        tried again, else the final word: "ok", or the reason it failed for good."""
        if out.ok:
            doc["n"][at.key] = {"done": True}
            return "ok"
        if not out.retry:
            doc["n"][at.key] = {"done": True}
            return out.error or "failed"
        t0 = at.first_failed if at.first_failed is not None else now
        channel = str(at.row.get("channel", ""))
        limit = self.give_up.after(channel, str(at.alert.get("severity", "")))
        if limit is not None and now - t0 >= limit.total_seconds():
            doc["n"][at.key] = {"done": True}
            return f"{out.error or 'failed'} (gave up after {limit})"
        doc["n"][at.key] = {
            "row": at.row,
            "alert": at.alert,
            "a": out.attempts,
            "t0": t0,
            "nb": now + self.policy.delay(out.attempts),
        }
        return None

    @staticmethod
    def close(doc: dict[str, Any], now: float) -> list[Attempt]:
        """The alert closed (``cls``): drop what is pending; returns it (to record)."""
        dropped = [
            Attempt(k, e["row"], e["alert"], e["a"], e["t0"])
            for k, e in doc["n"].items()
            if "nb" in e
        ]
        for a in dropped:
            doc["n"][a.key] = {"done": True}
        if doc["closed"] is None:
            doc["closed"] = now
        return dropped

    @staticmethod
    def expired(doc: dict[str, Any], now: float) -> bool:
        """A closed alert's entry kept long enough: delete it."""
        return doc["closed"] is not None and now >= doc["closed"] + CLOSED_KEEP_S


def wall_now() -> datetime:
    return datetime.now(UTC)


EVENT_CLOCK_LAG = timedelta(minutes=2)
