"""The trace viewer: GET /v1/executions/{id}/view, one self-contained HTML page,
and its index, GET /v1/view (recent executions, viewer_index.html).

The page itself holds no data, so it needs no server-side auth: it reads the
API key from the URL *fragment* (`/view#key=rlm_key_...`, never sent to any
server or written to a log) or asks for it, then calls the ordinary
authenticated API (execution, steps, spans/get) from the browser. Every value
is inserted with textContent (no HTML from data), and a strict CSP allows no
other origin.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from fastapi.responses import HTMLResponse

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONTEXT_CHARS = 160
_HEADERS = {
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}


@cache
def _page() -> str:
    return resources.files("gateway").joinpath("viewer.html").read_text(encoding="utf-8")


INDEX_PAGE_SIZE = 50


@cache
def _index() -> str:
    return resources.files("gateway").joinpath("viewer_index.html").read_text(encoding="utf-8")


def index_page() -> HTMLResponse:
    """GET /v1/view: recent executions (GET /v1/executions from the browser), each
    linking to its viewer page; the same key handling and headers as view_page."""
    return HTMLResponse(_index().replace("__PAGE_SIZE__", str(INDEX_PAGE_SIZE)), headers=_HEADERS)


def view_page(execution_id: str) -> HTMLResponse:
    page = (
        _page()
        .replace("__EXECUTION_ID__", json.dumps(execution_id).replace("<", "\\u003c"))
        .replace("__CONTEXT__", str(CONTEXT_CHARS))
    )
    return HTMLResponse(page, headers=_HEADERS)
