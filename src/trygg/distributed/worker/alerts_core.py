"""The alerts step without Faust: one resident's alerts state and one signal, reset,
tick or staff action in, the new state, the alert records and the notifications
to send out.

``AlertsCore`` rebuilds the embedded runner's ``Gatekeeper`` from the resident's
alert records, applies the record and runs the ``Escalator``; the alerts state keeps
the recent signal keys, so a signal taken in again is dropped, and alert ids are
derived from what raised them (docs/distributed.md, "Delivery guarantees").
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from trygg.alerts import lifecycle as lc
from trygg.alerts.alert import Alert, Record
from trygg.alerts.decisions import Decision
from trygg.alerts.directory import Directory
from trygg.alerts.escalation import EscalationStep, Escalator
from trygg.alerts.gates import Gatekeeper
from trygg.alerts.routing_config import RoutingConfig
from trygg.alerts.silences import Silence, SilenceScope
from trygg.distributed import codecs
from trygg.distributed.worker.clocks import timestamp
from trygg.registry import Registry
from trygg.store import spooled

RECENT_SIGNALS = 64
ALERT_ID_NAMESPACE = uuid.UUID("5f0c8f0e-3f57-4a53-9b8e-7d1f1a6c2b11")


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

    @staticmethod
    def alert_id_of(resident: str, signal: Any) -> str:
        """The id of the alert ``signal`` raises, if it raises one (the first new alert
        of its step): what the bridge's relay watches the notifications topic for."""
        return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{resident}|{codecs.signal_key(signal)}|1"))

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
        out.deadline = timestamp(nd)
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
