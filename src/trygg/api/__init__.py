"""The HTTP API and the care-staff console (FastAPI, served inside the runner).

See docs/api.md. ``trygg.api.app.create_app`` builds the ASGI app around a
running alert service, :class:`trygg.alerts.service.Alerts` (the embedded
runner's or the distributed one's).
"""
