"""The generated message (:class:`SimEvent`): its MQTT payload and replay
line, built by hand (the hot path), and local ISO times cached per minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo


class SimEvent(NamedTuple):
    """One generated message.

    ``ts`` is the event time in epoch seconds, ``time`` the same as ISO 8601
    with the local offset. A ``duplicate`` is a re-send of the event just
    before it (same id and payload). A malformed message has ``malformed``
    set to its kind and ``raw`` to the bytes to publish; it is not an event.
    """

    ts: int
    device: str
    id: str
    type: str
    time: str
    value: float | int | None = None
    room: str | None = None
    duplicate: bool = False
    malformed: str | None = None
    raw: bytes | None = None

    def payload(self) -> dict[str, Any]:
        """The MQTT payload object (DESIGN.md contract)."""
        p: dict[str, Any] = {"id": self.id, "type": self.type, "time": self.time}
        if self.value is not None:
            p["value"] = self.value
        if self.room is not None:
            p["room"] = self.room
        return p

    def payload_json(self) -> str:
        if self.raw is not None:
            return self.raw.decode("utf-8", "replace")
        s = f'{{"id":"{self.id}","type":"{self.type}","time":"{self.time}"'
        if self.value is not None:
            s += f',"value":{self.value}'
        if self.room is not None:
            s += f',"room":"{self.room}"'
        return s + "}"

    def payload_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return self.payload_json().encode()

    def jsonl(self) -> str:
        """The replay line: the payload plus ``"device"`` (no newline)."""
        return f'{{"device":"{self.device}",' + self.payload_json()[1:]


class TimeFormat:
    """Epoch seconds -> ISO 8601 local time with offset, cached per minute."""

    __slots__ = ("cache", "tz")

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.cache: dict[int, tuple[str, str]] = {}

    def __call__(self, ts: int) -> str:
        m = ts // 60
        p = self.cache.get(m)
        if p is None:
            dt = datetime.fromtimestamp(m * 60, self.tz)
            off = dt.utcoffset() or timedelta(0)
            secs = int(off.total_seconds())
            sign = "+" if secs >= 0 else "-"
            hh, mm = divmod(abs(secs) // 60, 60)
            p = (dt.strftime("%Y-%m-%dT%H:%M:"), f"{sign}{hh:02d}:{mm:02d}")
            if len(self.cache) > 100_000:
                self.cache.clear()
            self.cache[m] = p
        return f"{p[0]}{ts % 60:02d}{p[1]}"
