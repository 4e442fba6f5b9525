"""Quality gates: what happens to a signal before anyone is disturbed.

The :class:`Gatekeeper` holds the open alerts and the silences in memory and
turns each signal (and each gated event: ``alarm.reset``, ``alarm.aborted``,
``alarm.cancelled``, a session's position) into a :class:`Decision`:

========== ======================================================== =======
kind       when                                                     routed
========== ======================================================== =======
raised     a new alert                                              yes
suppressed a new alert under a silence or inhibited by an offline   no
           device: stored with the reason, never routed
held       a new yellow/green alert while a red alert for the same  later
           resident is fresh: routed when the hold ends
repeated   the rule fired again while its alert is open: counted    no
folded     the rule flaps: folded into one alert flagged for the    no
           innovation specialist
released   a held alert whose hold ended, or a silenced alert       yes
           whose silence ended while it is still open
cancelled  auto-resolve before anyone answered (rule clear, reset)  no
resolved   a technical alert cleared after it was answered          no
cleared    the condition went away while staff handle it: noted     no
updated    a new position from the alarm's message session: noted   no
ignored    nothing to do (clear with no open alert, other events)   no
========== ======================================================== =======

Each decision carries the alert as it now is and the records appended, so
the I/O layer persists exactly those (compare-and-set on ``previous_version``)
and routes the alert when ``decision.route`` is true.

Pure: no I/O, no wall clock; ids come from the injected ``new_id``.

The gates' configuration is in :mod:`trygg.alerts.gate_config`, silences in
:mod:`trygg.alerts.silences`, the directory in :mod:`trygg.alerts.directory`
and the decisions in :mod:`trygg.alerts.decisions`; what the gatekeeper holds
in memory, and looks up there, in :mod:`trygg.alerts.gate_state`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime

import trygg.alerts.lifecycle as lc
from trygg.alerts.alert import SYSTEM, Alert, CancelReason, Outcome
from trygg.alerts.decisions import Decision, DecisionKind, changed
from trygg.alerts.directory import Directory
from trygg.alerts.gate_config import (
    GateConfig,
)
from trygg.alerts.gate_state import GateState
from trygg.alerts.silences import Silence
from trygg.durations import format_duration
from trygg.model import (
    Event,
    EventType,
    Signal,
    SignalAction,
    session_of,
)

__all__ = ["GATED_TYPES", "Gatekeeper", "gated"]

# Device events the gates act on (``Gatekeeper.on_event``); the runners pass
# only these, so that ordinary events cost the gates nothing.
GATED_TYPES = frozenset({EventType.ALARM_RESET, EventType.ALARM_ABORTED, EventType.ALARM_CANCELLED})


def gated(event: Event) -> bool:
    """Whether ``event`` matters to the gates: a reset, a session's abort, a
    resident's cancel, or a position (noted on the alert of its message session:
    the alarm's own, or a SCAIP IN's). Pass it after the engine's signals for
    the same event, so that an alarm's own position reaches its new alert."""
    return event.type in GATED_TYPES or event.position is not None


# ------------------------------------------------------------------- gatekeeper


