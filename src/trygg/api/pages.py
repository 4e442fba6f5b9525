"""The sign-in's own HTML pages: one page shell (the console's style sheet,
no referrer, never cached) and the page that says why a sign-in was refused,
in Norwegian and English.
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

_PAGE = """<!doctype html>
<html lang="nb"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="color-scheme" content="dark light">
<title>trygg - {title}</title>
<link rel="stylesheet" href="/console/static/console.css">
</head><body><main class="signin">
<h1><span aria-hidden="true">●</span> trygg</h1>
{body}
</main>{script}</body></html>"""


def page(title: str, body: str, *, status: int = 200, script: str = "") -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body, script=script),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def refused_page(status: int, nb: str, en: str) -> HTMLResponse:
    body = (
        f'<h2>Ikke logget inn</h2><p class="error" role="alert">{html.escape(nb)}</p>'
        f'<p lang="en" class="note">{html.escape(en)}</p>'
        '<p><a class="button" href="/console">Til trygg / To trygg</a></p>'
    )
    return page("ikke logget inn", body, status=status)
