"""MQTT message -> validated events or dead letters. Pure: no I/O.

The decoder is the single place where untrusted bytes become ``Event``s. It
never raises for bad input: whatever cannot be used becomes a ``DeadLetter``
whose reason a person can act on ("unknown device 'x'", "event[3].time: ...").
Valid events in a batch survive invalid neighbours.

What it lets through, PostgreSQL can store: no NUL or lone surrogate in any
text, numbers that fit the columns, times (and UTC offsets) that timestamptz
holds (``EventPayload``). A payload's size is checked before anything else;
above the limit it is refused unread, and the dead letter keeps its first
64 KiB with the size and SHA-256 of the whole (``DeadLetter``). The MQTT
receiver passes such a payload on as a ``PayloadHead`` (trygg.ingest.payload),
which is never decoded.

Two channels per device: ``events`` (the JSON contract) and ``scaip`` (SCAIP
``<mrq>`` XML, trygg.ingest.scaip). A SCAIP message always gets a reply, an
``<mrs>`` for the device's ``scaip/response`` topic, in ``Decoded.reply``; the
runner publishes it once the message is handed off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from trygg.ingest import scaip
from trygg.ingest.payload import MAX_PAYLOAD_BYTES, PayloadHead, size_of
from trygg.ingest.scaip_mrq import Snu
from trygg.model import DeadLetter, Event, EventPayload, event_of
from trygg.registry import Device

_payload = TypeAdapter(EventPayload)
# The fast path: a whole message (an object or an array) in one pass of
# pydantic's own JSON parser. Anything it refuses takes the slow path below,
# which finds and words each problem, item by item.
_message = TypeAdapter(EventPayload | list[EventPayload])


@dataclass(frozen=True)
class DecodeLimits:
    """What the decoder accepts; each limit is a setting."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES  # TRYGG_MAX_PAYLOAD_BYTES
    max_batch: int = 1000
    # A device clock ahead of ours is not refused: its alarms must still page. The
    # rule engine judges such a clock (device-clock, docs/rules.md) and evaluates
    # its events at the time they arrive. A century is "no limit" that still adds
    # to a datetime without overflow.
    max_future: timedelta = timedelta(days=36525)
    max_age: timedelta = timedelta(days=7)  # older than this is not live data


@dataclass
class Decoded:
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # (topic, payload) to publish back to the device once the message is
    # handed off: the SCAIP <mrs> for a message on the scaip channel.
    reply: tuple[str, bytes] | None = None


