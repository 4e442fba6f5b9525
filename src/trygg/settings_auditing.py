"""The auditing settings: response-time targets, reports and retention (docs/auditing.md).

A group of the fields :class:`trygg.settings.Settings` is made of; the checks of
their values are in trygg.settings.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from trygg.settings_units import Share, share, unit


class AuditingSettings(BaseModel):
    """Auditing: response-time targets, reports and retention (docs/auditing.md)."""

    report_timezone: str = Field("Europe/Oslo", description="local time for hours, days, weeks")
    target_answer_60s: Share = Field(
        0.975,
        gt=0,
        le=1,
        description="share of alerts answered within 60 s (0.975, or 97.5%)",
        json_schema_extra=share("0.975"),
    )
    target_answer_180s: Share = Field(
        0.99,
        gt=0,
        le=1,
        description="share of alerts answered within 180 s (0.99, or 99%)",
        json_schema_extra=share("0.99"),
    )
    exception_answer_s: int = Field(
        180,
        ge=1,
        le=86400,
        description="answer time over which an alert needs an exception report (60 or 180) "
        "(seconds)",
        json_schema_extra=unit("seconds"),
    )
    exception_arrival_min: int = Field(
        60,
        ge=1,
        le=1440,
        description="arrival time that needs an exception (minutes)",
        json_schema_extra=unit("minutes"),
    )
    retention_events_days: int = Field(
        90,
        ge=1,
        le=36525,
        description="raw sensor events are dropped after this (days)",
        json_schema_extra=unit("days"),
    )
    retention_dead_letters_days: int = Field(
        30,
        ge=1,
        le=36525,
        description="dead letters are dropped after this (days)",
        json_schema_extra=unit("days"),
    )
    retention_records_days: int = Field(
        3653,
        ge=1,
        le=36525,
        description="alerts, lifecycle records and exception reports (days; 10 years)",
        json_schema_extra=unit("days"),
    )
    retention_access_log_days: int = Field(
        3653,
        ge=1,
        le=36525,
        description="the access log (days; 10 years)",
        json_schema_extra=unit("days"),
    )
    retention_batch: int = Field(
        10000,
        ge=1,
        le=1_000_000,
        description="rows per DELETE batch in retention",
        json_schema_extra=unit("rows"),
    )
