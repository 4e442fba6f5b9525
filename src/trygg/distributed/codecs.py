"""What travels on trygg's Kafka topics: JSON records, one per Kafka record.

The records are the store's spool records (``trygg.store.spooled``) wherever
the database is their destination, so the sink hands them to
``spooled.apply`` as they are:

================ ===================================== =======================
topic            record ``op``                          key
================ ===================================== =======================
events           ``ev`` (spooled.event_record), ``tick`` resident
                 ``wm`` (a bridge's progress)           bridge, to each partition
dead letters     ``dl`` (spooled.dead_letter_record)    device (or empty)
signals          ``sig``, ``reset`` (an alarm.reset      resident
                 event), ``tick``, ``act`` (staff)
records          ``achg``, ``outbox``, ``dlv``, ``sil``  resident
notifications    ``ntf``                                alert id
================ ===================================== =======================

Keys are the resident id as UTF-8, so Kafka's default partitioner (murmur2
of the key) puts all of a resident's records, of every topic, on partitions
with the same number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from trygg.model import DeviceKind, Event, EventType, Room, Severity, Signal, SignalAction
from trygg.store import spooled
from trygg.store.events import StoredEvent

Record = dict[str, Any]


def dumps(record: Record) -> bytes:
    return orjson.dumps(record)


def loads(data: bytes | str) -> Record:
    out = orjson.loads(data)
    if not isinstance(out, dict):
        raise ValueError("a trygg Kafka record is a JSON object")
    return out


def key_of(resident: str) -> bytes:
    return resident.encode()


# --- events -----------------------------------------------------------------


def event_record(
    event: Event,
    received_at: datetime,
    bridge: str | None = None,
    progress: datetime | None = None,
) -> Record:
    """An event as the bridge sends it. ``bridge`` and ``progress`` stamp it with the
    bridge's id and the newest event time the bridge has forwarded, this one included
    (the worker's event clock, ``worker.clocks.Sources``)."""
    r = spooled.event_record(StoredEvent(event, received_at))
    if bridge is not None:
        r["b"] = bridge
        r["bw"] = progress
    return r


def watermark_record(bridge: str, progress: datetime | None, at: datetime) -> Record:
    """A bridge's progress, sent to every partition of the events topic: nothing the
    bridge sends after it is older than ``progress`` (None: nothing forwarded yet).
    ``at``: the bridge's clock when it sent it (``rx``, as on its events)."""
    return {"op": "wm", "b": bridge, "bw": progress, "rx": at}


def event_of(r: Record) -> Event:
    """The Event of an ``ev`` record."""
    p = r.get("p")
    return Event(
        device=r["d"],
        id=r["i"],
        type=EventType(r["y"]),
        time=datetime.fromisoformat(r["t"]),
        resident=r["r"],
        kind=DeviceKind(r["k"]),
        room=Room(r["m"]) if r.get("m") else None,
        value=r.get("v"),
        position=(p[0], p[1]) if p else None,
    )


def tick_record(resident: str, at: datetime) -> Record:
    """Wake a resident's timers at ``at`` (sent by a worker's timer scan)."""
    return {"op": "tick", "r": resident, "at": at.isoformat()}


# --- signals ----------------------------------------------------------------


def signal_record(s: Signal) -> Record:
    return {
        "op": "sig",
        "a": s.action.value,
        "rule": s.rule,
        "r": s.resident,
        "at": s.at.isoformat(),
        "code": s.code,
        "sev": s.severity.value,
        "cv": s.catalogue_version,
        "ev": list(s.events),
        "dev": s.device,
        "title": s.title,
    }


def signal_of(r: Record) -> Signal:
    return Signal(
        SignalAction(r["a"]),
        r["rule"],
        r["r"],
        datetime.fromisoformat(r["at"]),
        r["code"],
        Severity(r["sev"]),
        r["cv"],
        tuple(r.get("ev") or ()),
        r.get("dev"),
        title=r.get("title") or "",
    )


def signal_key(s: Signal) -> str:
    """What makes a signal the same signal again (after a re-delivery):
    action, rule, device and the (event or timer) time it belongs to."""
    return f"{s.action.value}|{s.rule}|{s.device or ''}|{s.at.isoformat()}"


def reset_record(event: Event) -> Record:
    """An ``alarm.reset`` event forwarded to the alerts agent (auto-resolve)."""
    return {**event_record(event, event.time), "op": "reset"}


def action_record(alert_id: str, resident: str, action: str, actor: str, **fields: Any) -> Record:
    """A staff action for the alerts agent that owns the resident (see docs/distributed.md)."""
    return {"op": "act", "id": alert_id, "r": resident, "action": action, "actor": actor, **fields}
