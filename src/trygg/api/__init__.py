"""The HTTP API and the care-staff console (FastAPI, served inside the runner).

See docs/api.md. ``trygg.api.app.create_app`` builds the ASGI app around a
running :class:`trygg.runner.alerting.AlertService`.
"""
