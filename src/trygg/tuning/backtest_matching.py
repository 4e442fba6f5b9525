"""How the back-test (trygg.tuning.backtest) pairs the alerts of its two runs
(``match_alerts``); ``match_items`` pairs any two lists of timed items with
their causing events, also recorded incidents with the candidate's alerts
(``backtest.incident_impacts``).

**Matching the alerts of the two runs.** An alert of the current run and one
of the candidate run are *the same alert* when they have the same rule,
resident and device (per-device rules), and

1. they share a causing event: the ``first`` event of a sequence (the
   ``bed.vacant`` of a bed exit), the ``when`` event of an event rule, the
   last activity before a silence, the first reading out of range, a
   counted event. A longer wait, a longer silence or a later hold time
   moves the alert but keeps its cause, so this pairs alerts however far
   apart they are; several candidates sharing causes: the nearest in time;
2. otherwise (a changed limit that makes a different reading the first out
   of range, an absence with nothing seen yet): the remaining alerts are
   paired by time proximity, nearest first, if at most ``match_window``
   (default 1 h) apart.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from trygg.model import Signal

MATCH_WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class MatchItem:
    ts: float
    events: tuple[str, ...]


def match_items(
    a: Sequence[MatchItem], b: Sequence[MatchItem], window_s: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair items of ``a`` with items of ``b`` (one group: same rule, resident,
    device): first by a shared causing event (nearest in time among those),
    then the rest by time, nearest first, within ``window_s``. Returns the
    pairs (index in a, index in b) and the unpaired indexes of each side."""
    used_b: set[int] = set()
    pairs: list[tuple[int, int]] = []
    by_event: dict[str, list[int]] = {}
    for j, it in enumerate(b):
        for e in it.events:
            by_event.setdefault(e, []).append(j)
    left_a: list[int] = []
    for i in sorted(range(len(a)), key=lambda k: a[k].ts):
        it = a[i]
        best = -1
        best_d = 0.0
        for e in it.events:
            for j in by_event.get(e, ()):
                if j in used_b:
                    continue
                d = abs(b[j].ts - it.ts)
                if best < 0 or d < best_d or (d == best_d and j < best):
                    best, best_d = j, d
        if best >= 0:
            used_b.add(best)
            pairs.append((i, best))
        else:
            left_a.append(i)
    rest_b = sorted((j for j in range(len(b)) if j not in used_b), key=lambda k: b[k].ts)
    times = [b[j].ts for j in rest_b]
    cands: list[tuple[float, float, int, int]] = []
    for i in left_a:
        t = a[i].ts
        lo = bisect_left(times, t - window_s)
        hi = bisect_right(times, t + window_s)
        for k in range(lo, hi):
            cands.append((abs(times[k] - t), t, i, rest_b[k]))
    cands.sort()
    done_a: set[int] = set()
    for _, _, i, j in cands:
        if i in done_a or j in used_b:
            continue
        done_a.add(i)
        used_b.add(j)
        pairs.append((i, j))
    only_a = [i for i in left_a if i not in done_a]
    only_b = [j for j in range(len(b)) if j not in used_b]
    return pairs, only_a, only_b


def group_signals(
    sigs: Iterable[Signal], key: Callable[[Signal], tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[Signal]]:
    out: dict[tuple[Any, ...], list[Signal]] = {}
    for s in sigs:
        out.setdefault(key(s), []).append(s)
    return out


def signal_item(s: Signal) -> MatchItem:
    return MatchItem(s.at.timestamp(), s.events)


def match_alerts(
    current: Sequence[Signal], candidate: Sequence[Signal], window: timedelta = MATCH_WINDOW
) -> tuple[list[tuple[Signal, Signal]], list[Signal], list[Signal]]:
    """Pair the two runs' alerts (module docstring); returns the pairs, the
    current alerts without a partner and the candidate alerts without one."""

    def key(s: Signal) -> tuple[Any, ...]:
        return (s.rule, s.resident, s.device)

    ga, gb = group_signals(current, key), group_signals(candidate, key)
    pairs: list[tuple[Signal, Signal]] = []
    only_a: list[Signal] = []
    only_b: list[Signal] = []
    w = window.total_seconds()
    for k in sorted(set(ga) | set(gb), key=lambda k: tuple(str(x) for x in k)):
        la, lb = ga.get(k, []), gb.get(k, [])
        p, oa, ob = match_items([signal_item(s) for s in la], [signal_item(s) for s in lb], w)
        pairs.extend((la[i], lb[j]) for i, j in p)
        only_a.extend(la[i] for i in oa)
        only_b.extend(lb[j] for j in ob)
    return pairs, only_a, only_b
