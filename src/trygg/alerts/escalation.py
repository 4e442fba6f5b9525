"""Escalation: when each step of an alert's policy is due, and to whom.

Escalation is pure and *derived from the alert's records only*: level 1 is
the ``notified`` record, level n >= 2 an ``escalated`` record with
``data.level = n``, reminders are ``renotified`` records. The base time is
the ``raised`` record (or the ``released`` record of a held alert). So after
a restart :meth:`Escalator.due` over the reloaded alerts neither repeats a
step already recorded nor skips one that fell due while trygg was down (each
due level is sent once, in order; missed reminders collapse into one).

The I/O layer drives it: ``steps = escalator.due(open_alerts, now)``; for
each step persist ``step.apply(alert, now)`` (the new record) together with
the step's notifications in an outbox, then deliver; sleep until
``escalator.next_deadline(open_alerts, now)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trygg.alerts.lifecycle as lc
from trygg.alerts.alert import Alert, Step
from trygg.alerts.contacts import Channel, Contact
from trygg.alerts.routing_config import (
    SPECIAL_TARGETS,
    TEAM_ON_DUTY,
    Policy,
    RoutingConfig,
)

__all__ = ["EscalationStep", "Escalator", "Notification"]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one address. ``key`` is the idempotency key: the same
    step to the same address always has the same key, so a receiver (or the
    outbox) can drop repeats."""

    alert_id: str
    action: str  # notify | escalate | renotify
    level: int
    n: int  # reminder number (0 for notify/escalate)
    target: str  # the policy target: team_on_duty, team_leader or a recipient
    recipient: str  # recipient id or "team:<name>" for team-wide channels
    channel: Channel
    address: str
    due_at: datetime
    digest: bool = False

    @property
    def key(self) -> str:
        return (
            f"{self.alert_id}:{self.action}:{self.level}:{self.n}:"
            f"{self.channel.value}:{self.address}"
        )

    def to_row(self, address: str) -> dict[str, Any]:
        """The notification as stored (``alert_notifications``) and sent between
        workers, with the address resolved (``{team}`` filled in)."""
        return {
            "key": self.key,
            "alert_id": self.alert_id,
            "action": self.action,
            "level": self.level,
            "n": self.n,
            "target": self.target,
            "recipient": self.recipient,
            "channel": self.channel.value,
            "address": address,
            "due_at": self.due_at.isoformat(),
            "digest": self.digest,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Notification:
        """Back from :meth:`to_row` or a database row (``due_at`` text or datetime)."""
        due = row["due_at"]
        return cls(
            alert_id=row["alert_id"],
            action=row["action"],
            level=row["level"],
            n=row["n"],
            target=row["target"],
            recipient=row["recipient"],
            channel=Channel(row["channel"]),
            address=row["address"],
            due_at=datetime.fromisoformat(due) if isinstance(due, str) else due,
            digest=row["digest"],
        )


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """A due step of an alert's escalation: record it with :meth:`apply`."""

    alert_id: str
    action: str  # notify (level 1) | escalate (level >= 2) | renotify
    level: int
    n: int
    due_at: datetime
    targets: tuple[str, ...]
    notifications: tuple[Notification, ...]

    @property
    def key(self) -> str:
        return f"{self.alert_id}:{self.action}:{self.level}:{self.n}"

    @property
    def unrouted(self) -> bool:
        """True when no address was found (log it loudly; the step is still recorded)."""
        return not self.notifications

    def apply(self, alert: Alert, now: datetime) -> Alert:
        """Append the record that marks this step done."""
        if alert.id != self.alert_id:
            raise ValueError(f"step for alert {self.alert_id} applied to {alert.id}")
        targets = list(self.targets)
        if self.action == "notify":
            return lc.notify(alert, now, targets=targets)
        if self.action == "escalate":
            return lc.escalate(alert, now, self.level, targets=targets)
        return lc.renotify(alert, now, targets=targets)


class Escalator:
    """Pure escalation over a :class:`RoutingConfig`; holds no per-alert state."""

    def __init__(self, routing: RoutingConfig) -> None:
        self.routing = routing

    # ----------------------------------------------------------- schedule

    def _policy(self, alert: Alert) -> Policy:
        return self.routing.policies[alert.severity]

    @staticmethod
    def _base(alert: Alert) -> datetime:
        released = [r.at for r in alert.records if r.step is Step.RELEASED]
        return released[-1] if released else alert.raised_at

    @staticmethod
    def _active(alert: Alert) -> bool:
        return alert.is_open and not alert.state.is_acknowledged and alert.routed

    def _next(
        self, alert: Alert, now: datetime | None = None
    ) -> tuple[str, int, int, datetime] | None:
        """The next step (action, level, n, due time): the earlier of the next
        level and the next reminder. Given ``now``, a level that is due by then
        takes precedence over a reminder that fell due earlier, so a reminder
        never leaves a due level behind."""
        if not self._active(alert):
            return None
        pol = self._policy(alert)
        tz = self.routing.tz_for(alert.team)
        done = alert.escalation_level
        base = self._base(alert)
        nxt_level: datetime | None = None
        if done < len(pol.steps):
            nxt_level = self.routing.next_in_shifts(
                base + pol.steps[done].after, pol.only_during, tz
            )
        nxt_re: datetime | None = None
        if (
            done >= 1
            and pol.renotify_every is not None
            and (pol.renotify_max is None or alert.renotify_count < pol.renotify_max)
            and alert.last_notified_at is not None
        ):
            nxt_re = self.routing.next_in_shifts(
                alert.last_notified_at + pol.renotify_every, pol.only_during, tz
            )
        if nxt_level is not None and (
            nxt_re is None or nxt_level <= nxt_re or (now is not None and nxt_level <= now)
        ):
            return ("notify" if done == 0 else "escalate", done + 1, 0, nxt_level)
        if nxt_re is not None:
            return ("renotify", done, alert.renotify_count + 1, nxt_re)
        return None

    def schedule(self, alert: Alert) -> list[tuple[int, datetime, tuple[str, ...]]]:
        """The levels still to come if nobody acknowledges: (level, when, targets)."""
        if not self._active(alert):
            return []
        pol = self._policy(alert)
        tz = self.routing.tz_for(alert.team)
        base = self._base(alert)
        out = []
        for i in range(alert.escalation_level, len(pol.steps)):
            when = self.routing.next_in_shifts(base + pol.steps[i].after, pol.only_during, tz)
            out.append((i + 1, when, tuple(pol.steps[i].notify)))
        return out

    def steps_due(self, alert: Alert, now: datetime) -> list[EscalationStep]:
        """Every step due for ``alert`` at ``now``, in order. Levels that fell due
        while trygg was down are each returned once; a reminder is returned only
        when no level is due, and at most one."""
        out: list[EscalationStep] = []
        a = alert
        pol = self._policy(alert)
        while True:
            nxt = self._next(a, now)
            if nxt is None or nxt[3] > now:
                break
            action, level, n, due_at = nxt
            if action == "renotify" and out:
                break
            targets = self._targets(pol, action, level)
            step = EscalationStep(
                alert_id=alert.id,
                action=action,
                level=level,
                n=n,
                due_at=due_at,
                targets=targets,
                notifications=tuple(self._notifications(a, action, level, n, targets, now)),
            )
            out.append(step)
            a = step.apply(a, now)  # simulate, to see what is due after it
            if action == "renotify":
                break
        return out

    def due(self, alerts: Iterable[Alert], now: datetime) -> list[EscalationStep]:
        """All due steps over ``alerts``, oldest due first."""
        out: list[EscalationStep] = []
        for a in alerts:
            out.extend(self.steps_due(a, now))
        return sorted(out, key=lambda s: (s.due_at, s.alert_id, s.level, s.n))

    def plan(self, alert: Alert, now: datetime) -> list[Notification]:
        """The notifications to send now for a (new) alert: those of its due steps."""
        return [n for s in self.steps_due(alert, now) for n in s.notifications]

    def next_deadline(self, alerts: Iterable[Alert], now: datetime) -> datetime | None:
        """The earliest time a step is due (may be <= now if one is overdue)."""
        times = [n[3] for a in alerts if (n := self._next(a)) is not None]
        return min(times) if times else None

    # ----------------------------------------------------------- addresses

    @staticmethod
    def _targets(pol: Policy, action: str, level: int) -> tuple[str, ...]:
        if action != "renotify":
            return tuple(pol.steps[level - 1].notify)
        seen: list[str] = []
        for st in pol.steps[:level]:
            for t in st.notify:
                if t not in seen:
                    seen.append(t)
        return tuple(seen)

    def recipients(self, team: str, target: str, at: datetime) -> list[tuple[str, list[Contact]]]:
        """Who ``target`` means for ``team`` at instant ``at``: (recipient, contacts)."""
        r = self.routing
        tc = r.teams.get(team)
        if tc is None and r.default_team is not None:
            team = r.default_team
            tc = r.teams[team]
        if target not in SPECIAL_TARGETS:
            return [(target, list(r.recipients[target].contacts))]
        if tc is None:
            return [(p, list(r.recipients[p].contacts)) for p in r.fallback]
        shift = r.shift_at(at, r.tz_for(team))
        sname = shift.name if shift is not None else ""
        if target == TEAM_ON_DUTY:
            out: list[tuple[str, list[Contact]]] = []
            if tc.contacts:
                out.append((f"team:{team}", list(tc.contacts)))
            for p in tc.on_duty.get(sname, []):
                out.append((p, list(r.recipients[p].contacts)))
            return out
        leader = tc.leader_for(sname)
        if leader is None:  # no leader on this shift: fall back to the team on duty
            return self.recipients(team, TEAM_ON_DUTY, at)
        return [(leader, list(r.recipients[leader].contacts))]

    def _notifications(
        self,
        alert: Alert,
        action: str,
        level: int,
        n: int,
        targets: tuple[str, ...],
        now: datetime,
    ) -> list[Notification]:
        digest = self._policy(alert).digest
        out: list[Notification] = []
        seen: set[tuple[Channel, str]] = set()
        for t in targets:
            for who, contacts in self.recipients(alert.team, t, now):
                for c in contacts:
                    if (c.channel, c.address) in seen:
                        continue
                    seen.add((c.channel, c.address))
                    out.append(
                        Notification(
                            alert_id=alert.id,
                            action=action,
                            level=level,
                            n=n,
                            target=t,
                            recipient=who,
                            channel=c.channel,
                            address=c.address,
                            due_at=now,
                            digest=digest,
                        )
                    )
        return out
