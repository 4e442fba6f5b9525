"""The engine's verdict on a device's clock: does it run ahead of the home's
(or of the receiver's), and what the catalogue's clock rule (kind: clock) is
told.

``Engine.process`` asks only when there is something to judge a clock by (a
receipt time, or events of the home out of order; docs/rules.md, the
late-event policy). Pure functions over one resident's state (``Res``);
``clock_idx`` is the clock rule's place among the catalogue's rules (None: the
catalogue has none).
"""

from __future__ import annotations

from datetime import datetime

from trygg.model import Event, Signal
from trygg.rules.kinds import ClockRule, ClockState, Res, Rule, device_clocks

DEFAULT_AHEAD = 120.0  # seconds a clock may run ahead when the catalogue has no clock rule


def clock_rule(res: Res, clock_idx: int | None) -> ClockRule | None:
    i = clock_idx
    if i is None:
        return None
    r = res.rules[i]
    return r if isinstance(r, ClockRule) else None


def tolerance(
    compiled: tuple[Rule | None, ...], clock_idx: int | None, rules: tuple[Rule | None, ...]
) -> float:
    """How far ahead a device clock may run under these rules (the clock rule's
    ``ahead``, also when a care plan switches its alert off)."""
    i = clock_idx
    if i is not None:
        r = rules[i] or compiled[i]
        if isinstance(r, ClockRule):
            return r.ahead
    return DEFAULT_AHEAD


def runs_ahead(
    res: Res,
    clock_idx: int | None,
    dev: str,
    ts: float,
    received: datetime | None,
    prev: float | None,
    mine: int,
) -> float | None:
    """The reference time if ``dev``'s clock runs ahead at this event, else None.
    ``prev``/``mine``: the device's previous time and place in receipt order.

    Live, the reference is the receiver's clock (``received``). In replay
    there is none, and a jump forward may be a quiet home; so a device is
    judged only on evidence in the order events arrived: since its previous
    event, another device spoke with a time well behind that previous
    event (the rest of the home still lives in its past). The reference is
    then the newest time among the devices that spoke since. A device
    known wrong is judged by the home's other devices at every event."""
    tol = res.tol
    if received is not None:
        ref = received.timestamp()
        return ref if ts > ref + tol else None
    if prev is None or res.back == 0:
        return None  # the usual case: nothing ever arrived out of order
    st = res.states[clock_idx] if clock_idx is not None else None
    bad = st is not None and dev in st.bad
    if res.back <= mine and not bad:
        return None  # nothing arrived out of order since its previous event
    clocks = device_clocks(res)
    since = [t for d, (t, q) in clocks.items() if d != dev and q > mine]
    if since:
        ref = max(since)
    elif bad:
        others = [t for d, (t, _) in clocks.items() if d != dev]
        if not others:
            return None
        ref = max(others)
    else:
        return None
    if ts > ref + tol and (bad or prev > ref + tol):
        return ref
    return None


def wrong_clocks(res: Res, clock_idx: int | None) -> dict[str, str] | tuple[()]:
    """The home's devices known to have a wrong clock (device -> the event that
    showed it), as the clock rule's state keeps them."""
    i = clock_idx
    st = res.states[i] if i is not None else None
    return st.bad if isinstance(st, ClockState) else ()


def clock_verdict(
    res: Res, clock_idx: int | None, event: Event, ahead: bool, out: list[Signal]
) -> bool:
    """Tell the clock rule; True if a device known wrong was cleared."""
    rule = clock_rule(res, clock_idx)
    if rule is None:
        return False
    sigs = rule.judged(res, event, ahead, event.time.astimezone(res.clock.tz))
    if sigs:
        out.extend(sigs)
        return not ahead
    return False
