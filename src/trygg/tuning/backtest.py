"""Back-testing a catalogue change (``trygg rules backtest``): the current and a
candidate catalogue run through the same engine over the same stored events,
on event time, and the difference in the alerts they raise.

Pure: events in (any iterable of ``Event``s or of ``(Event, received)``
pairs, e.g. ``trygg.store.history``'s stream, which gives each stored event
with its receipt time, in the order received), a ``BacktestResult`` out.
The engines run in trygg.tuning.backtest_engines.

**The period.** Alerts are counted when they are raised in ``[start, end)``.
The caller may feed events from before ``start`` (a warm-up, so that a bed
exit at 23:55 the evening before or the last activity of the previous day is
known) and after ``end`` (a tail, so that an alert the candidate raises
later than the current catalogue can still be paired with it); the clock
runs on to ``until`` (default ``end``).

**Matching the alerts of the two runs** (trygg.tuning.backtest_matching):
the same rule, resident and device, and a shared causing event, else the
nearest in time within ``match_window`` (default 1 h).

A current alert left unpaired is **removed** by the candidate, a candidate
alert left unpaired is **added**, and a pair whose times differ is
**shifted** (delayed if the candidate's is later). Each difference belongs
to the period by the current alert's time (the candidate's for an added
one); its hour is that time's local hour in the resident's time zone.

**Recorded incidents** (stored alerts that ended ``resolved`` after someone
arrived) are paired with the candidate's alerts the same way (rule and
resident; shared causing event, else nearest within ``match_window``): an
incident without a partner is **missed**, one whose partner comes more than
``DELAY_SLACK`` after the recorded raise time is **delayed** by the
difference.

**Call-outs per week.** Each added or removed alert counts as the share of
that rule's stored alerts in the team (else in all teams) that led to an
arrival in the period; with no stored alerts of the rule, as one call-out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from trygg.model import Event, Signal
from trygg.registry import DEFAULT_TIMEZONE, Registry
from trygg.rules.catalogue import Catalogue
from trygg.tuning.backtest_engines import EngineRunner, run_engines
from trygg.tuning.backtest_matching import (
    MATCH_WINDOW,
    MatchItem,
    group_signals,
    match_alerts,
    match_items,
    signal_item,
)
from trygg.tuning.replay import Received

DELAY_SLACK = 1.0
"""Seconds by which a candidate alert may follow a recorded one and still count
as on time (the live runner's timers run up to about a second late)."""

ADDED, REMOVED, SHIFTED = "added", "removed", "shifted"
MISSED, DELAYED, EARLIER, KEPT = "missed", "delayed", "earlier", "kept"


@dataclass(frozen=True, slots=True)
class RecordedIncident:
    """A stored alert that ended ``resolved`` after someone arrived."""

    alert_id: str
    rule: str
    resident: str
    team: str
    raised_at: datetime
    events: tuple[str, ...] = ()
    arrived_at: datetime | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class RuleRecord:
    """The stored alerts of one rule and team in the period, and what they became."""

    rule: str
    team: str
    alerts: int
    closed: int = 0
    false_alarms: int = 0
    callouts: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the runs (see the module docstring)."""

    kind: str  # added | removed | shifted
    rule: str
    resident: str
    team: str
    current: Signal | None
    candidate: Signal | None

    @property
    def signal(self) -> Signal:
        """The alert the difference is dated by: the current one, else the candidate's."""
        s = self.current if self.current is not None else self.candidate
        assert s is not None
        return s

    @property
    def at(self) -> datetime:
        return self.signal.at

    @property
    def shift_s(self) -> float | None:
        """Candidate time minus current time (seconds), for a shifted alert."""
        if self.current is None or self.candidate is None:
            return None
        return self.candidate.at.timestamp() - self.current.at.timestamp()


@dataclass
class RuleDiff:
    rule: str
    current: int = 0
    candidate: int = 0
    added: int = 0
    removed: int = 0
    shifted: int = 0
    shift_total_s: float = 0.0
    recorded_alerts: int = 0
    recorded_closed: int = 0
    recorded_false_alarms: int = 0
    recorded_callouts: int = 0

    @property
    def net(self) -> int:
        return self.added - self.removed

    @property
    def mean_shift_s(self) -> float | None:
        return self.shift_total_s / self.shifted if self.shifted else None

    @property
    def recorded_false_share(self) -> float | None:
        """False alarms among the closed stored alerts of the rule."""
        return self.recorded_false_alarms / self.recorded_closed if self.recorded_closed else None


@dataclass
class TeamDiff:
    team: str
    added: int = 0
    removed: int = 0
    added_callouts: float = 0.0
    removed_callouts: float = 0.0
    assumed: int = 0  # differences counted as one call-out for want of stored alerts
    alerts_per_week: float = 0.0
    callouts_per_week: float = 0.0


@dataclass
class Tally:
    added: int = 0
    removed: int = 0
    shifted: int = 0


@dataclass(frozen=True, slots=True)
class IncidentImpact:
    incident: RecordedIncident
    status: str  # missed | delayed | earlier | kept
    candidate_at: datetime | None = None
    delay_s: float | None = None


@dataclass
class BacktestResult:
    start: datetime
    end: datetime
    current_version: str
    candidate_version: str
    teams: list[str] | None = None
    events: int = 0
    late: int = 0
    elapsed_s: float = 0.0
    current_alerts: int = 0
    candidate_alerts: int = 0
    rules: dict[str, RuleDiff] = field(default_factory=dict)
    by_team: dict[str, TeamDiff] = field(default_factory=dict)
    residents: dict[str, Tally] = field(default_factory=dict)
    hours: dict[int, Tally] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    incidents: list[IncidentImpact] = field(default_factory=list)

    @property
    def weeks(self) -> float:
        return (self.end - self.start).total_seconds() / (7 * 86400)

    @property
    def events_per_s(self) -> float | None:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else None

    def count(self, kind: str) -> int:
        return sum(1 for c in self.changes if c.kind == kind)

    def impacts(self, status: str) -> list[IncidentImpact]:
        return [i for i in self.incidents if i.status == status]


# ----------------------------------------------------------------- incidents --


def incident_impacts(
    incidents: Sequence[RecordedIncident],
    candidate: Sequence[Signal],
    window: timedelta = MATCH_WINDOW,
) -> list[IncidentImpact]:
    """What the candidate would have made of each recorded incident."""
    gb = group_signals(candidate, lambda s: (s.rule, s.resident))
    by_key: dict[tuple[str, str], list[RecordedIncident]] = {}
    for inc in incidents:
        by_key.setdefault((inc.rule, inc.resident), []).append(inc)
    result: dict[str, IncidentImpact] = {}
    w = window.total_seconds()
    for k, incs in by_key.items():
        lb = gb.get(k, [])
        items = [MatchItem(i.raised_at.timestamp(), tuple(i.events)) for i in incs]
        p, oa, _ = match_items(items, [signal_item(s) for s in lb], w)
        for i, j in p:
            inc, s = incs[i], lb[j]
            d = s.at.timestamp() - inc.raised_at.timestamp()
            if d > DELAY_SLACK:
                result[inc.alert_id] = IncidentImpact(inc, DELAYED, s.at, d)
            elif d < -DELAY_SLACK:
                result[inc.alert_id] = IncidentImpact(inc, EARLIER, s.at, d)
            else:
                result[inc.alert_id] = IncidentImpact(inc, KEPT, s.at, d)
        for i in oa:
            result[incs[i].alert_id] = IncidentImpact(incs[i], MISSED)
    return [result[i.alert_id] for i in incidents if i.alert_id in result]


# ------------------------------------------------------------------ the run --


def backtest(
    events: Iterable[Event | Received],
    registry: Registry,
    current: Catalogue,
    candidate: Catalogue,
    *,
    start: datetime,
    end: datetime,
    until: datetime | None = None,
    incidents: Sequence[RecordedIncident] = (),
    records: Sequence[RuleRecord] = (),
    teams: Sequence[str] | None = None,
    match_window: timedelta = MATCH_WINDOW,
    runner: EngineRunner = run_engines,
    candidate_registry: Registry | None = None,
) -> BacktestResult:
    """Run both catalogues over ``events`` and compare (module docstring);
    ``runner`` runs the engines (default: in this process); the candidate's
    engine runs on ``candidate_registry`` if given (``run_engines``)."""
    t0 = time.perf_counter()
    cur, cand, n, late = runner(
        events,
        registry,
        current,
        candidate,
        until=until if until is not None else end,
        candidate_registry=candidate_registry,
    )
    elapsed = time.perf_counter() - t0
    res = compare(
        cur,
        cand,
        registry,
        start=start,
        end=end,
        current_version=current.version,
        candidate_version=candidate.version,
        incidents=incidents,
        records=records,
        teams=teams,
        match_window=match_window,
    )
    res.events, res.late, res.elapsed_s = n, late, elapsed
    return res


def compare(
    current: Sequence[Signal],
    candidate: Sequence[Signal],
    registry: Registry,
    *,
    start: datetime,
    end: datetime,
    current_version: str = "",
    candidate_version: str = "",
    incidents: Sequence[RecordedIncident] = (),
    records: Sequence[RuleRecord] = (),
    teams: Sequence[str] | None = None,
    match_window: timedelta = MATCH_WINDOW,
) -> BacktestResult:
    """The differences between two runs' alerts (module docstring)."""
    t_lo, t_hi = start.timestamp(), end.timestamp()

    def inside(s: Signal) -> bool:
        return t_lo <= s.at.timestamp() < t_hi

    residents = registry.resident_by_id()
    zones: dict[str, ZoneInfo] = {}

    def team_of(rid: str) -> str:
        r = residents.get(rid)
        return r.team if r is not None else "?"

    def hour_of(s: Signal) -> int:
        r = residents.get(s.resident)
        tz = r.timezone if r is not None else DEFAULT_TIMEZONE
        z = zones.get(tz)
        if z is None:
            z = zones[tz] = ZoneInfo(tz)
        return s.at.astimezone(z).hour

    res = BacktestResult(
        start=start,
        end=end,
        current_version=current_version,
        candidate_version=candidate_version,
        teams=list(teams) if teams else None,
    )
    res.hours = {h: Tally() for h in range(24)}

    def rule(r: str) -> RuleDiff:
        d = res.rules.get(r)
        if d is None:
            d = res.rules[r] = RuleDiff(r)
        return d

    def team(t: str) -> TeamDiff:
        d = res.by_team.get(t)
        if d is None:
            d = res.by_team[t] = TeamDiff(t)
        return d

    for s in current:
        if inside(s):
            rule(s.rule).current += 1
            res.current_alerts += 1
    for s in candidate:
        if inside(s):
            rule(s.rule).candidate += 1
            res.candidate_alerts += 1

    # the stored alerts of the period: false-alarm feedback and call-out shares
    share_rt: dict[tuple[str, str], float] = {}
    tot: dict[str, list[int]] = {}
    for rec in records:
        d = rule(rec.rule)
        d.recorded_alerts += rec.alerts
        d.recorded_closed += rec.closed
        d.recorded_false_alarms += rec.false_alarms
        d.recorded_callouts += rec.callouts
        if rec.alerts:
            share_rt[(rec.rule, rec.team)] = rec.callouts / rec.alerts
        t = tot.setdefault(rec.rule, [0, 0])
        t[0] += rec.alerts
        t[1] += rec.callouts

    def callout_share(r: str, t: str) -> float | None:
        v = share_rt.get((r, t))
        if v is not None:
            return v
        a = tot.get(r)
        return a[1] / a[0] if a and a[0] else None

    pairs, removed, added = match_alerts(current, candidate, match_window)
    changes: list[Change] = []
    for s in removed:
        if inside(s):
            changes.append(Change(REMOVED, s.rule, s.resident, team_of(s.resident), s, None))
    for s in added:
        if inside(s):
            changes.append(Change(ADDED, s.rule, s.resident, team_of(s.resident), None, s))
    for a, b in pairs:
        if inside(a) and a.at.timestamp() != b.at.timestamp():
            changes.append(Change(SHIFTED, a.rule, a.resident, team_of(a.resident), a, b))
    changes.sort(key=lambda c: (c.at.timestamp(), c.rule, c.resident, c.kind))
    res.changes = changes

    for name in teams or ():
        team(name)
    weeks = res.weeks or 1.0
    for c in changes:
        d = rule(c.rule)
        tally = res.residents.setdefault(c.resident, Tally())
        hour = res.hours[hour_of(c.signal)]
        if c.kind == SHIFTED:
            d.shifted += 1
            d.shift_total_s += c.shift_s or 0.0
            tally.shifted += 1
            hour.shifted += 1
            continue
        td = team(c.team)
        share = callout_share(c.rule, c.team)
        if share is None:
            share = 1.0
            td.assumed += 1
        if c.kind == ADDED:
            d.added += 1
            tally.added += 1
            hour.added += 1
            td.added += 1
            td.added_callouts += share
        else:
            d.removed += 1
            tally.removed += 1
            hour.removed += 1
            td.removed += 1
            td.removed_callouts += share
    for td in res.by_team.values():
        td.alerts_per_week = (td.added - td.removed) / weeks
        td.callouts_per_week = (td.added_callouts - td.removed_callouts) / weeks
    res.by_team = dict(sorted(res.by_team.items()))
    res.rules = dict(sorted(res.rules.items()))
    res.incidents = incident_impacts(incidents, candidate, match_window)
    return res
