"""What a catalogue item may say: the rule specs, validated by pydantic.

One model per kind of rule (its parameters and their checks), the
parameters a care plan or an overlay may change (``PARAMS``) and the unit
their bounds are written in. The catalogue (trygg.rules.catalogue) reads
YAML into these and compiles them into the rule kinds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from trygg.durations import Duration, format_duration, parse_duration
from trygg.model import DeviceKind, Room, Severity

RULE_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
OneOrMore = str | list[str]


class MatchSpec(BaseModel):
    """Which events: ``type`` (event types, list names or ``any``) and conditions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: OneOrMore
    room: Room | list[Room] | None = None
    not_room: Room | list[Room] | None = None
    kind: DeviceKind | list[DeviceKind] | None = None
    not_kind: DeviceKind | list[DeviceKind] | None = None
    above: float | None = None
    below: float | None = None


MatchRef = str | MatchSpec
WindowRef = str | dict[str, Any]


class Bound(BaseModel):
    """How far a district may move a parameter: ``min``/``max`` in the parameter's
    own unit (a duration, a number), either optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: str | float | None = None
    max: str | float | None = None


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class RuleTexts(BaseModel):
    """A rule's ``description`` and ``reason`` in a language other than the
    catalogue's English (the ``nb:`` block), so that a page in that language
    (the A3 page) has no English paragraphs. Both are required: a half-translated
    rule would mix languages on one page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: Text
    reason: Text


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    rule: str = Field(pattern=RULE_ID)
    kind: str
    code: str = Field(min_length=1, max_length=16)
    severity: Severity
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    adjustable: dict[str, Bound | None] | None = None
    # The description and reason in Bokmål; optional (a site's own rules may
    # have none), the English ones stand in for it (``texts``).
    nb: RuleTexts | None = None

    PARAMS: ClassVar[tuple[str, ...]] = ("enabled",)
    # The languages a rule's texts may be given in besides English, as fields.
    TEXT_LANGS: ClassVar[tuple[str, ...]] = ("nb",)

    def translated(self, lang: str) -> RuleTexts | None:
        """The rule's texts given in ``lang`` (None for English or when not given)."""
        return getattr(self, lang) if lang in self.TEXT_LANGS else None

    def texts(self, lang: str) -> tuple[str, str]:
        """``(description, reason)`` in ``lang``, falling back to the catalogue's
        English when the rule has none in that language."""
        t = self.translated(lang)
        if t is None:
            return self.description, self.reason
        return t.description, t.reason


class EventSpec(RuleSpec):
    kind: Literal["event"]
    when: MatchRef
    window: WindowRef | None = None
    cancelled_by: MatchRef | None = None
    guard: Duration = timedelta(0)

    PARAMS = ("enabled", "window", "guard")


class ThresholdSpec(RuleSpec):
    kind: Literal["threshold"]
    when: MatchRef
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")

    PARAMS = ("enabled", "above", "below", "clear", "for")

    @model_validator(mode="after")
    def _one_side(self) -> ThresholdSpec:
        if (self.above is None) == (self.below is None):
            raise ValueError("a threshold rule needs exactly one of 'above' or 'below'")
        if self.clear is not None:
            if self.above is not None and self.clear > self.above:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or below above ({self.above:g})"
                )
            if self.below is not None and self.clear < self.below:
                raise ValueError(
                    f"clear ({self.clear:g}) must be at or above below ({self.below:g})"
                )
        return self


class AbsenceSpec(RuleSpec):
    kind: Literal["absence"]
    of: MatchRef
    for_: Duration | None = Field(default=None, alias="for")
    heartbeats: float | None = Field(default=None, gt=0)
    per: Literal["resident", "device"] = "resident"
    window: WindowRef | None = None

    PARAMS = ("enabled", "for", "heartbeats", "window")

    @model_validator(mode="after")
    def _span(self) -> AbsenceSpec:
        if self.for_ is None and self.heartbeats is None:
            raise ValueError("an absence rule needs 'for' (a duration) or 'heartbeats' (a number)")
        if self.heartbeats is not None and self.per != "device":
            raise ValueError("'heartbeats' needs 'per: device'")
        if self.window is not None and self.per == "device":
            raise ValueError("'window' is only supported with 'per: resident'")
        if self.for_ is not None and self.for_.total_seconds() <= 0:
            raise ValueError("'for' must be longer than 0s")
        return self


class SequenceSpec(RuleSpec):
    kind: Literal["sequence"]
    first: MatchRef
    window: WindowRef | None = None
    wait_starts_on: MatchRef | None = None
    unless: MatchRef
    wait: Duration

    PARAMS = ("enabled", "wait", "window")


class CountSpec(RuleSpec):
    kind: Literal["count"]
    of: MatchRef
    count: int = Field(ge=2)
    within: Duration
    window: WindowRef | None = None

    PARAMS = ("enabled", "count", "within", "window")


class ClockSpec(RuleSpec):
    """A device whose clock runs more than ``ahead`` before the receiver's (live)
    or the home's other devices' (replay). docs/rules.md, late events."""

    kind: Literal["clock"]
    ahead: Duration = timedelta(minutes=2)

    PARAMS = ("enabled", "ahead")

    @model_validator(mode="after")
    def _positive(self) -> ClockSpec:
        if self.ahead.total_seconds() <= 0:
            raise ValueError("'ahead' must be longer than 0s")
        return self


# The unit of each parameter a care plan or an overlay may change: how its bounds read.
_DURATION_PARAMS = ("wait", "for", "within", "guard", "ahead")
_NUMBER_PARAMS = ("above", "below", "clear", "heartbeats", "count")
# A care-plan or overlay entry may carry its reason next to the parameters.
REASON = "reason"


def param_value(spec: RuleSpec, param: str) -> Any:
    """The value of ``param`` (as a care plan names it) in ``spec``."""
    return getattr(spec, "for_" if param == "for" else param)


def format_value(v: Any) -> str:
    if isinstance(v, timedelta):
        return format_duration(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "(none)"
    return str(v)


def bound_value(param: str, v: Any) -> Any:
    if param in _DURATION_PARAMS:
        return parse_duration(v)
    if param in _NUMBER_PARAMS:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"not a number: {v!r}")
        return float(v)
    raise ValueError(f"{param!r} takes no bounds (write {param}: {{}})")


SPECS: dict[str, type[RuleSpec]] = {
    "event": EventSpec,
    "threshold": ThresholdSpec,
    "absence": AbsenceSpec,
    "sequence": SequenceSpec,
    "count": CountSpec,
    "clock": ClockSpec,
}


# pydantic puts the union member into an error's location; drop it for lines.
UNION_TAGS = {"str", "MatchSpec", "dict[str,any]", "list[str]", "function-before[_duration()]"}


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