class Gatekeeper(GateState):
    """Open alerts and silences in memory; signals and events in, decisions out.

    Rebuild it on start with :meth:`rebuild` from the open alerts, the alerts
    closed within ``config.lookback`` and the silences not yet ended. After
    a staff action or an escalation record changes an alert elsewhere, hand the
    new alert to :meth:`update`.
    """

    def __init__(
        self,
        config: GateConfig | None = None,
        *,
        new_id: Callable[[], str],
        directory: Directory | None = None,
    ) -> None:
        super().__init__(config, directory)  # the open alerts, fires and silences held
        self._new_id = new_id

    @classmethod
    def rebuild(
        cls,
        config: GateConfig | None,
        alerts: Iterable[Alert],
        silences: Iterable[Silence] = (),
        *,
        new_id: Callable[[], str],
        directory: Directory | None = None,
    ) -> Gatekeeper:
        """A gatekeeper as it was, from stored alerts (open ones and those closed
        within ``config.lookback``) and stored silences."""
        gk = cls(config, new_id=new_id, directory=directory)
        for a in sorted(alerts, key=lambda a: (a.raised_at, a.id)):
            for t in a.fire_times():
                gk._fires.setdefault((a.resident, a.rule), deque()).append(t)
            gk.update(a)
        for k, q in gk._fires.items():
            gk._fires[k] = deque(sorted(q))
        for s in silences:
            gk.add_silence(s)
        return gk

    # ------------------------------------------------------------- signals

    def on_signal(self, signal: Signal, now: datetime) -> Decision:
        """Gate one signal from the rule engine."""
        if signal.action is SignalAction.FIRE:
            return self._on_fire(signal, now)
        return self._on_clear(signal, now)

    def _on_fire(self, signal: Signal, now: datetime) -> Decision:
        cfg = self.config
        fires = self._count_fire(signal.resident, signal.rule, now)
        flapping = cfg.flapping.enabled and fires > cfg.flapping.max_fires
        window_s = cfg.flapping.window.total_seconds()
        key = self._key(signal.resident, signal.rule, signal.device)
        current = self._open.get(key) if cfg.dedup.enabled else None

        if current is not None:
            a = lc.repeat(current, now, signal)
            kind = DecisionKind.FOLDED if a.flapping else DecisionKind.REPEATED
            reason = f"repeat {a.repeat_count} of the open alert"
            if flapping and not a.flapping:
                a = lc.flag_flapping(a, now, fires, window_s)
                kind = DecisionKind.FOLDED
                reason = (
                    f"rule {signal.rule} fired {fires} times in "
                    f"{format_duration(cfg.flapping.window)}: flapping, folded into this alert"
                )
            if a.suppressed and a.silence_id is not None and self._suppression(signal, now) is None:
                a = lc.release(a, now, "the silence has ended and the rule fired again")
                kind = DecisionKind.RELEASED
                reason = "silence ended; the rule fired again"
            self._store(a)
            return changed(kind, current, a, reason)

        team = self.directory.team_of(signal.resident)
        supp = self._suppression(signal, now)
        holder = self._red_holder(signal, now) if supp is None else None
        held_until = holder.raised_at + cfg.inhibition.red_hold_window if holder else None
        a = lc.raise_alert(
            signal,
            alert_id=self._new_id(),
            team=team,
            now=now,
            suppressed_reason=supp[0] if supp else None,
            silence_id=supp[1] if supp else None,
            held_until=held_until,
            held_by=holder.id if holder else None,
            flapping=flapping,
        )
        self._store(a)
        if supp is not None:
            return changed(DecisionKind.SUPPRESSED, None, a, supp[0])
        if holder is not None and held_until is not None:
            return changed(
                DecisionKind.HELD,
                None,
                a,
                f"held back until {held_until.isoformat()} by red alert {holder.id}",
            )
        if flapping:
            return changed(
                DecisionKind.RAISED,
                None,
                a,
                f"rule {signal.rule} fired {fires} times in "
                f"{format_duration(cfg.flapping.window)}: flapping, one alert from now on",
            )
        return changed(DecisionKind.RAISED, None, a)

    def _on_clear(self, signal: Signal, now: datetime) -> Decision:
        key = self._key(signal.resident, signal.rule, signal.device)
        current = self._open.get(key)
        if current is None:
            return Decision(DecisionKind.IGNORED, None, "no open alert to clear")
        dev = signal.device
        if dev is not None and current.devices and current.devices != (dev,):
            # one alert for the resident's devices: it closes when the last is well
            if dev not in current.devices:
                return Decision(DecisionKind.IGNORED, None, f"device {dev} is not in the alert")
            a = lc.device_cleared(current, now, dev, f"rule clear for device {dev}")
            self._store(a)
            return changed(DecisionKind.UPDATED, current, a, f"device {dev} cleared")
        ar = self.config.auto_resolve
        return self._close_or_note(
            current,
            now,
            cause="rule clear",
            unacked_cancel=ar.clear_cancels_unacknowledged and not current.flapping,
            cancel_reason=CancelReason.AUTO_RESOLVED,
            resolve_after_ack=current.rule in ar.technical_rules and not current.flapping,
        )

    def _close_or_note(
        self,
        current: Alert,
        now: datetime,
        *,
        cause: str,
        unacked_cancel: bool,
        cancel_reason: CancelReason,
        resolve_after_ack: bool,
    ) -> Decision:
        if not current.state.is_acknowledged and unacked_cancel:
            a = lc.cancel(current, now, SYSTEM, cancel_reason, note=f"{cause} before answer")
            kind = DecisionKind.CANCELLED
        elif current.state.is_acknowledged and resolve_after_ack:
            a = lc.resolve(current, now, SYSTEM, outcome=Outcome.AUTO_RESOLVED, note=cause)
            kind = DecisionKind.RESOLVED
        else:
            a = lc.clear(current, now, cause)
            kind = DecisionKind.CLEARED
        self._store(a)
        return changed(kind, current, a, cause)

    # ------------------------------------------------------------- events

    def on_event(self, event: Event, now: datetime) -> list[Decision]:
        """Gate a device event: a reset, a session's abort, a resident's cancel, or
        a session's new position (``gated``); other events change nothing."""
        out: list[Decision] = []
        if event.type is EventType.ALARM_RESET:
            out = self._on_reset(event, now)
        elif event.type is EventType.ALARM_ABORTED:
            out = self._on_abort(event, now)
        elif event.type is EventType.ALARM_CANCELLED:
            out = self._on_cancel(event, now)
        if event.position is not None:
            out.extend(self._on_position(event, now))
        return out

    def _on_reset(self, event: Event, now: datetime) -> list[Decision]:
        ar = self.config.auto_resolve
        return self._end_unit_alerts(
            self._from_same_unit(event, ar.reset_rules, unit_answers_for_all=True),
            now,
            f"alarm.reset from device {event.device}",
            unacked_cancel=ar.reset_cancels_unacknowledged,
            cancel_reason=CancelReason.DEVICE_RESET,
        )

    def _on_abort(self, event: Event, now: datetime) -> list[Decision]:
        """SS 91100 §4.4: the unit aborts its own session (no snu 0 in time) and
        goes on with its next alarm action. Only that session's alert closes."""
        ar = self.config.auto_resolve
        return self._end_unit_alerts(
            self._session_alerts(event),
            now,
            f"message session {session_of(event.id)} aborted by unit {event.device}",
            unacked_cancel=ar.abort_cancels_unacknowledged,
            cancel_reason=CancelReason.ABORTED_BY_UNIT,
        )

    def _on_cancel(self, event: Event, now: datetime) -> list[Decision]:
        """The resident's deliberate cancel: an unanswered alert of ``cancel_rules``
        from the same unit is cancelled; an answered one only gets a ``cleared``
        record (the staff handling it decide)."""
        ar = self.config.auto_resolve
        # SS 91100: the resident's cancel ends only what their own unit raised
        return self._end_unit_alerts(
            self._from_same_unit(event, ar.cancel_rules, unit_answers_for_all=False),
            now,
            f"cancelled by the resident at device {event.device}",
            unacked_cancel=True,
            cancel_reason=CancelReason.RESIDENT_CANCELLED,
        )

    def _end_unit_alerts(
        self,
        alerts: list[Alert],
        now: datetime,
        cause: str,
        *,
        unacked_cancel: bool,
        cancel_reason: CancelReason,
    ) -> list[Decision]:
        """What a unit's reset, abort or cancel does to ``alerts``: an unanswered
        one is cancelled if ``unacked_cancel``, else (and an answered one always)
        only gets a ``cleared`` record."""
        return [
            self._close_or_note(
                a,
                now,
                cause=cause,
                unacked_cancel=unacked_cancel,
                cancel_reason=cancel_reason,
                resolve_after_ack=False,
            )
            for a in alerts
        ]

    def _on_position(self, event: Event, now: datetime) -> list[Decision]:
        """A position within a session (the alarm's own, or a SCAIP IN, SS 91100
        §4.3): noted on the session's open alerts, which then show it
        (``Alert.position``). A position the alert already shows is not noted again."""
        assert event.position is not None
        out: list[Decision] = []
        for a in self._session_alerts(event):
            if not a.is_open or a.position == event.position:
                continue
            b = lc.update_position(a, now, event.position, event.id)
            self._store(b)
            out.append(changed(DecisionKind.UPDATED, a, b, "position updated by the unit"))
        return out

    # ------------------------------------------------------------- timers

    def release_due(self, now: datetime) -> list[Decision]:
        """Release held alerts whose hold ended (or whose red alert closed) and
        silenced alerts whose silence ended while they are still open."""
        out: list[Decision] = []
        for a in self.open_alerts():
            reason: str | None = None
            if a.held_until is not None:
                holder = self._by_id.get(a.held_by or "")
                if now >= a.held_until:
                    reason = "the red alert's hold-back window ended"
                elif holder is None:
                    reason = f"red alert {a.held_by} is closed"
            elif a.suppressed and a.silence_id is not None:
                s = self._silences.get(a.silence_id)
                if s is None or now >= s.end:
                    other = self._silence_still_applies(a, now)
                    if other is None:
                        reason = "the silence has ended and the alert is still open"
            if reason is not None:
                b = lc.release(a, now, reason)
                self._store(b)
                out.append(changed(DecisionKind.RELEASED, a, b, reason))
        self.prune(now)
        return out

    def next_deadline(self, now: datetime) -> datetime | None:
        """When :meth:`release_due` next has something to do (None: nothing pending)."""
        times: list[datetime] = []
        for a in self._by_id.values():
            if a.held_until is not None:
                times.append(a.held_until)
            elif a.suppressed and a.silence_id is not None:
                s = self._silences.get(a.silence_id)
                times.append(s.end if s is not None else now)
        return min(times) if times else None
