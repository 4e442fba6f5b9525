"""Auditing: response-time reports, exception reports, the tamper-evident
trail's verification and the VKP (FHIR R4) export (docs/auditing.md).

The SQL lives in trygg.store (kpi, audit, retention); this package builds
reports from it, renders them (CSV, JSON, HTML with plots) and holds the
verification and FHIR logic that is not SQL.
"""
