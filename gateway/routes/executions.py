"""Answerer executions: start (201), follow-ups (201), get, steps, wait, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from gateway import models as m
from gateway.calls import Call, build, caller, dump, start_deadline, wait_deadline
from gateway.convert import to_dict
from gateway.errors import ERROR_RESPONSES
from rlm_rs import limits as lim
from rlm_rs.v1 import execution_pb2

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["executions"])


@router.post("/sessions/{session_id}/executions", response_model=m.ExecutionView, status_code=201)
async def start_execution(session_id: str, body: m.StartExecutionBody, call: Call = caller) -> Any:
    req = build(execution_pb2.StartExecutionRequest(), {"session_id": session_id, **dump(body)})
    return to_dict(await call(call.stubs.executions.StartExecution, req, start_deadline(body.options)))


@router.post("/executions/{execution_id}/followups", response_model=m.ExecutionView, status_code=201)
async def start_followup(execution_id: str, body: m.FollowupBody, call: Call = caller) -> Any:
    """A follow-up question on a finished execution (409 CONFLICT while it runs):
    a new Answerer execution on the same session that starts from its `work`
    state and a digest of its turns; `followup_of` names the source."""
    req = build(execution_pb2.StartFollowupRequest(), {"execution_id": execution_id, **dump(body)})
    return to_dict(await call(call.stubs.executions.StartFollowup, req, start_deadline(body.options)))


@router.get("/executions/{execution_id}", response_model=m.ExecutionView)
async def get_execution(execution_id: str, call: Call = caller) -> Any:
    req = build(execution_pb2.GetExecutionRequest(), {"execution_id": execution_id})
    return to_dict(await call(call.stubs.executions.GetExecution, req))


@router.get("/executions/{execution_id}/steps", response_model=m.StepList)
async def list_steps(
    execution_id: str,
    call: Call = caller,
    page_size: int = Query(
        default=0, ge=0, le=lim.MAX_STEPS_PAGE_SIZE, description="at most this many steps (0: all that fit)"
    ),
    page_token: str = Query(
        default="", max_length=lim.MAX_PAGE_TOKEN_CHARS, description="a previous page's next_page_token"
    ),
) -> Any:
    req = build(
        execution_pb2.ListStepsRequest(),
        {"execution_id": execution_id, "page_size": page_size, "page_token": page_token},
    )
    return to_dict(await call(call.stubs.executions.ListSteps, req))


@router.post("/executions/{execution_id}/wait", response_model=m.ExecutionView)
async def wait_execution(execution_id: str, body: m.WaitBody | None = None, call: Call = caller) -> Any:
    body = body or m.WaitBody()
    req = build(
        execution_pb2.WaitExecutionRequest(),
        {"execution_id": execution_id, "timeout_seconds": body.timeout_seconds},
    )
    deadline = wait_deadline(body.timeout_seconds or lim.DEFAULT_WAIT_TIMEOUT_SECONDS)
    return to_dict(await call(call.stubs.executions.WaitExecution, req, deadline))


@router.post("/executions/{execution_id}/cancel", response_model=m.CancelResult)
async def cancel_execution(execution_id: str, call: Call = caller) -> Any:
    req = build(execution_pb2.CancelExecutionRequest(), {"execution_id": execution_id})
    return to_dict(await call(call.stubs.executions.CancelExecution, req))
