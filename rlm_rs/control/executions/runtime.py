"""Runtime mode: the caller drives the execution one step at a time.

Each RunStep and ResolveTools call claims its execution (claims.py): a call
sent while another runs on the same execution answers CONFLICT and runs
nothing; max_turns and max_total_seconds are checked under the claim, so no
race can pass them. A step goes through the same turn pipeline as an
Answerer turn (turn.py). A runtime execution past max_total_seconds ends
BUDGET_EXCEEDED when its next call is due, when a step ends past it, or when
the sweep finds it idle. A call on an execution that has ended answers the
code of how it ended (`ended`), never CONFLICT.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlm_rs.canonical import canonical_json
from rlm_rs.control.budgets import deadline_epoch
from rlm_rs.control.executions import turn as pipeline
from rlm_rs.control.executions.claims import StepClaim
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.finish import finish
from rlm_rs.control.executions.leases import holding
from rlm_rs.control.executions.records import State
from rlm_rs.control.limits import parse_state_override
from rlm_rs.control.tools import Resolution
from rlm_rs.domain import ExecutionMode, ExecutionRecord, ExecutionStatus
from rlm_rs.errors import BudgetExceeded, ConflictError, RlmError
from rlm_rs.observability import logged_execution
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.v1.common_pb2 import ToolRequests


@logged_execution
def run_step(
    ctx: Context, tenant_id: str, execution_id: str, code: str, state_override: str | None, resolve: bool
) -> StepResult:
    """One caller-driven step, alone on its execution."""
    execution = _runtime(ctx, tenant_id, execution_id)
    override = parse_state_override(state_override, execution) if state_override is not None else None
    with _ended_as_spec_code():
        return _run_step(ctx, tenant_id, execution, code, override, resolve)


def _run_step(
    ctx: Context,
    tenant_id: str,
    execution: ExecutionRecord,
    code: str,
    override: dict[str, Any] | None,
    resolve: bool,
) -> StepResult:
    claim = StepClaim.take(ctx.storage.metadata, execution)
    try:
        with holding(claim.lease), claim.kept_alive():  # every write below is fenced by the claim
            execution = claim.execution
            _check_turns(ctx, execution)
            _check_deadline(ctx, execution)
            session = ctx.storage.metadata.get_session(tenant_id, execution["session_id"])
            state, state_json = ctx.records.load_state_text(execution)
            if override is not None:
                state, state_json = _overridden(state, override), None
            turn = pipeline.step(
                ctx, execution, session, code, state,
                state_json=state_json, resolve=resolve, started=time.perf_counter(),
            )  # fmt: skip
            execution = pipeline.commit(ctx, execution, turn)
            pipeline.end_if_due(ctx, execution, turn)
        return turn.result
    finally:
        claim.release()


def _overridden(state: State, override: dict[str, Any]) -> State:
    """The caller's state override, with the reserved `_` keys kept from the persisted state."""
    return {
        **{k: v for k, v in override.items() if not k.startswith("_")},
        **{k: v for k, v in state.items() if k.startswith("_")},
    }


@logged_execution
def resolve_tools(
    ctx: Context, tenant_id: str, execution_id: str, requests: ToolRequests, sub_model: str
) -> Resolution:
    """Resolve a runtime caller's tool requests and inject the results
    into the persisted state; claimed like a step, so it never races one."""
    execution = _runtime(ctx, tenant_id, execution_id)
    with _ended_as_spec_code():
        return _resolve_tools(ctx, tenant_id, execution, requests, sub_model)


