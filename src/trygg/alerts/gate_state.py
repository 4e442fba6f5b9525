"""What the quality gates hold in memory, and what they look up in it.

A :class:`GateState` holds the open alerts (by dedup key and by id), the red
alerts still open, each resident's and rule's recent fire times and the
silences. Its lookups say what a signal or a device event meets there: the
silence that matches it, the open offline alert of a device its rule depends
on, the red alert that holds it back, the open alerts a reset, a cancel or a
session's message concerns. The decisions are the gatekeeper's
(:class:`trygg.alerts.gates.Gatekeeper`, a ``GateState``). Pure: no I/O, no
wall clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from trygg.alerts.alert import Alert
from trygg.alerts.directory import Directory
from trygg.alerts.gate_config import GateConfig
from trygg.alerts.silences import Silence, SilenceScope
from trygg.model import DeviceKind, Event, Severity, Signal, SignalAction, session_of

__all__ = ["GateState"]

Key = tuple[str, str, str | None]


def _devices(a: Alert) -> tuple[str, ...]:
    """The devices an alert is about now (an alert stored before alerts kept
    the list names only its first)."""
    if a.devices:
        return a.devices
    return (a.device,) if a.device is not None else ()


class GateState:
    """The open alerts, recent fires and silences the gates hold, and their lookups."""

    def __init__(self, config: GateConfig | None, directory: Directory | None) -> None:
        self.config = config or GateConfig()
        self.directory = directory or Directory()
        self._open: dict[Key, Alert] = {}
        self._by_id: dict[str, Alert] = {}
        self._fires: dict[tuple[str, str], deque[datetime]] = {}
        self._recent_red: dict[str, Alert] = {}
        self._silences: dict[str, Silence] = {}

    # ------------------------------------------------------------- state

    def update(self, alert: Alert) -> None:
        """Take in an alert changed outside the gates (staff action, escalation)."""
        key = self._key_of(alert)
        if alert.is_open:
            self._by_id[alert.id] = alert
            cur = self._open.get(key)
            if cur is None or cur.id == alert.id or cur.raised_at <= alert.raised_at:
                self._open[key] = alert
        else:
            self._by_id.pop(alert.id, None)
            cur = self._open.get(key)
            if cur is not None and cur.id == alert.id:
                del self._open[key]
        if alert.severity is Severity.RED:
            if alert.is_open:
                self._recent_red[alert.id] = alert
            else:
                self._recent_red.pop(alert.id, None)

    def get(self, alert_id: str) -> Alert | None:
        return self._by_id.get(alert_id)

    def open_alerts(self) -> list[Alert]:
        return sorted(self._by_id.values(), key=lambda a: (a.raised_at, a.id))

    def open_for(self, resident: str, rule: str, device: str | None = None) -> Alert | None:
        """The open alert that a fire of ``rule`` would fold into, if any."""
        return self._open.get(self._key(resident, rule, device))

    def add_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence

    def end_silence(self, silence_id: str, now: datetime, actor: str) -> Silence:
        """End a silence early (or remove a future one); returns the stored form."""
        s = self._silences.get(silence_id)
        if s is None:
            raise KeyError(f"no silence {silence_id!r}")
        end = max(min(s.end, now), s.start + timedelta(microseconds=1))
        ended = s.model_copy(update={"end": end, "ended_by": actor})
        self._silences[silence_id] = ended
        return ended

    def silences(self, now: datetime | None = None) -> list[Silence]:
        """All silences held (or only those active at ``now``)."""
        out = list(self._silences.values())
        if now is not None:
            out = [s for s in out if s.active(now)]
        return sorted(out, key=lambda s: (s.start, s.id))

    def prune(self, now: datetime) -> None:
        """Forget silences that ended and fire times older than the lookback."""
        for sid, s in list(self._silences.items()):
            if s.end <= now and not any(a.silence_id == sid for a in self._by_id.values()):
                del self._silences[sid]
        horizon = now - self.config.lookback
        for k, q in list(self._fires.items()):
            while q and q[0] <= horizon:
                q.popleft()
            if not q:
                del self._fires[k]

    def _key(self, resident: str, rule: str, device: str | None) -> Key:
        if not self.config.dedup.per_device:
            device = None
        return (resident, rule, device)

    def _key_of(self, a: Alert) -> Key:
        return self._key(a.resident, a.rule, a.device)

    def _count_fire(self, resident: str, rule: str, now: datetime) -> int:
        q = self._fires.setdefault((resident, rule), deque())
        q.append(now)
        horizon = now - self.config.flapping.window
        while q and q[0] <= horizon:
            q.popleft()
        return len(q)

    def _store(self, alert: Alert) -> None:
        self.update(alert)

    # ------------------------------------------------------------- lookups

    def _depends(self, rule: str, kind: DeviceKind | None) -> bool:
        """Whether ``rule`` depends on a device of ``kind`` (unknown kind: yes)."""
        if kind is None:
            return True
        deps = self.config.rule_devices.get(rule)
        return deps is None or kind in deps

    def _silence_for(self, signal: Signal, now: datetime) -> Silence | None:
        for s in self.silences(now):
            if s.rules and signal.rule not in s.rules:
                continue
            if s.scope is SilenceScope.RESIDENT and s.target == signal.resident:
                return s
            if s.scope is SilenceScope.DEVICE:
                if signal.device == s.target:
                    return s
                info = self.directory.devices.get(s.target)
                if (
                    info is not None
                    and info.resident == signal.resident
                    and signal.device is None
                    and signal.rule in self.config.rule_devices
                    and info.kind in self.config.rule_devices[signal.rule]
                ):
                    return s
        return None

    def _offline_inhibitor(self, signal: Signal) -> tuple[Alert, str] | None:
        """The open offline alert and its device that ``signal``'s rule depends on."""
        inh = self.config.inhibition
        if signal.rule not in inh.offline_inhibits:
            return None
        for a in self._by_id.values():
            if a.rule != inh.offline_rule or a.resident != signal.resident:
                continue
            for d in _devices(a):
                if self._depends(signal.rule, self.directory.kind_of(d)):
                    return a, d
        return None

    def _red_holder(self, signal: Signal, now: datetime) -> Alert | None:
        inh = self.config.inhibition
        if not inh.red_holds_back or signal.severity not in inh.held_severities:
            return None
        best: Alert | None = None
        for a in self._recent_red.values():
            if (
                a.resident == signal.resident
                and a.is_open
                and not a.suppressed
                and a.raised_at <= now < a.raised_at + inh.red_hold_window
                and (best is None or a.raised_at > best.raised_at)
            ):
                best = a
        return best

    def _suppression(self, signal: Signal, now: datetime) -> tuple[str, str | None] | None:
        """(reason, silence id) if a new alert for ``signal`` would be suppressed."""
        s = self._silence_for(signal, now)
        if s is not None:
            return s.describe(), s.id
        off = self._offline_inhibitor(signal)
        if off is not None:
            return f"inhibited: device {off[1]} is offline (alert {off[0].id})", None
        return None

    def _from_same_unit(
        self, event: Event, rules: Iterable[str], *, unit_answers_for_all: bool
    ) -> list[Alert]:
        """The resident's open alerts of ``rules`` that a reset or cancel from
        ``event``'s device may end, raised no later than the event (an older
        reset or cancel ends nothing): those the device itself fired
        (``Alert.devices``), or -- a reset from the alarm unit
        (``reset_all_kinds``), which answers for the detectors paired with it --
        any of them. An alert that names no device (a sequence over several, or
        stored before alerts named theirs) goes by the kinds of device its rule
        depends on."""
        ar = self.config.auto_resolve
        kind = self.directory.kind_of(event.device) or event.kind
        whole_unit = unit_answers_for_all and kind in ar.reset_all_kinds
        return [
            a
            for a in self.open_alerts()
            if a.resident == event.resident
            and a.rule in rules
            and (
                whole_unit
                or (event.device in _devices(a) if _devices(a) else self._depends(a.rule, kind))
            )
            and (a.signal_at is None or event.time >= a.signal_at)
        ]

    def _session_alerts(self, event: Event) -> list[Alert]:
        """Open alerts raised by (or updated from) ``event``'s message session: an
        event of theirs has the same session (``session_of``), and they are the
        resident's and, when the alert names one, the device's."""
        ref = session_of(event.id)
        # Not open_alerts(): that sorts, and every position report comes here.
        return [
            a
            for a in list(self._by_id.values())
            if a.resident == event.resident
            and (a.device is None or a.device == event.device)
            and any(session_of(e) == ref for e in a.events)
        ]

    def _silence_still_applies(self, a: Alert, now: datetime) -> Silence | None:
        probe = Signal(
            SignalAction.FIRE,
            a.rule,
            a.resident,
            now,
            a.code,
            a.severity,
            a.catalogue_version,
            device=a.device,
        )
        return self._silence_for(probe, now)
