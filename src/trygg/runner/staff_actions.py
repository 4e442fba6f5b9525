"""The embedded alert service's staff side: the live alerts, actions, silences, access log.

What the HTTP API and the console read and do, on the runner's event loop:
an action is applied at once through the gatekeeper and stored through the
spool; an alert closed here is shown from memory until the database holds its
closing records (``AlertService``, "Memory before the database"). The course
of an action (the checks, counts and latencies) is
:class:`trygg.alerts.service.AlertDesk`'s, shared with the distributed runner.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from trygg import logs
from trygg.alerts.alert import Alert, Record
from trygg.alerts.gates import Gatekeeper
from trygg.alerts.service import AccessEntry, ActionRequest, AlertDesk
from trygg.alerts.silences import Silence
from trygg.store import alerts as alert_store
from trygg.store import spooled

log = logs.get("trygg.alerts")


class StaffActions(AlertDesk):
    """:class:`AlertDesk`'s hooks for :class:`trygg.runner.alerting.AlertService`,
    which sets the state below and stores through its spool writer."""

    gk: Gatekeeper
    shadow_gk: Gatekeeper
    # closed here, perhaps not yet stored: id -> (alert, token of its spool append)
    _unstored: dict[str, tuple[Alert, Any]]
    _db_nowait: Callable[..., Awaitable[Any]]
    _wake: asyncio.Event  # wakes the timer task

    @abstractmethod
    def _emit(self, *records: spooled.Record) -> None:
        """Append records to the spool (the service's one writer)."""

    @abstractmethod
    def _persist(self, alert: Alert, new: Iterable[Record], *, shadow: bool = False) -> None:
        """Store an alert's new records (and publish it on the console feed)."""

    @abstractmethod
    def _forget_stored(self) -> None:
        """Drop the closed alerts the database now holds."""

    # ------------------------------------------------------------- staff actions

    def get(self, alert_id: str) -> Alert | None:
        """The live alert: an open one, or one closed here that the database may
        not hold yet (newer than what a database read would give)."""
        a = self.gk.get(alert_id)
        if a is None:
            held = self._unstored.get(alert_id)
            if held is not None:
                a = held[0]
        return a

    def open_alerts(self) -> list[Alert]:
        return self.gk.open_alerts()

    def live_alerts(self) -> list[Alert]:
        """The open alerts and those closed here but perhaps not yet stored: where
        a database row of one of them differs, this is the newer."""
        self._forget_stored()
        out = self.gk.open_alerts()
        out.extend(a for a, _ in self._unstored.values() if self.gk.get(a.id) is None)
        return sorted(out, key=lambda a: (a.raised_at, a.id))

    async def _stored_records(self, alert_id: str) -> list[dict[str, Any]]:
        if self.shadow_gk.get(alert_id) is not None:
            return []  # shadow alerts are not shown nor acted on
        recs: list[dict[str, Any]] = await self._db_nowait(
            alert_store.alert_records, alert_id, include_shadow=False
        )
        return recs

    async def _acting_on(self, alert_id: str) -> Alert | None:
        a = await self.load(alert_id)
        if a is None:
            return None
        # a closed alert: act() refuses with "alert is already resolved"; an
        # open one that is not in memory (cannot normally happen) is adopted.
        # Memory again after the read: the alert may have changed meanwhile.
        return self.get(alert_id) or a

    async def _apply(self, a: Alert, req: ActionRequest) -> Alert:
        """Applied here, at once: the gates hold it, the spool stores it."""
        b = req.apply(a, self.clock())
        self.gk.update(b)
        self._persist(b, b.records[a.version :])
        log.info("alert " + req.action, alert=b.id, actor=req.actor, state=b.state.value)
        self._wake.set()
        return b

    # ------------------------------------------------------------- silences

    def add_silence(self, s: Silence) -> Silence:
        self.gk.add_silence(s)
        self.shadow_gk.add_silence(s)  # the candidate sees the same silences
        self._emit(spooled.silence_record(s.model_dump(mode="json")))
        log.info("silence created", silence=s.id, scope=s.scope.value, by=s.created_by)
        self._wake.set()
        return s

    def end_silence(self, silence_id: str, actor: str) -> Silence:
        s = self.gk.end_silence(silence_id, self.clock(), actor)  # KeyError if unknown
        with contextlib.suppress(KeyError):
            self.shadow_gk.end_silence(silence_id, self.clock(), actor)
        self._emit(spooled.silence_record(s.model_dump(mode="json")))
        log.info("silence ended", silence=s.id, by=actor)
        self._wake.set()
        return s

    def _held_silences(self) -> list[Silence]:
        return self.gk.silences()

    # ------------------------------------------------------------- access log

    def _write_access(self, entry: AccessEntry) -> None:
        self._emit(
            spooled.access_record(
                entry.at, entry.actor, entry.role, entry.action, entry.resident, entry.detail
            )
        )
