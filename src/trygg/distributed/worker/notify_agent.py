"""The notify agent's step: a notification, a retry or an alert closed.

One attempt per notification with the embedded runner's channels, never a wait in
the stream: a failed one is kept in the ``notify-outbox`` table (``outbox``) and
tried again when the timer scan says it is due; each delivery is recorded
(docs/distributed.md, "Notifications that fail").
"""

from __future__ import annotations

import asyncio
from typing import Any

from trygg import logs
from trygg.distributed import codecs
from trygg.distributed.worker.base import WorkerBase, key_text
from trygg.distributed.worker.outbox import Attempt, Outcome
from trygg.store.claims import MINE, RELAYED

log = logs.get("trygg.worker")
CLOSED = "the alert was closed"  # a notification dropped for it (as the embedded runner says)


class NotifyAgent(WorkerBase):
    """The notify agent's step (``Worker.notify_agent`` calls it per record)."""

    async def notify_step(self, key: Any, value: bytes, partition: int = 0) -> None:
        """One record of the notifications topic, keyed by alert id (``NotifyOutbox``):
        ``ntf`` a notification to send, ``rty`` the timer scan's word that a retry is
        due, ``cls`` the alert closed. A first notification a bridge's relay may have
        sent is claimed first (``claim``; docs/distributed.md, "The relay"). One attempt
        per notification, never a wait: a failed one is kept in the ``notify-outbox``
        table and tried again when due."""
        from trygg.alerts.escalation import Notification
        from trygg.notify.base import deliver, payload
        from trygg.store import spooled

        aid = key_text(key)
        rec = codecs.loads(value)
        op = rec.get("op")
        ob = self.outbox
        doc = ob.load(self.notify_table.get(aid), partition)
        now = self.clock().timestamp()
        records: list[tuple[str, dict[str, Any]]] = []  # (resident, delivery record)
        sent_claims: list[str] = []  # claimed and sent: marked so with the records' send

        def record(
            at: Attempt, attempts: int, ok: bool, status: Any, error: Any, ms: float
        ) -> None:
            row = at.row
            records.append(
                (
                    at.alert.get("resident") or "",
                    spooled.delivery_record(
                        key=at.key,
                        alert_id=row["alert_id"],
                        channel=row["channel"],
                        address=row["address"],
                        at=self.clock(),
                        attempts=attempts,
                        ok=ok,
                        status=status,
                        error=error,
                        latency_ms=round(ms, 3),
                    ),
                )
            )

        if op == "ntf":
            first = ob.take(doc, rec)
            if first is None:
                self.stats["duplicates"] += 1
                return  # sent (or given up) already: a record read again; or the alert closed
            todo = [first]
        elif op == "rty":
            if ob.expired(doc, now):
                del self.notify_table[aid]
                self.notify_timers.update(partition, aid, None, None)
                return
            todo = ob.due(doc, now)
        elif op == "cls":
            for at in ob.close(doc, now):
                record(at, at.attempts, False, None, f"not delivered: {CLOSED}", 0.0)
                log.info("notification dropped: the alert was closed", alert=aid)
            todo = []
        else:
            return
        for at in todo:
            row = at.row
            claimed = False
            if self.claim is not None and row["action"] == "notify" and at.attempts == 0:
                verdict = await self.claim(row["key"], row["alert_id"])
                claimed = verdict == MINE
                if verdict == RELAYED:  # settled: the relay's delivery record says how
                    ob.relayed(doc, at.key)
                    self.stats["relayed"] += 1
                    continue
                if isinstance(verdict, float):  # a relay is paging it: look again then
                    ob.hold(doc, at, verdict)
                    continue
            n = Notification.from_row(row)
            d, ms = await deliver(
                self.channels, n, row["address"], payload(at.alert, n, row["address"])
            )
            if claimed:
                sent_claims.append(row["key"])
            tries = at.attempts + max(1, d.attempts)
            where = {"alert": aid, "channel": row["channel"], "address": row["address"]}
            final = ob.settle(
                doc, at, Outcome(tries, d.ok, d.retry, d.error), self.clock().timestamp()
            )
            if final is None:
                if at.first_failed is None:  # the first failure is recorded at once, as embedded
                    record(at, tries, False, d.status, d.error, ms)
                    log.warning("notification not delivered, retrying", **where, error=d.error)
                continue
            self.stats["notified"] += 1
            if d.ok and n.action == "notify":  # the first level: raised -> notified
                seconds = (self.clock() - n.due_at).total_seconds()
                self.latency.raised_to_notified.observe(seconds, n.channel.value)
            record(at, tries, d.ok, d.status, d.error if d.ok or final == d.error else final, ms)
            if d.ok and at.first_failed is not None:
                log.info("notification delivered after retries", **where, attempts=tries)
            elif not d.ok:
                log.error("notification not delivered", **where, attempts=tries, error=final)
        out = [(self.records_topic, rid, codecs.dumps(r), None) for rid, r in records]
        # The deliveries must be in Kafka before the state that says they were made. The
        # claims are marked sent (the relay no longer waits on them) meanwhile, not one
        # database round trip each before it: the next notification of the alert, often
        # the webhook after the console and MQTT, waits on this step.
        marks = [self.claim_sent(k) for k in sent_claims] if self.claim_sent else []
        await asyncio.gather(self.sender.send_all(out), *marks)
        state = ob.dump(doc)
        self.notify_table[aid] = state.decode()
        self.notify_timers.update(partition, aid, doc["next"], None)
