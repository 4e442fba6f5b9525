"""The API's answers as pydantic models: the OpenAPI description's response types.

Times are ISO 8601 strings as Python writes them (``2026-12-06T15:47:10.120000+00:00``),
the same as before the answers were typed. The alert's fields are read from
the :class:`trygg.alerts.alert.Alert` dataclass, so a field added there is in
the API and its description without a change here; alerts stored by an older
trygg (fewer fields) are still answered. Enumerations are documented with
their values but not enforced on the way out, so an alert stored with a value
this version no longer knows is still shown rather than failing the list.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    create_model,
)

from trygg.alerts.alert import Alert, Step
from trygg.alerts.silences import Silence


def _isoformat(v: datetime) -> str:
    return v.isoformat()


Timestamp = Annotated[
    datetime,
    PlainSerializer(_isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _enum(e: type[StrEnum]) -> Any:
    return Annotated[
        str, WithJsonSchema({"type": "string", "enum": [m.value for m in e], "title": e.__name__})
    ]


def _api_type(tp: Any) -> Any:
    """The JSON-side type of a dataclass field's type."""
    if tp is datetime:
        return Timestamp
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return _enum(tp)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, Union):
        return functools.reduce(operator.or_, [_api_type(a) for a in typing.get_args(tp)])
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return list[_api_type(args[0])]  # type: ignore[misc]
        return tp
    return tp


# What an alert stored before schema 3 has (trygg.store.alerts._snap): required.
_REQUIRED = {"id", "resident", "team", "rule", "code", "severity", "state", "raised_at"}

_FIELD_DOCS = {
    "id": "the alert's id (a UUID)",
    "resident": "the resident's id",
    "team": "the resident's team",
    "rule": "the rule that raised it",
    "catalogue_version": "the rule catalogue version that raised it",
    "code": "the VKP alarm code ('4.1' fall, 'T.1' device offline, ...)",
    "severity": "red, yellow or green",
    "raised_at": "when trygg raised it",
    "events": "the ids of the events that fired it",
    "device": "the device it is about (technical alerts)",
    "state": "where it is in its lifecycle",
    "repeat_count": "how often the rule fired into it again",
    "suppressed": "stored but not routed (a silence, or a device it depends on is offline)",
    "suppressed_reason": "why, in English",
    "held_until": "held back behind a red alert of the resident until this time",
    "held_by": "the red alert holding it back",
    "flapping": "fired often in a short time: folded into one alert",
    "acknowledged_by": "who acknowledged it",
    "assignee": "who took it or was assigned it",
    "outcome": "what it turned out to be (resolve, cancel)",
    "cancel_reason": "why it was cancelled",
    "closed_at": "when it was resolved or cancelled",
    "escalation_level": "the escalation step reached",
    "position": "the alarm unit's latest position (latitude, longitude)",
}


def _alert_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(Alert)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Alert):
        if f.name == "records":
            continue
        tp = _api_type(hints[f.name])
        doc = _FIELD_DOCS.get(f.name)
        if f.name in _REQUIRED:
            fields[f.name] = (tp, Field(description=doc))
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
            if isinstance(default, tuple):
                default = list(default)
            elif isinstance(default, StrEnum):
                default = default.value
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default, tp = None, tp | None
        fields[f.name] = (tp, Field(default, description=doc))
    return fields


_ALERT_EXTRAS: dict[str, Any] = {
    "district": (
        str,
        Field(
            "default",
            description="the district (bydel) of the alert's team, as the registry has it now"
            " ('default' for a team in no district)",
        ),
    ),
    "version": (
        int,
        Field(0, description="the number of lifecycle records: send it back as expected_version"),
    ),
    "allowed_actions": (
        list[str],
        Field(default_factory=list, description="what the caller may do now (console buttons)"),
    ),
    "rule_words": (
        dict[str, str],
        Field(
            default_factory=dict, description="the rule's name in Norwegian (nb) and English (en)"
        ),
    ),
    "suppressed_why": (
        dict[str, str] | None,
        Field(
            None,
            description="why it is suppressed, in parts: {'code': 'silenced', 'reason', 'by', "
            "'scope', 'target', 'until'}, {'code': 'inhibited', 'device', 'alert'} or "
            "{'code': 'other', 'text'}",
        ),
    ),
}

# Fields of a newer trygg (a rolling upgrade) pass through: extra="allow".
AlertView = create_model(
    "AlertView",
    __config__=ConfigDict(extra="allow"),
    __doc__="An alert as the caller sees it.",
    **_alert_fields(),
    **_ALERT_EXTRAS,
)

_SILENCE_FIELDS: dict[str, Any] = {n: (f.annotation, f) for n, f in Silence.model_fields.items()}
SilenceView = create_model(
    "SilenceView",
    __doc__="A silence, and whether it is in force now.",
    **_SILENCE_FIELDS,
    active=(bool, Field(description="in force now")),
)


class ChannelHealthItem(BaseModel):
    name: str = Field(description="'webhook:<name>', 'apprise:<scheme>', 'email', 'mqtt', ...")
    ok: bool
    failing_since: Timestamp | None
    consecutive_failures: int
    last_success: Timestamp | None
    last_failure: Timestamp | None
    last_error: str | None
    attempts: int


class ChannelHealth(BaseModel):
    channels: list[ChannelHealthItem]
    retrying: int = Field(description="notifications not yet delivered that are being retried")


class AlertList(BaseModel):
    alerts: list[AlertView]
    count: int


class AlertOne(BaseModel):
    alert: AlertView


class RecordView(BaseModel):
    alert_id: str
    seq: int
    step: Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in Step]})]
    at: Timestamp
    actor: str
    note: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class VkpEvent(BaseModel):
    code: int = Field(description="the VKP life-cycle event code")
    name: str
    at: Timestamp
    actor: str


class ScheduleStep(BaseModel):
    level: int
    at: Timestamp
    notify: list[str] = Field(description="whom the step notifies")


class DeliveryView(BaseModel):
    key: str = Field(description="the idempotency key: alert:action:level:n:channel:address")
    channel: str
    address: str
    at: Timestamp
    attempts: int
    ok: bool
    status: int | None
    error: str | None
    latency_ms: float | None


class AlertDetail(BaseModel):
    alert: AlertView
    records: list[RecordView]
    vkp_events: list[VkpEvent]
    schedule: list[ScheduleStep] = Field(description="the escalation still to come")
    deliveries: list[DeliveryView]


class SilenceList(BaseModel):
    silences: list[SilenceView]


class SilenceOne(BaseModel):
    silence: SilenceView


class EventWords(BaseModel):
    nb: str
    en: str


class TimelineEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    time: Timestamp
    device: str
    event_id: str
    type: str
    value: float | None = None
    room: str | None = None
    words: EventWords


class Timeline(BaseModel):
    resident: str
    team: str
    district: str = Field("default", description="the district (bydel) of the resident's team")
    events: list[TimelineEvent]
    alerts: list[AlertView]


class AccessEntry(BaseModel):
    at: Timestamp
    actor: str
    role: str
    action: str = Field(description="alert.read, alert.stream, alerts.list, resident.timeline")
    resident: str | None
    detail: dict[str, Any]


class AccessLog(BaseModel):
    entries: list[AccessEntry]


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    ready: bool
    mqtt: bool
    database: bool
    spool: bool
    alerts: bool
