"""What the engine and every kind share: the resident and the rule base.

A compiled rule is immutable and shared by every resident with the same care
plan; everything that changes lives in a small state object per resident and
rule, in :attr:`Res.states` (created lazily, ``__slots__`` only). Timers are
*lower bounds*: a state keeps one ``hint`` (the earliest instant at which the
rule could have something to decide); when the engine reaches it, the rule
recomputes its true deadline from the state (:meth:`Rule.rearm`) and either
decides or re-arms. An activity event therefore costs an attribute update,
not a heap operation.

Res and Rule name each other (a resident holds its rules, a rule acts on a
resident), so they live in one module.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol

from trygg.model import Event, EventType, Severity, Signal, SignalAction
from trygg.rules.kinds.matcher import Matcher
from trygg.rules.windows import LocalClock

FIRE = SignalAction.FIRE
CLEAR = SignalAction.CLEAR
NEVER = float("-inf")


class Res:
    """One resident as the engine sees it: zone, effective rules and rule state."""

    __slots__ = (
        "back",
        "clock",
        "devices",
        "dispatch",
        "dseq",
        "dwm",
        "dx",
        "hi",
        "id",
        "late_dispatch",
        "next",
        "rules",
        "seq",
        "states",
        "tol",
        "wm",
    )

    def __init__(
        self,
        rid: str,
        clock: LocalClock,
        rules: tuple[Rule | None, ...],
        devices: tuple[str, ...],
        dispatch: Any,
    ) -> None:
        self.id = rid
        self.dispatch = dispatch  # shared by every resident with the same care plan
        self.clock = clock
        self.rules = rules
        self.devices = devices
        self.states: list[Any] = [None] * len(rules)
        self.wm: float | None = None  # the home's clock: latest event time of a trusted clock
        self.next: float | None = None  # earliest timer hint of any state
        # Per registered device (in ``devices`` order): its latest event time, its
        # own clock (-inf: none yet); devices not in the registry go to ``dx``.
        # Arrays, not dicts: ~100 bytes a home instead of ~700 (state per resident
        # is budgeted, tests/test_rules_engine.py).
        n = len(devices)
        self.dwm = array("d", [NEVER]) * n
        self.dx: dict[str, list[Any]] | None = None  # device -> [time, seq]
        # Receipt order, for judging clocks without a receiver's clock (replay):
        self.seq = 0  # events of this home so far
        self.dseq = array("q", [0]) * n  # per device: ``seq`` at its latest event
        self.back = 0  # ``seq`` at the latest event well behind another device's clock
        self.hi = NEVER  # the newest time any device's own clock has shown
        self.tol = 120.0  # how far ahead a device clock may run (the clock rule's)
        self.late_dispatch: Any = None  # the immediate rules' handlers (for late events)


def device_clock(res: Res, pos: dict[str, int], dev: str) -> tuple[float | None, int]:
    """A device's latest event time (None: none yet) and its place in receipt order."""
    i = pos.get(dev, -1)
    if 0 <= i < len(res.dwm) and res.devices[i] == dev:
        t = res.dwm[i]
        return (None if t == NEVER else t), res.dseq[i]
    x = res.dx.get(dev) if res.dx else None
    return (x[0], x[1]) if x else (None, 0)


def set_device_clock(res: Res, pos: dict[str, int], dev: str, t: float, seq: int) -> None:
    i = pos.get(dev, -1)
    if 0 <= i < len(res.dwm) and res.devices[i] == dev:
        res.dwm[i], res.dseq[i] = t, seq
        return
    if res.dx is None:
        res.dx = {}
    res.dx[dev] = [t, seq]


def device_clocks(res: Res) -> dict[str, tuple[float, int]]:
    """Every device clock of the home: device -> (latest event time, seq)."""
    out = {d: (t, q) for d, t, q in zip(res.devices, res.dwm, res.dseq, strict=False) if t != NEVER}
    if res.dx:
        out.update({d: (float(x[0]), int(x[1])) for d, x in res.dx.items()})
    return out


def load_device_clocks(res: Res, pos: dict[str, int], clocks: dict[str, tuple[float, int]]) -> None:
    n = len(res.devices)
    res.dwm = array("d", [NEVER]) * n
    res.dseq = array("q", [0]) * n
    res.dx = None
    for d, (t, q) in clocks.items():
        set_device_clock(res, pos, d, t, q)


class Env(Protocol):
    def arm(self, res: Res, st: Any, when: float) -> None: ...

    def heartbeat(self, device: str) -> float: ...

    pos: dict[str, int]

    def heartbeats(self, devices: tuple[str, ...]) -> list[float]: ...


@dataclass(slots=True, eq=False)
class Rule:
    """Base of the compiled kinds: what a signal says of its rule, and the event
    types the rule listens to (those of all its matchers, set on construction).

    A kind is a dataclass of its parameters after these six; the catalogue
    compiles each with ``Kind(*base, params...)``."""

    id: str
    idx: int
    code: str
    severity: Severity
    title: str
    version: str
    types: frozenset[EventType] = field(init=False, default=frozenset())
    kind: ClassVar[str] = ""
    starts: ClassVar[bool] = False  # needs on_start when a resident is first seen

    def __post_init__(self) -> None:
        # a rule listens to every type any of its matchers names (an event rule
        # to its cancel types even with guard 0: a care plan may add a guard)
        for f in fields(self):
            m = getattr(self, f.name)
            if isinstance(m, Matcher):
                self.types = self.types | m.types

    def signal(
        self,
        action: SignalAction,
        res: Res,
        at: datetime,
        events: tuple[str, ...],
        device: str | None = None,
    ) -> Signal:
        return Signal(
            action=action,
            rule=self.id,
            resident=res.id,
            at=at,
            code=self.code,
            severity=self.severity,
            catalogue_version=self.version,
            events=events,
            device=device,
            title=self.title,
        )

    def signal_at_event(
        self,
        action: SignalAction,
        res: Res,
        ev: Event,
        events: tuple[str, ...],
        device: str | None = None,
    ) -> Signal:
        """A signal at ``ev``'s own time, in the home's zone (an event decided)."""
        return self.signal(action, res, ev.time.astimezone(res.clock.tz), events, device)

    def signal_at(
        self,
        action: SignalAction,
        res: Res,
        ts: float,
        events: tuple[str, ...],
        device: str | None = None,
    ) -> Signal:
        """A signal at the instant ``ts``, in the home's zone (a timer decided)."""
        return self.signal(action, res, datetime.fromtimestamp(ts, res.clock.tz), events, device)

    def rearm(self, env: Env, res: Res, st: Any) -> None:
        """Arm ``st``'s timer at the rule's deadline for it, if it has one."""
        d = self.deadline(env, res, st)
        if d is not None:
            env.arm(res, st, d)

    # -- the interface the engine drives ---------------------------------
    def handler(self) -> Any:
        """The bound method the engine calls for each event this rule listens to."""
        return self.on_event

    def on_start(self, env: Env, res: Res, ts: float) -> None:
        return None

    def on_event(self, env: Env, res: Res, ev: Event, ts: float) -> list[Signal] | None:
        raise NotImplementedError

    def on_timer(self, env: Env, res: Res, st: Any, due: float) -> list[Signal] | None:
        return None

    def deadline(self, env: Env, res: Res, st: Any) -> float | None:
        return None

    def dump(self, res: Res, st: Any) -> Any:
        return None

    def load(self, res: Res, data: Any) -> Any:
        return None
