"""The alert and its append-only records.

An :class:`Alert` is a *fold* of its records: every field is derived from the
records by :func:`Alert.from_records`, and every change to an alert appends a
:class:`Record` and folds it in (:func:`append`). That single rule is what
makes the I/O layer simple and restarts safe:

- persist the records (append-only; ``(alert_id, seq)`` is unique) and,
  for fast queries, a snapshot row of the alert (``to_dict``);
- on start, rebuild an alert from its records, or load the snapshot;
  both give the same alert.

``version`` is the number of records; it is the optimistic-concurrency token
the I/O layer compares-and-sets on (``UPDATE ... WHERE version = :seen``).

No I/O, no wall clock, no globals: every function takes ``now`` or a record
time from its caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from trygg.model import Severity

SYSTEM = "system"
"""The actor name used for steps that trygg takes itself (raise, notify, auto-resolve)."""


class State(StrEnum):
    """The main lifecycle state of an alert (DESIGN.md, contract: alerts)."""

    RAISED = "raised"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self not in (State.RESOLVED, State.CANCELLED)

    @property
    def is_acknowledged(self) -> bool:
        """Someone has answered: the state is acknowledged or later (and still open)."""
        return self in (State.ACKNOWLEDGED, State.ASSIGNED, State.ACCEPTED, State.ARRIVED)


OPEN_STATES = frozenset(s for s in State if s.is_open)


class Step(StrEnum):
    """What a record records. The first eight change the state; the rest are
    informational and leave the main state as it is."""

    RAISED = "raised"
    NOTIFIED = "notified"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    ARRIVED = "arrived"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"
    # informational
    ESCALATED = "escalated"  # escalation level >= 2 notified (data: level, targets)
    RENOTIFIED = "renotified"  # reminder while unacknowledged (data: level, n, targets)
    REPEATED = "repeated"  # the rule fired again while this alert was open (data: events)
    FLAPPING = "flapping"  # the rule flaps for this resident; flagged for the specialist
    CLEARED = "cleared"  # the condition went away (rule clear / device reset) but staff finish
    RELEASED = "released"  # a held or suppressed alert is routed after all (data: reason)
    NOTE = "note"  # a free-text comment by staff

    @property
    def changes_state(self) -> bool:
        return self.value in _STATE_OF_STEP


# A step that changes the state enters the state of its name.
_STATE_OF_STEP: dict[str, State] = {s.value: s for s in State}


class Outcome(StrEnum):
    """What the alert turned out to be: feedback for false-alarm statistics and
    for the innovation specialist's tuning. Given on resolve or cancel."""

    HELPED = "helped"  # help was needed and given
    NO_HELP_NEEDED = "no_help_needed"  # a real event, but the resident managed
    FALSE_ALARM = "false_alarm"  # the sensor or rule was wrong
    # Staff went, and nobody was at home: whether help was needed is unknown. Not
    # a false alarm (docs/alerts.md "Outcomes"); the KPI report counts it apart.
    NOT_AT_HOME = "not_at_home"
    TECHNICAL = "technical"  # a device or connectivity problem, fixed or reported
    TEST = "test"  # a test alarm (installation, service)
    AUTO_RESOLVED = "auto_resolved"  # closed by trygg: the condition went away
    OTHER = "other"


# What the tuning reports count as a false alert (docs/rules.md): staff found
# nothing wrong, or nothing that needed them. Also an alert cancelled with the
# reason false_alarm (it gets this outcome, trygg.alerts.lifecycle).
FALSE_OUTCOMES: frozenset[str] = frozenset(
    {Outcome.FALSE_ALARM.value, Outcome.NO_HELP_NEEDED.value}
)


