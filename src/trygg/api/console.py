"""The care-staff console's pages: the single page app, its service worker and
manifest (installable on a phone), and its static files.

The pages are served without a credential; the console signs in with its
session cookie (:mod:`trygg.api.sessions`, :mod:`trygg.api.signin_routes`).
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """``/`` (to the console), ``/console`` and ``/console/static``."""

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console")

    @app.get("/console", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    # The installable console: its service worker (scope /console, so it is served
    # from there, not from /console/static/) and its web app manifest.
    @app.get("/console/sw.js", include_in_schema=False)
    async def console_sw() -> FileResponse:
        return FileResponse(
            STATIC / "sw.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/console"},
        )

    @app.get("/console/manifest.webmanifest", include_in_schema=False)
    async def console_manifest() -> FileResponse:
        return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