def _resolve_tools(
    ctx: Context, tenant_id: str, execution: ExecutionRecord, requests: ToolRequests, sub_model: str
) -> Resolution:
    claim = StepClaim.take(ctx.storage.metadata, execution)
    try:
        with holding(claim.lease), claim.kept_alive():  # every write below is fenced by the claim
            execution = claim.execution
            _check_deadline(ctx, execution)
            session = ctx.storage.metadata.get_session(tenant_id, execution["session_id"])
            consumed = execution["budgets_consumed"].copy()
            resolution = pipeline.resolve_tools(ctx, execution, session, requests, consumed, sub_model)
            # the next step sees the results too (callers may also pass them in a state override)
            state = ctx.records.load_state(execution)
            resolution.inject(state)
            turn = int(execution["next_turn"])
            ctx.records.commit(
                execution, turn, {"budgets_consumed": consumed}, [("STATE", canonical_json(state), None)]
            )
        return resolution
    finally:
        claim.release()


def _runtime(ctx: Context, tenant_id: str, execution_id: str) -> ExecutionRecord:
    execution = ctx.records.get(tenant_id, execution_id)
    if execution["mode"] != ExecutionMode.RUNTIME:
        raise RlmError("VALIDATION_ERROR", "steps and tool resolution are only for runtime executions")
    if execution["status"] != ExecutionStatus.RUNNING:
        raise ended(str(execution["status"]))
    return execution


# Why a call on an ended runtime execution is refused, by how it ended: the
# budget that ended it (the same answer as the call that ended it), else the
# request itself is invalid. Never CONFLICT: that code is for a step that
# meets another one still running (claims.py).
_ENDED_CODES = {
    ExecutionStatus.BUDGET_EXCEEDED: "BUDGET_EXCEEDED",
    ExecutionStatus.MAX_TURNS_EXCEEDED: "MAX_TURNS_EXCEEDED",
    ExecutionStatus.TIMEOUT: "STEP_TIMEOUT",
}


def ended(status: str) -> RlmError:
    """The error for a step or tool resolution on an execution that has ended
    (`details.status` = how it ended)."""
    code = _ENDED_CODES.get(ExecutionStatus(status), "VALIDATION_ERROR")
    return RlmError(code, f"the execution has ended ({status}): it takes no more steps", {"status": status})


@contextmanager
def _ended_as_spec_code() -> Iterator[None]:
    """A claim or a commit that finds the execution ended meanwhile (a
    cancel, the sweep) answers like a call that arrived after the end."""
    try:
        yield
    except ConflictError as exc:
        status = str(exc.details.get("status") or ExecutionStatus.RUNNING)
        if status == ExecutionStatus.RUNNING:
            raise
        raise ended(status) from None


def _check_turns(ctx: Context, execution: ExecutionRecord) -> None:
    budgets = execution["budgets_requested"]
    if int(execution["next_turn"]) >= int(budgets["max_turns"]):
        error = RlmError("MAX_TURNS_EXCEEDED", "max_turns reached")
        finish(ctx, execution, ExecutionStatus.MAX_TURNS_EXCEEDED, error=error)
        raise RlmError("MAX_TURNS_EXCEEDED", f"max_turns ({budgets['max_turns']}) reached")


def _check_deadline(ctx: Context, execution: ExecutionRecord) -> None:
    """A runtime execution past max_total_seconds ends BUDGET_EXCEEDED when
    its next call is due (the sweep ends idle ones: `expire`)."""
    if time.time() >= deadline_epoch(execution):
        error = RlmError("BUDGET_EXCEEDED", "max_total_seconds spent")
        finish(ctx, execution, ExecutionStatus.BUDGET_EXCEEDED, error=error)
        raise RlmError("BUDGET_EXCEEDED", "max_total_seconds spent: the execution has ended")


def expire(ctx: Context, execution: ExecutionRecord) -> None:
    """End an idle runtime execution past max_total_seconds (the sweep)."""
    try:
        claim = StepClaim.take(ctx.storage.metadata, execution)
    except ConflictError:
        return  # a step holds it (it ends the execution itself) or it just ended
    try:
        with holding(claim.lease):
            _check_deadline(ctx, claim.execution)
    except BudgetExceeded:
        pass  # ended: the error is for a caller, and there is none
    finally:
        claim.release()
