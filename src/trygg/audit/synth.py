"""Synthetic alert histories with plausible response times.

For the dashboard tests, the report screenshots and the benchmark: alerts
for a set of residents over a period, each with the lifecycle records a
real handling would leave (raised, notified, acknowledged, assigned,
accepted, arrived, resolved; or cancelled), and answer, arrival and resolve
times drawn from skewed distributions with a small tail that breaches the
targets. Deterministic for a seed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from trygg.audit.catalogue import CatalogueRule, standard_rules

# Relative frequency of each rule's alerts (a city's mix: dose reminders and
# night exits dominate, fires are rare).
WEIGHTS: dict[str, float] = {
    "button": 20,
    "dose-missed": 18,
    "bed-exit-no-return": 14,
    "inactivity": 6,
    "long-bathroom-stay": 5,
    "fall": 8,
    "pullcord": 4,
    "left-home-at-night": 2,
    "device-offline": 8,
    "battery-low": 6,
    "water": 1,
    "fire": 0.5,
    "seizure": 0.5,
    "dispenser-fault": 2,
    "temperature-high": 1,
    "temperature-low": 1,
}

Alert = tuple[Any, ...]
RecordRow = tuple[Any, ...]


def _dumps(d: dict[str, Any]) -> str:
    return orjson.dumps(d).decode()


def synth_history(
    residents: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
    n_alerts: int,
    seed: int = 1,
    rules: Sequence[CatalogueRule] | None = None,
) -> Iterator[tuple[Alert, list[RecordRow]]]:
    """Yield ``(alert_row, records)`` in raise-time order.

    ``residents``: (resident id, team). Rows fit
    :func:`trygg.store.audit.copy_alert_history`.
    """
    rng = random.Random(seed)
    rules = list(rules or standard_rules())
    weights = [WEIGHTS.get(r.rule, 1.0) for r in rules]
    span = (end - start).total_seconds()
    times = sorted(rng.random() * span for _ in range(n_alerts))
    for i, t in enumerate(times):
        raised = start + timedelta(seconds=t)
        rule = rng.choices(rules, weights)[0]
        resident, team = residents[int(rng.paretovariate(1.2) * 7 + i) % len(residents)]
        aid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        yield _one(rng, aid, resident, team, rule, raised)


def _one(
    rng: random.Random, aid: str, resident: str, team: str, rule: CatalogueRule, raised: datetime
) -> tuple[Alert, list[RecordRow]]:
    recs: list[RecordRow] = []
    nurse = f"nurse-{team}-{rng.randint(1, 12)}"

    def add(
        step: str,
        at: datetime,
        actor: str,
        data: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> datetime:
        recs.append((aid, len(recs), step, at, actor, note, _dumps(data or {})))
        return at

    add(
        "raised",
        raised,
        "system",
        {"rule": rule.rule, "code": rule.code, "severity": rule.severity, "resident": resident},
    )
    u = rng.random()
    suppressed = u < 0.02
    state = "resolved"
    outcome: str | None = None
    suppressed_reason = None
    if suppressed:
        suppressed_reason = "silenced: resident away"
        add(
            "cancelled",
            raised + timedelta(minutes=rng.uniform(5, 60)),
            "system",
            {"reason": "auto_resolved", "outcome": "auto_resolved"},
        )
        state, outcome = "cancelled", "auto_resolved"
    else:
        t = add("notified", raised + timedelta(seconds=rng.uniform(0.2, 2)), "system", {"level": 1})
        if u < 0.08:  # reset or auto-resolved before anyone answered
            reason = rng.choice(["device_reset", "auto_resolved", "false_alarm"])
            add(
                "cancelled",
                t + timedelta(seconds=rng.uniform(3, 50)),
                "system" if reason != "false_alarm" else nurse,
                {"reason": reason},
            )
            state, outcome = (
                "cancelled",
                ("false_alarm" if reason == "false_alarm" else "auto_resolved"),
            )
        elif u < 0.081:  # nobody answered (yet): an open breach
            add("escalated", t + timedelta(minutes=3), "system", {"level": 2})
            state = "notified"
        else:
            if rng.random() < 0.006:
                answer = rng.uniform(180, 900)
                add("escalated", raised + timedelta(seconds=180), "system", {"level": 2})
            else:
                answer = rng.lognormvariate(3.0, 0.5)  # median 20 s
            ack = add("acknowledged", raised + timedelta(seconds=answer), nurse)
            visit = rule.severity == "red" or (rule.severity == "yellow" and rng.random() < 0.8)
            if visit:
                t = add(
                    "assigned",
                    ack + timedelta(seconds=rng.uniform(5, 60)),
                    nurse,
                    {"assignee": nurse},
                )
                t = add("accepted", t + timedelta(seconds=rng.uniform(2, 30)), nurse)
                arrive = rng.lognormvariate(7.0, 0.45)  # median ~18 min
                t = add("arrived", raised + timedelta(seconds=arrive), nurse)
                v = rng.random()
                outcome = "helped" if v < 0.7 else "no_help_needed" if v < 0.9 else "false_alarm"
                add(
                    "resolved",
                    t + timedelta(minutes=rng.uniform(5, 40)),
                    nurse,
                    {"outcome": outcome},
                )
            else:
                v = rng.random()
                outcome = (
                    "no_help_needed"
                    if v < 0.5
                    else "helped"
                    if v < 0.8
                    else "false_alarm"
                    if v < 0.95
                    else "technical"
                )
                add(
                    "resolved",
                    ack + timedelta(minutes=rng.uniform(1, 15)),
                    nurse,
                    {"outcome": outcome},
                )
    if state == "resolved" and rng.random() < 0.95:  # the documentation
        add(
            "note",
            recs[-1][3] + timedelta(minutes=rng.uniform(1, 30)),
            nurse,
            None,
            "documented in the care record",
        )
    alert = (
        aid,
        resident,
        team,
        rule.rule,
        "2026.1",
        rule.code,
        rule.severity,
        [f"e-{aid[:8]}"],
        None,
        rule.title,
        raised,
        state,
        suppressed,
        suppressed_reason,
        outcome,
        False,
        len(recs),
    )
    return alert, recs
