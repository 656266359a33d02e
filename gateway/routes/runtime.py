"""Runtime executions: create (201), run a step, resolve tools; the caller drives."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway import models as m
from gateway.calls import Call, build, caller, dump, wait_deadline
from gateway.convert import to_dict
from gateway.errors import ERROR_RESPONSES
from rlm_rs import limits as lim
from rlm_rs.v1 import execution_pb2

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["runtime"])

# gRPC deadlines. A step may run for its execution's max_step_seconds, up to
# that budget's ceiling: the gateway must not give up (503) on a step the
# control plane is still running. Tool resolution waits on providers and
# child executions.
STEP_DEADLINE_SECONDS = wait_deadline(lim.BUDGET_CEILINGS["max_step_seconds"])
RESOLVE_DEADLINE_SECONDS = 300.0


@router.post("/sessions/{session_id}/executions/runtime", response_model=m.ExecutionView, status_code=201)
async def create_runtime_execution(
    session_id: str, body: m.CreateRuntimeBody | None = None, call: Call = caller
) -> Any:
    req = build(execution_pb2.CreateRuntimeExecutionRequest(), {"session_id": session_id, **dump(body)})
    return to_dict(await call(call.stubs.executions.CreateRuntimeExecution, req))


@router.post("/executions/{execution_id}/steps", response_model=m.StepOutput)
async def run_step(execution_id: str, body: m.RunStepBody, call: Call = caller) -> Any:
    req = build(execution_pb2.RunStepRequest(), {"execution_id": execution_id, **dump(body)})
    return to_dict(await call(call.stubs.executions.RunStep, req, STEP_DEADLINE_SECONDS))


@router.post("/executions/{execution_id}/tools/resolve", response_model=m.ResolveToolsResult)
async def resolve_tools(execution_id: str, body: m.ResolveToolsBody, call: Call = caller) -> Any:
    req = build(execution_pb2.ResolveToolsRequest(), {"execution_id": execution_id, **dump(body)})
    return to_dict(await call(call.stubs.executions.ResolveTools, req, RESOLVE_DEADLINE_SECONDS))
