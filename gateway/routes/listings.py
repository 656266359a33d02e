"""GET /v1/sessions and GET /v1/executions: the caller's own, newest first,
in pages with opaque cursors (docs/api.md#listings). One ListSessions or
ListExecutions call each; filters, bounds and cursors are checked by the
control plane (rlm_rs/control/listings.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from gateway import models as m
from gateway.calls import Call, build, caller
from gateway.convert import to_dict
from gateway.errors import ERROR_RESPONSES
from rlm_rs import limits as lim
from rlm_rs.errors import RlmError
from rlm_rs.v1 import execution_pb2, session_pb2
from rlm_rs.wire_enums import EXECUTION_STATUS, SESSION_STATUS, WireEnum

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["listings"])

_PAGE_SIZE = Query(
    default=0,
    ge=0,
    le=lim.MAX_SESSIONS_PAGE_SIZE,
    description=f"at most this many (0: {lim.DEFAULT_SESSIONS_PAGE_SIZE})",
)
_PAGE_TOKEN = Query(
    default="", max_length=lim.MAX_LISTING_TOKEN_CHARS, description="a previous page's next_page_token"
)
_STATUS = Query(default="", max_length=32, description='only this status ("": every status)')


def _status(value: str, statuses: WireEnum[Any, Any]) -> str | None:
    """The filter as the request carries it (None: every status); a value
    that is not one of the statuses' names is VALIDATION_ERROR, listing them."""
    names = sorted(str(status) for status in statuses.domain)
    if value and value not in names:
        raise RlmError("VALIDATION_ERROR", f"status must be one of {', '.join(names)}")
    return value or None


@router.get("/sessions", response_model=m.SessionList)
async def list_sessions(
    call: Call = caller, status: str = _STATUS, page_size: int = _PAGE_SIZE, page_token: str = _PAGE_TOKEN
) -> Any:
    """The caller's sessions, newest first (deleted ones left out)."""
    req = build(
        session_pb2.ListSessionsRequest(),
        {"status": _status(status, SESSION_STATUS), "page_size": page_size, "page_token": page_token},
    )
    return to_dict(await call(call.stubs.sessions.ListSessions, req))


@router.get("/executions", response_model=m.ExecutionList)
async def list_executions(
    call: Call = caller,
    session_id: str = Query(default="", max_length=lim.MAX_ID_CHARS, description="only this session's"),
    status: str = _STATUS,
    page_size: int = _PAGE_SIZE,
    page_token: str = _PAGE_TOKEN,
) -> Any:
    """The caller's top-level executions, newest first (a child is in its parent's tree)."""
    req = build(
        execution_pb2.ListExecutionsRequest(),
        {
            "session_id": session_id,
            "status": _status(status, EXECUTION_STATUS),
            "page_size": page_size,
            "page_token": page_token,
        },
    )
    return to_dict(await call(call.stubs.executions.ListExecutions, req))
