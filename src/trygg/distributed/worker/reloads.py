"""What a running worker takes from the database: the registry, the district
overlays and the silences, each into use without a restart.

A failed read keeps what is in force and says so in the log; a silence ended or
changed gets its resident a tick, so an alert it suppressed is released now
(docs/distributed.md, "The API and console").
"""

from __future__ import annotations

from trygg import logs
from trygg.distributed.worker.base import WorkerBase, tick
from trygg.registry import Registry

log = logs.get("trygg.worker")


class Reloads(WorkerBase):
    """The reloads (``Worker`` runs them as Faust timers)."""

    async def reload_registry(self) -> None:
        assert self._load_registry is not None
        try:
            registry = await self._load_registry()
        except Exception as exc:
            log.warning("registry reload failed", error=str(exc).strip()[:200])
            return
        if registry != self._registry:
            self.set_registry(registry)
        if self._load_overlays is not None:
            await self.reload_overlays()

    async def reload_overlays(self) -> None:
        """District overlays changed beside the rules or in the database (trygg rules
        promote --district): taken into use without a restart, as registry changes
        are; a refused one keeps the overlays in force, and says so in the log."""
        from trygg.rules import CarePlanError
        from trygg.rules.overlays import OverlayError

        assert self._load_overlays is not None
        try:
            texts, stored = await self._load_overlays()
            changed = self.rules.update_overlays(texts, stored)
        except (OverlayError, CarePlanError) as exc:
            log.error(
                "district overlays refused: the ones in force are kept",
                problems=str(exc)[:1000],
            )
            return
        except Exception as exc:
            log.warning("district overlays not read", error=str(exc).strip()[:200])
            return
        if changed:
            log.info("district overlays taken into use", districts=self.rules.overlays.describe())

    def set_registry(self, registry: Registry) -> None:
        self._registry = registry
        self.rules.update_registry(registry)
        self.alerts.update_registry(registry)

    async def reload_silences(self) -> None:
        """Give the alerts core the database's silences (written by ``trygg api``).

        A silence that was ended or changed also gets its resident a ``tick`` on the
        signals topic, so an alert it suppressed is released now, not at its old end
        (every worker sends one; a tick is idempotent)."""
        assert self._load_silences is not None
        try:
            silences = await self._load_silences()
        except Exception as exc:
            log.warning("silence reload failed", error=str(exc).strip()[:200])
            return
        seen = {s.id: s for s in silences}
        before, self._silences_seen = self._silences_seen, seen
        if seen == before:
            return
        self.alerts.update_silences(silences)
        log.info("silences reloaded", silences=len(silences))
        changed = [s for sid, s in (before or {}).items() if seen.get(sid) != s]
        residents = sorted({r for s in changed if (r := self.alerts.resident_of(s))})
        at = self.clock()
        out = [tick(self.signals_topic, rid, at, None) for rid in residents]
        await self.sender.send_all(out)
