"""The alert service as the HTTP API and console see it, and what its two forms share.

trygg has one alert service per runner: the embedded runner's
(``trygg.runner.alerting.AlertService``: an in-process gatekeeper, records
through the spool) and the distributed runner's
(``trygg.distributed.alert_service.DistributedAlertService``: reads from the database,
actions through Kafka to the worker that owns the resident). The API
(``trygg.api.app.create_app``) is written against :class:`Alerts`, the
surface both offer; each class is checked against it where it is defined, so
a method that drifts in either fails mypy.

What the two do alike is written once, in :class:`AlertDesk`, which both
subclass: a staff action's course (the alert to act on, the lifecycle's
check, the counts and latencies), reading an alert back from its stored
records, finding silences, stamping access-log entries. What differs by
design stays in each class, behind the hooks :class:`AlertDesk` names: where
the alert and the silences are held, how an allowed action is applied (the
gatekeeper at once, or a Kafka produce and a wait for the worker's stored
records), and where records and access-log entries are written.

Pure: no I/O here; the hooks do it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import trygg.alerts.lifecycle as lc
from trygg.alerts.alert import Alert, Record
from trygg.alerts.escalation import Escalator
from trygg.alerts.silences import Silence

if TYPE_CHECKING:  # the feed is notify's: a later stage, named here for its type only
    from trygg.notify.console import ConsoleFeed


class Alerts(Protocol):
    """What the HTTP API and the console (through it, and ``/metrics``) use of an
    alert service. Raising ``HTTPException`` is allowed anywhere a caller waits
    on a service it cannot reach (the distributed one: 503, 504)."""

    @property
    def clock(self) -> Callable[[], datetime]:
        """The service's clock: "now" for silences, timelines and the answers."""
        ...

    @property
    def started(self) -> bool:
        """Ready to serve (``/readyz``): its alerts are loaded (distributed: and Kafka
        is connected, for the actions)."""
        ...

    @property
    def feed(self) -> ConsoleFeed:
        """The live feed every alert change is published on (``/api/stream``)."""
        ...

    @property
    def escalator(self) -> Escalator:
        """The routing's escalation timetable (an alert's planned schedule)."""
        ...

    @property
    def alerts_by(self) -> Counter[tuple[str, str, str]]:
        """Alerts decided and acted on, by (rule, severity, kind or action): /metrics."""
        ...

    @property
    def deliveries_by(self) -> Counter[tuple[str, str]]:
        """Notifications by (channel, outcome): /metrics (empty where the workers send)."""
        ...

    def get(self, alert_id: str) -> Alert | None:
        """The alert held in memory, else None; never waits. The embedded service holds
        the open alerts and those closed but perhaps not stored yet, never older than
        the database; the distributed one the open alerts as of its last poll or action."""
        ...

    def open_alerts(self) -> list[Alert]:
        """The open alerts held, in no promised order."""
        ...

    def live_alerts(self) -> list[Alert]:
        """The alerts memory holds that may be newer than their database rows, by
        (raised_at, id): a list read from the database takes these in their place."""
        ...

    async def load(self, alert_id: str) -> Alert | None:
        """The alert from memory, or rebuilt from its stored records; None when there
        is none (a shadow alert, an id that is no alert, records from before schema 3).
        May raise the database's error when it is not reachable."""
        ...

    async def act(
        self,
        alert_id: str,
        action: str,
        actor: str,
        *,
        expected_version: int | None = None,
        assignee: str | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        note: str = "",
    ) -> Alert:
        """A staff action, applied once: returns the alert holding its records.
        Raises KeyError (no such alert), ``lc.TransitionError`` or ``lc.ConflictError``
        (with the reason to show staff; of two staff taking one alert, the second
        gets "alert is taken by ...")."""
        ...

    def silences(self, active_at: datetime | None = None) -> list[Silence]:
        """The silences held, or only those active at ``active_at``; by (start, id)."""
        ...

    def silence(self, silence_id: str) -> Silence | None:
        """One silence held, else None."""
        ...

    def add_silence(self, s: Silence) -> Silence:
        """Hold and store a silence; the gates use it from now on (the distributed
        workers within their reload interval). Returns it as stored."""
        ...

    def end_silence(self, silence_id: str, actor: str) -> Silence:
        """End a silence now (a future one: at once after its start); KeyError if it is
        not held. Returns it as stored, with ``ended_by``."""
        ...

    def log_access(
        self,
        actor: str,
        role: str,
        action: str,
        resident: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One access-log entry, stamped now. Never blocks the request: it is written
        behind it (the spool, or a retried database write)."""
        ...


class StaffLatency(Protocol):
    """The latency histograms a staff action is observed in
    (``trygg.api.metrics.AlertLatencies``)."""

    def observe_staff(self, alert: Any, new: Iterable[Any]) -> None: ...


@dataclass(frozen=True)
class ActionRequest:
    """A staff action as the API hands it over, checked by the pure lifecycle."""

    action: str
    actor: str
    expected_version: int | None = None
    assignee: str | None = None
    outcome: str | None = None
    reason: str | None = None
    note: str = ""

    def apply(self, alert: Alert, now: datetime) -> Alert:
        """The alert as the action leaves it (raises the lifecycle's refusal)."""
        return lc.act(alert, self.action, now, self.actor, note_text=self.note, **self.options())

    def options(self) -> dict[str, Any]:
        """The optional arguments, by name, in the order the action record keeps."""
        return {
            "expected_version": self.expected_version,
            "assignee": self.assignee,
            "outcome": self.outcome,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class AccessEntry:
    """One access-log entry: who read or did what, about which resident, when."""

    at: datetime
    actor: str
    role: str
    action: str
    resident: str | None
    detail: dict[str, Any] | None


def alert_from_records(recs: list[dict[str, Any]]) -> Alert | None:
    """An alert rebuilt from its stored records (``store.alerts.alert_records``);
    None if there are none, or they were written before schema 3 (no ``seq``)."""
    if not recs or any(r["seq"] is None for r in recs):
        return None
    return Alert.from_records(Record.from_dict(r) for r in recs)


class AlertDesk(ABC):
    """The part of :class:`Alerts` both services share, over the hooks below.

    A subclass sets ``clock``, ``alerts_by`` and ``latency`` and holds its
    alerts (``get``); the hooks say where things are held and written."""

    clock: Callable[[], datetime]
    alerts_by: Counter[tuple[str, str, str]]
    latency: StaffLatency

    @abstractmethod
    def get(self, alert_id: str) -> Alert | None:
        """The alert held in memory, else None."""

    @abstractmethod
    async def _stored_records(self, alert_id: str) -> list[dict[str, Any]]:
        """The alert's stored records (not a shadow alert's); [] for an id this
        service never reads (a shadow alert, an id that is no alert)."""

    @abstractmethod
    async def _acting_on(self, alert_id: str) -> Alert | None:
        """The alert a staff action is checked against, None if there is none."""

    @abstractmethod
    async def _apply(self, a: Alert, req: ActionRequest) -> Alert:
        """Apply an action to ``a``: returns the alert holding its records (raises
        the lifecycle's refusal, or the service's own errors)."""

    @abstractmethod
    def _held_silences(self) -> Iterable[Silence]:
        """The silences held."""

    @abstractmethod
    def _write_access(self, entry: AccessEntry) -> None:
        """Write an access-log entry behind the request (must not block it)."""

    # ------------------------------------------------------------- alerts

    async def _stored_alert(self, alert_id: str) -> Alert | None:
        """The alert rebuilt from its stored records."""
        return alert_from_records(await self._stored_records(alert_id))

    async def load(self, alert_id: str) -> Alert | None:
        """The alert from memory, or rebuilt from its stored records."""
        return self.get(alert_id) or await self._stored_alert(alert_id)

    async def act(
        self,
        alert_id: str,
        action: str,
        actor: str,
        *,
        expected_version: int | None = None,
        assignee: str | None = None,
        outcome: str | None = None,
        reason: str | None = None,
        note: str = "",
    ) -> Alert:
        """A staff action. Raises KeyError (no such alert), TransitionError or
        ConflictError (with the reason to show), or what ``_apply`` raises."""
        req = ActionRequest(action, actor, expected_version, assignee, outcome, reason, note)
        a = await self._acting_on(alert_id)
        if a is None:
            raise KeyError(alert_id)
        b = await self._apply(a, req)
        self.alerts_by[(b.rule, b.severity.value, action)] += 1
        self.latency.observe_staff(b, b.records[a.version :])
        return b

    # ------------------------------------------------------------- silences

    def silences(self, active_at: datetime | None = None) -> list[Silence]:
        out = list(self._held_silences())
        if active_at is not None:
            out = [s for s in out if s.active(active_at)]
        return sorted(out, key=lambda s: (s.start, s.id))

    def silence(self, silence_id: str) -> Silence | None:
        return next((s for s in self._held_silences() if s.id == silence_id), None)

    # ------------------------------------------------------------- access log

    def log_access(
        self,
        actor: str,
        role: str,
        action: str,
        resident: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._write_access(AccessEntry(self.clock(), actor, role, action, resident, detail))
