"""The notify agent's outbox without Faust: one alert's notifications, what was
sent, what failed and when to try again.

The same retry policy and give-up times as the embedded runner's outbox
(docs/alerts.md, "The outbox"); the entries live in the Faust table
``notify-outbox`` (docs/distributed.md, "Notifications that fail").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

CLOSED_KEEP_S = 24 * 3600.0  # an alert's outbox entry is kept this long after it closed


@dataclass
class Attempt:
    """A delivery the notify agent is to attempt now (one try, no wait)."""

    key: str
    row: dict[str, Any]
    alert: dict[str, Any]
    attempts: int  # made before this one
    first_failed: float | None  # epoch s of the first failed attempt (None: this is the first)


@dataclass
class Outcome:
    """What became of an attempt: delivered, failed for good, or to be tried again."""

    attempts: int  # made so far, this one included
    ok: bool
    retry: bool  # a failure worth trying again (HTTP 5xx, a timeout, no connection)
    error: str | None = None


class NotifyOutbox:
    """The notify agent's durable outbox, one alert's notifications at a time.

    The embedded runner retries a failed notification in a task of its own until it
    is delivered, the alert is closed or the channel's give-up time has passed
    (docs/alerts.md, "The outbox"). The notify agent cannot wait in its stream: a
    notification retried there holds every one behind it, and one it gives up on is
    lost (it used to stop after 5 attempts). So a failed notification is kept in
    the agent's table (``notify-outbox``, keyed by alert id like the notifications
    topic, so it moves with its partition) with its attempt count, when it first
    failed and when it may be tried again (``nb``, from the embedded runner's
    ``RetryPolicy``, the same backoff and jitter). The worker's timer scan sends a
    ``rty`` record to the alert's partition when the earliest ``nb`` has come, and
    the agent makes one attempt per due notification then, never sleeping.

    Every notification the agent has handled stays in the entry as done, so a
    ``ntf`` record read again after a rebalance is not sent again. The alerts agent
    sends ``cls`` when an alert closes: what is still pending is dropped (outcome
    ``cancelled``) and the entry is deleted ``CLOSED_KEEP_S`` later.

    A bridge's relay (``trygg.distributed.relay``) pages an immediate alarm itself
    when this path has stalled (a rebalance); who sends a first notification is
    settled in the database (``store.claims``). One a relay is paging is held
    here (``hold``, ``"held"``) until the relay's lease ends, then looked up again:
    sent by the relay (``relayed``), or taken over and sent here.

    State bytes: ``{"v": 1, "p": partition, "next": epoch s or null, "closed": epoch
    s or null, "n": {key: entry}}``, an entry being ``{"done": true}`` or
    ``{"row", "alert", "a": attempts, "t0": first failure, "nb": not before}``
    (with ``"held": true`` while a relay's claim holds it).
    """

    def __init__(self, policy: Any, give_up: Any) -> None:
        self.policy = policy  # trygg.notify.retry.RetryPolicy
        self.give_up = give_up  # trygg.notify.retry.GiveUp

    @staticmethod
    def load(state: bytes | str | None, partition: int) -> dict[str, Any]:
        doc = orjson.loads(state) if state else {}
        return {
            "v": 1,
            "p": partition,
            "next": doc.get("next"),
            "closed": doc.get("closed"),
            "n": dict(doc.get("n") or {}),
        }

    @staticmethod
    def dump(doc: dict[str, Any]) -> bytes:
        nbs = [e["nb"] for e in doc["n"].values() if "nb" in e]
        if doc["closed"] is not None:
            doc["next"] = doc["closed"] + CLOSED_KEEP_S
        else:
            doc["next"] = min(nbs) if nbs else None
        return orjson.dumps(doc)

    @staticmethod
    def take(doc: dict[str, Any], record: dict[str, Any]) -> Attempt | None:
        """A new notification (``ntf``): the attempt to make now, or None if it was
        handled already (a record read again) or its alert is closed."""
        row = record["row"]
        if doc["closed"] is not None or row["key"] in doc["n"]:
            return None
        return Attempt(row["key"], row, record["alert"], 0, None)

    @staticmethod
    def hold(doc: dict[str, Any], at: Attempt, until: float) -> None:
        """A notification a relay is paging: kept, not sent, until ``until`` (epoch s,
        the relay's lease), when the timer scan's ``rty`` brings it back (``due``)."""
        doc["n"][at.key] = {
            "row": at.row,
            "alert": at.alert,
            "a": at.attempts,
            "t0": at.first_failed,
            "nb": until,
            "held": True,
        }

    @staticmethod
    def relayed(doc: dict[str, Any], key: str) -> None:
        """A relay sent the notification: settled, and a copy read again is skipped."""
        doc["n"][key] = {"done": True}

    @staticmethod
    def due(doc: dict[str, Any], now: float) -> list[Attempt]:
        """The pending notifications whose time has come (on ``rty``)."""
        return [
            Attempt(k, e["row"], e["alert"], e["a"], e["t0"])
            for k, e in sorted(doc["n"].items(), key=lambda kv: (kv[1].get("nb", 0), kv[0]))
            if "nb" in e and e["nb"] <= now
        ]

    def settle(self, doc: dict[str, Any], at: Attempt, out: Outcome, now: float) -> str | None:
        """Record an attempt's outcome in the entry. Returns None while it is to be
        tried again, else the final word: "ok", or the reason it failed for good."""
        if out.ok:
            doc["n"][at.key] = {"done": True}
            return "ok"
        if not out.retry:
            doc["n"][at.key] = {"done": True}
            return out.error or "failed"
        t0 = at.first_failed if at.first_failed is not None else now
        channel = str(at.row.get("channel", ""))
        limit = self.give_up.after(channel, str(at.alert.get("severity", "")))
        if limit is not None and now - t0 >= limit.total_seconds():
            doc["n"][at.key] = {"done": True}
            return f"{out.error or 'failed'} (gave up after {limit})"
        doc["n"][at.key] = {
            "row": at.row,
            "alert": at.alert,
            "a": out.attempts,
            "t0": t0,
            "nb": now + self.policy.delay(out.attempts),
        }
        return None

    @staticmethod
    def close(doc: dict[str, Any], now: float) -> list[Attempt]:
        """The alert closed (``cls``): drop what is pending; returns it (to record)."""
        dropped = [
            Attempt(k, e["row"], e["alert"], e["a"], e["t0"])
            for k, e in doc["n"].items()
            if "nb" in e and not e.get("held")
        ]
        # every pending one is done; a held one is not recorded here (the relay's own
        # delivery record says what became of it)
        for k, e in doc["n"].items():
            if "nb" in e:
                doc["n"][k] = {"done": True}
        if doc["closed"] is None:
            doc["closed"] = now
        return dropped

    @staticmethod
    def expired(doc: dict[str, Any], now: float) -> bool:
        """A closed alert's entry kept long enough: delete it."""
        return doc["closed"] is not None and now >= doc["closed"] + CLOSED_KEEP_S
