"""GET /v1/executions/{id}/view: the trace viewer page, and GET /v1/view, its
index of recent executions (gateway/viewer.py builds both).

On its own router: the page is HTML, while its errors are the JSON envelope.
The route calls nothing; the page reads the API itself from the browser.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from gateway.errors import ENVELOPE_JSON
from gateway.viewer import index_page, view_page
from rlm_rs import limits as lim

router = APIRouter(prefix="/v1", tags=["executions"])


@router.get(
    "/executions/{execution_id}/view",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "the trace viewer page"},
        404: {"content": ENVELOPE_JSON, "description": "NOT_FOUND"},
        405: {"content": ENVELOPE_JSON, "description": "METHOD_NOT_ALLOWED"},
        422: {"content": ENVELOPE_JSON, "description": "VALIDATION_ERROR"},
        500: {"content": ENVELOPE_JSON, "description": "INTERNAL_ERROR"},
    },
)
async def view_execution(
    execution_id: str = Path(max_length=lim.MAX_ID_CHARS, pattern=r"^[A-Za-z0-9_\-]+$"),
) -> Any:
    """The trace viewer (HTML). The page carries no data: it reads the API key
    from the URL fragment (`#key=...`, never sent to a server) or asks for it,
    and calls this API from the browser."""
    return view_page(execution_id)


@router.get(
    "/view",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "the viewer's index of recent executions"},
        404: {"content": ENVELOPE_JSON, "description": "NOT_FOUND"},
        405: {"content": ENVELOPE_JSON, "description": "METHOD_NOT_ALLOWED"},
        500: {"content": ENVELOPE_JSON, "description": "INTERNAL_ERROR"},
    },
)
async def view_index() -> Any:
    """Recent executions (HTML), newest first, each linking to its viewer page.
    Like the viewer, the page carries no data: it reads the API key from the URL
    fragment (`#key=...`) or asks for it, and calls GET /v1/executions itself."""
    return index_page()