class CancelReason(StrEnum):
    """Why an alert was cancelled rather than resolved."""

    DEVICE_RESET = "device_reset"  # alarm.reset from the device before anyone answered
    ABORTED_BY_UNIT = "aborted_by_unit"  # SCAIP RE: the unit aborted its message session
    RESIDENT_CANCELLED = "resident_cancelled"  # the resident cancelled at the unit or pendant
    FALSE_ALARM = "false_alarm"  # staff judged it false
    AUTO_RESOLVED = "auto_resolved"  # the rule's own clear signal before anyone answered
    DUPLICATE = "duplicate"  # the same incident is handled under another alert
    TEST = "test"  # a test alarm
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Record:
    """One append-only lifecycle record.

    ``seq`` is the record's position in its alert (0 for ``raised``); after it
    is appended the alert's version is ``seq + 1``. ``data`` holds only JSON
    values (str, int, float, bool, None, lists and dicts of them).
    """

    alert_id: str
    seq: int
    step: Step
    at: datetime
    actor: str
    note: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "seq": self.seq,
            "step": self.step.value,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "note": self.note,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        at = d["at"]
        return cls(
            alert_id=str(d["alert_id"]),
            seq=int(d["seq"]),
            step=Step(d["step"]),
            at=at if isinstance(at, datetime) else datetime.fromisoformat(str(at)),
            actor=str(d["actor"]),
            note=str(d.get("note") or ""),
            data=dict(d.get("data") or {}),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert: identity from its ``raised`` record, the rest folded from records.

    Build one with :func:`trygg.alerts.lifecycle.raise_alert`; change it only
    through the functions of :mod:`trygg.alerts.lifecycle` (which append a
    record and return a new ``Alert``).
    """

    id: str
    resident: str
    team: str
    rule: str
    catalogue_version: str
    code: str
    severity: Severity
    raised_at: datetime
    events: tuple[str, ...] = ()
    device: str | None = None
    title: str = ""
    signal_at: datetime | None = None
    state: State = State.RAISED
    repeat_count: int = 0
    last_fired_at: datetime | None = None
    suppressed: bool = False
    suppressed_reason: str | None = None
    silence_id: str | None = None
    held_until: datetime | None = None
    held_by: str | None = None
    flapping: bool = False
    acknowledged_by: str | None = None
    assignee: str | None = None
    outcome: Outcome | None = None
    cancel_reason: CancelReason | None = None
    closed_at: datetime | None = None
    escalation_level: int = 0
    renotify_count: int = 0
    last_notified_at: datetime | None = None
    records: tuple[Record, ...] = ()
    # The latest position the alarm's unit sent within its message session
    # (a SCAIP information update, SS 91100 §4.3), from a ``note`` record's data.
    position: tuple[float, float] | None = None
    # The devices whose signals fired into this alert and have not cleared, first
    # one first: one device-offline alert per resident lists every device that is
    # offline, and a reset or a resident's cancel ends only an alert its own unit
    # raised. From the ``raised`` and ``repeated`` records' ``device``, less the
    # ``note`` records' ``device_cleared``.
    devices: tuple[str, ...] = ()

    @property
    def version(self) -> int:
        """The optimistic-concurrency version: the number of records."""
        return len(self.records)

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    @property
    def held(self) -> bool:
        return self.held_until is not None

    @property
    def routed(self) -> bool:
        """Whether trygg routes this alert to people (not suppressed, not held)."""
        return not self.suppressed and self.held_until is None

    @property
    def dedup_key(self) -> tuple[str, str, str | None]:
        return (self.resident, self.rule, self.device)

    @property
    def last_at(self) -> datetime:
        return self.records[-1].at if self.records else self.raised_at

    def fire_times(self) -> list[datetime]:
        """When the rule fired into this alert: the raise and every repeat."""
        return [r.at for r in self.records if r.step in (Step.RAISED, Step.REPEATED)]

    # ----------------------------------------------------------------- records

    @staticmethod
    def from_records(records: Iterable[Record]) -> Alert:
        """Rebuild an alert from its stored records (first must be ``raised``)."""
        it = iter(records)
        try:
            first = next(it)
        except StopIteration:
            raise ValueError("an alert needs at least its 'raised' record") from None
        alert = _from_raised(first)
        for rec in it:
            alert = fold(alert, rec)
        return alert

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot (without records) for the alerts table / API."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "records":
                continue
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, StrEnum):
                v = v.value
            out[f.name] = v
        out["version"] = self.version
        return out


def _dt(v: Any) -> datetime | None:
    if v is None:
        return None
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def _from_raised(rec: Record) -> Alert:
    if rec.step is not Step.RAISED or rec.seq != 0:
        raise ValueError(f"alert {rec.alert_id}: the first record must be 'raised' with seq 0")
    d = rec.data
    suppressed_reason = d.get("suppressed_reason")
    return Alert(
        id=rec.alert_id,
        resident=str(d["resident"]),
        team=str(d["team"]),
        rule=str(d["rule"]),
        catalogue_version=str(d["catalogue_version"]),
        code=str(d["code"]),
        severity=Severity(d["severity"]),
        raised_at=rec.at,
        events=tuple(str(e) for e in d.get("events") or ()),
        device=d.get("device"),
        title=str(d.get("title") or ""),
        signal_at=_dt(d.get("signal_at")),
        suppressed=suppressed_reason is not None,
        suppressed_reason=suppressed_reason,
        silence_id=d.get("silence_id"),
        held_until=_dt(d.get("held_until")),
        held_by=d.get("held_by"),
        flapping=bool(d.get("flapping", False)),
        last_fired_at=rec.at,
        records=(rec,),
        devices=(str(d["device"]),) if d.get("device") else (),
    )


def fold(alert: Alert, rec: Record) -> Alert:
    """Apply one record to an alert (no validation: that is the lifecycle's job)."""
    if rec.alert_id != alert.id:
        raise ValueError(f"record for alert {rec.alert_id} applied to alert {alert.id}")
    if rec.seq != alert.version:
        raise ValueError(
            f"alert {alert.id}: record seq {rec.seq} does not follow version {alert.version}"
        )
    if rec.step is Step.RAISED:
        raise ValueError(f"alert {alert.id}: a second 'raised' record")
    records = (*alert.records, rec)
    changes: dict[str, Any] = {"records": records}
    s = rec.step
    if s.changes_state:
        changes["state"] = _STATE_OF_STEP[s.value]
    if s is Step.NOTIFIED:
        changes["escalation_level"] = max(alert.escalation_level, int(rec.data.get("level", 1)))
        changes["last_notified_at"] = rec.at
    elif s is Step.ESCALATED:
        changes["escalation_level"] = max(alert.escalation_level, int(rec.data["level"]))
        changes["last_notified_at"] = rec.at
    elif s is Step.RENOTIFIED:
        changes["renotify_count"] = alert.renotify_count + 1
        changes["last_notified_at"] = rec.at
    elif s is Step.ACKNOWLEDGED:
        changes["acknowledged_by"] = rec.actor
    elif s is Step.ASSIGNED:
        changes["assignee"] = str(rec.data["assignee"])
    elif s is Step.RESOLVED:
        changes["closed_at"] = rec.at
        out = rec.data.get("outcome")
        changes["outcome"] = Outcome(out) if out else None
    elif s is Step.CANCELLED:
        changes["closed_at"] = rec.at
        changes["cancel_reason"] = CancelReason(rec.data["reason"])
        out = rec.data.get("outcome")
        changes["outcome"] = Outcome(out) if out else None
    elif s is Step.REPEATED:
        new = [str(e) for e in rec.data.get("events") or () if e not in alert.events]
        changes["repeat_count"] = alert.repeat_count + 1
        changes["events"] = (*alert.events, *new)
        changes["last_fired_at"] = rec.at
        dev = rec.data.get("device")
        if dev and dev not in alert.devices:
            changes["devices"] = (*alert.devices, str(dev))
    elif s is Step.FLAPPING:
        changes["flapping"] = True
    elif s is Step.NOTE and rec.data.get("device_cleared"):
        gone = str(rec.data["device_cleared"])
        changes["devices"] = tuple(d for d in alert.devices if d != gone)
    elif s is Step.NOTE and isinstance(rec.data.get("position"), Mapping):
        pos = rec.data["position"]
        changes["position"] = (float(pos["lat"]), float(pos["lon"]))
        new = [str(e) for e in rec.data.get("events") or () if e not in alert.events]
        changes["events"] = (*alert.events, *new)
    elif s is Step.RELEASED:
        changes["suppressed"] = False
        changes["suppressed_reason"] = None
        changes["held_until"] = None
        changes["held_by"] = None
    return dataclasses.replace(alert, **changes)


def append(
    alert: Alert,
    step: Step,
    now: datetime,
    actor: str,
    note: str = "",
    data: Mapping[str, Any] | None = None,
) -> Alert:
    """Append a record (no validation) and return the new alert.

    Record times never go backwards: a ``now`` earlier than the last record
    (clock skew between workers) is recorded as the last record's time.
    """
    at = max(now, alert.last_at)
    rec = Record(alert.id, alert.version, step, at, actor, note, dict(data or {}))
    return fold(alert, rec)