def parse_topic(topic: str, site: str) -> tuple[str, str] | None:
    """``trygg/{site}/devices/{device}/{channel}`` -> (device, channel)."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "trygg" and parts[1] == site and parts[2] == "devices":
        return parts[3], parts[4]
    return None


def _describe(exc: ValidationError, prefix: str) -> str:
    msgs = []
    for err in exc.errors()[:3]:
        # A location names the payload's own keys: shown short and escaped.
        loc = ".".join(str(p) if len(str(p)) <= 32 else repr(str(p)[:32]) for p in err["loc"])
        msg = err["msg"]
        msgs.append(f"{prefix}{'.' + loc if loc else ''}: {msg}")
    more = len(exc.errors()) - 3
    return "; ".join(msgs) + (f"; and {more} more" if more > 0 else "")


def _enriched(p: EventPayload, device: Device) -> Event:
    """A validated payload as an Event of its device (``event_of``)."""
    return event_of(p, device.id, device.resident, device.kind, device.room)


def _raw(item: Any, batch: bool, payload: bytes) -> bytes:
    """The bytes a dead letter keeps: the one bad item of a batch, else the payload."""
    return orjson.dumps(item) if batch else payload


def _letter(
    topic: str, raw: bytes, reason: str, received_at: datetime, device: str | None
) -> DeadLetter:
    if isinstance(raw, PayloadHead):
        return DeadLetter(topic, bytes(raw), reason, received_at, device, raw.size, raw.sha256)
    return DeadLetter(topic, raw, reason, received_at, device)


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class Decoder:
    """Turns one MQTT message into events for known devices, or dead letters."""

    def __init__(
        self, site: str, devices: Mapping[str, Device], limits: DecodeLimits | None = None
    ):
        self.site = site
        self.devices = devices
        self.limits = limits or DecodeLimits()

    def decode(self, topic: str, payload: bytes, received_at: datetime) -> Decoded:
        out = Decoded()

        def dead(reason: str, raw: bytes = payload, device: str | None = None) -> Decoded:
            out.dead.append(_letter(topic, raw, reason, received_at, device))
            return out

        # The size first: nothing reads a payload above the limit (nor a head).
        if len(payload) > self.limits.max_payload_bytes or type(payload) is PayloadHead:
            return self._too_large(topic, payload, size_of(payload), received_at)
        where = parse_topic(topic, self.site)
        if where is None:
            return dead(f"topic {topic!r} is not trygg/{self.site}/devices/<device>/events")
        device_id, channel = where
        if channel == "scaip":
            return self._decode_scaip(topic, payload, received_at, device_id)
        if channel != "events":
            return dead(f"channel {channel!r} is not handled here", device=device_id)
        device = self.devices.get(device_id)
        if device is None:
            return dead(
                f"unknown device {device_id!r}: register it before it publishes", device=device_id
            )
        fast = self._fast(payload, received_at, device)
        if fast is not None:
            out.events = fast
            return out
        try:
            doc = orjson.loads(payload)
        except (orjson.JSONDecodeError, RecursionError) as exc:
            return dead(f"not JSON: {str(exc)[:120]}", device=device_id)
        if isinstance(doc, dict):
            items: list[Any] = [doc]
            batch = False
        elif isinstance(doc, list):
            items, batch = doc, True
            if not items:
                return dead("an empty JSON array holds no events", device=device_id)
            if len(items) > self.limits.max_batch:
                return dead(
                    f"a batch of {len(items)} events exceeds the limit of {self.limits.max_batch}",
                    device=device_id,
                )
        else:
            return dead(
                f"expected a JSON object or array of objects, got {type(doc).__name__}",
                device=device_id,
            )
        for i, item in enumerate(items):
            prefix = f"event[{i}]" if batch else "event"
            if not isinstance(item, dict):
                dead(
                    f"{prefix}: expected a JSON object, got {type(item).__name__}",
                    _raw(item, batch, payload),
                    device_id,
                )
                continue
            try:
                p = _payload.validate_python(item)
            except ValidationError as exc:
                dead(_describe(exc, prefix), _raw(item, batch, payload), device_id)
                continue
            skewed = self._skew(p.time, received_at, prefix)
            if skewed:
                dead(skewed, _raw(item, batch, payload), device_id)
                continue
            out.events.append(_enriched(p, device))
        return out

    def _fast(self, payload: bytes, received_at: datetime, device: Device) -> list[Event] | None:
        """The events of a message that is valid throughout, or None (take the slow path)."""
        try:
            parsed = _message.validate_json(payload)
        except (ValidationError, ValueError, RecursionError):
            return None
        items = [parsed] if isinstance(parsed, EventPayload) else parsed
        if not items or len(items) > self.limits.max_batch:
            return None
        try:
            lo, hi = received_at - self.limits.max_age, received_at + self.limits.max_future
        except OverflowError:  # a limit set too large to add
            lo, hi = self._window(received_at)
        for p in items:
            if not lo <= p.time <= hi:
                return None
        return [_enriched(p, device) for p in items]

    def _window(self, received_at: datetime) -> tuple[datetime, datetime]:
        """The times the skew limits accept (clamped: a limit may be set very large)."""
        try:
            lo = received_at - self.limits.max_age
        except OverflowError:
            lo = _EARLIEST
        try:
            hi = received_at + self.limits.max_future
        except OverflowError:
            hi = _LATEST
        return lo, hi

    def _too_large(self, topic: str, payload: bytes, size: int, received_at: datetime) -> Decoded:
        """A payload refused unread: above the limit, or only its head came (PayloadHead)."""
        out = Decoded()
        limit = self.limits.max_payload_bytes
        if size > limit:
            reason = f"of {size} bytes exceeds the limit of {limit}"
        else:  # the receiver's limit is below the decoder's: it cut a payload we would read
            reason = (
                f"of {size} bytes came cut to its first {len(payload)} bytes: "
                f"the MQTT receiver's limit is below the decoder's ({limit})"
            )
        where = parse_topic(topic, self.site)
        device = where[0] if where else None
        if where is not None and where[1] == "scaip":
            reason = f"message {reason}"  # SCAIP's own word, as scaip.parse_mrq says it
            out.reply = (
                topic + "/response",
                scaip.build_mrs("", Snu.MESSAGE_TOO_LONG, reason),
            )
            reason = f"scaip: {reason}"
        else:
            reason = f"payload {reason}"
        out.dead.append(_letter(topic, payload, reason, received_at, device))
        return out

    def _skew(self, when: datetime, received_at: datetime, prefix: str) -> str | None:
        """Why ``when`` is too far from the receiver's clock, or None."""
        skew = when - received_at
        if skew > self.limits.max_future:
            return (
                f"{prefix}.time is {skew} ahead of the receiver's clock "
                f"(limit {self.limits.max_future}): check the device clock"
            )
        if -skew > self.limits.max_age:
            return f"{prefix}.time is {-skew} old (limit {self.limits.max_age})"
        return None

    def _decode_scaip(
        self, topic: str, payload: bytes, received_at: datetime, device_id: str
    ) -> Decoded:
        """SCAIP <mrq> -> at most one event, and always an <mrs> reply (ref echoed if readable)."""
        out = Decoded()

        def reject(snu: Snu, reason: str, ref: str = "", cve: str | None = None) -> Decoded:
            out.dead.append(_letter(topic, payload, f"scaip: {reason}", received_at, device_id))
            out.reply = (topic + "/response", scaip.build_mrs(ref, snu, reason, cve))
            return out

        device = self.devices.get(device_id)
        if device is None:
            # "Not treated": the local unit should try its secondary receiver. The
            # ref is echoed whenever it can be read: on MQTT it is the only way
            # for the unit to match the reply to its request.
            return reject(
                Snu.NOT_TREATED,
                f"unknown device {device_id!r}: register it before it publishes",
                scaip.peek_ref(payload),
            )
        result = scaip.handle_mrq(payload, self.limits.max_payload_bytes)
        if result.event is None:
            return reject(result.snu, result.ste, result.ref, result.cve)
        m = result.event
        item: dict[str, Any] = {
            "id": m.id,
            "type": m.type.value,
            "time": (m.time or received_at).isoformat(),
            "value": m.value,
            "room": m.room.value if m.room else None,
        }
        if m.position is not None:
            item["position"] = {"lat": m.position[0], "lon": m.position[1]}
        try:
            p = _payload.validate_python(item)
        except ValidationError as exc:
            return reject(Snu.WRONG_DATA_CONTENT, _describe(exc, "mrq"), result.ref)
        if m.time is not None:
            skewed = self._skew(p.time, received_at, "mrq.lge/tim")
            if skewed:
                return reject(Snu.WRONG_DATA_CONTENT, skewed, result.ref)
        out.events.append(_enriched(p, device))
        out.reply = (topic + "/response", result.reply())
        return out
