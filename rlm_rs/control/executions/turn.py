"""One turn, the same pipeline in both modes: dispatch the step to the
sandbox (an unreachable pool is retried with backoff), apply its result to
the state, resolve its tool requests, commit (fenced, claims.py), then one
check of the execution's limits.

Answerer mode (answerer.py) feeds it the root model's code, runtime mode
(runtime.py) the caller's. A failed step never persists the state it was
given: Answerer mode records the error in `state.work.last_error` (the loop
goes on so the model can adapt), runtime mode leaves the state as it was.
Nothing here commits a turn without the fence.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from rlm_rs import codec
from rlm_rs.canonical import canonical_json
from rlm_rs.control.budgets import deadline_epoch, snapshot, step_limits
from rlm_rs.control.costs import cost_spent
from rlm_rs.control.executions.children import run_children
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.events import clip
from rlm_rs.control.executions.finish import finish
from rlm_rs.control.executions.inline import InlineResolver
from rlm_rs.control.executions.records import State
from rlm_rs.control.limits import bound_step_result
from rlm_rs.control.tools import Resolution
from rlm_rs.domain import (
    Consumed,
    EventType,
    ExecutionMode,
    ExecutionRecord,
    ExecutionStatus,
    SessionRecord,
    ToolKind,
    ToolStatus,
)
from rlm_rs.errors import RlmError, SandboxUnavailable
from rlm_rs.observability import bind_log_context, get_logger
from rlm_rs.providers.base import Completion
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.storage.metadata import step_sk
from rlm_rs.tracing import span as trace_span
from rlm_rs.v1.common_pb2 import ErrorDetail, ToolRequests

SANDBOX_RETRY_SECONDS = 20.0
log = get_logger(component="engine")


@dataclass
class Turn:
    """One step's outcome, ready to commit."""

    index: int
    code: str
    result: StepResult
    consumed: Consumed  # the execution's consumption after this turn
    state_json: str | None  # the state to persist, canonical; None: unchanged
    started: float  # perf_counter when the turn began (its trace's duration)
    completion: Completion | None = None  # the root model's reply (Answerer mode)
    state: State | None = None  # state_json, decoded (the Answerer loop carries it to its next turn)
    resolved: list[dict[str, Any]] = field(default_factory=list)  # tool resolution, for the trace
    timings: dict[str, float] = field(default_factory=dict)  # phase durations in ms

    def history_entry(self) -> dict[str, Any]:
        """What later root prompts show of this turn (history.py)."""
        error = "" if self.result.success else f"{self.result.error.code}: {self.result.error.message}"
        return {"turn": self.index, "code": self.code, "stdout": self.result.stdout, "error": error}


def ms_since(since: float) -> float:
    """Milliseconds since a perf_counter reading."""
    return (time.perf_counter() - since) * 1000


def has_requests(requests: ToolRequests) -> bool:
    return bool(requests.llm or requests.search or requests.llm_batch or requests.rlm)


# --- dispatch --------------------------------------------------------------------------
def with_budgets(state: State, state_json: str | None, budgets_left: dict[str, Any]) -> str:
    """The step's input state: `state` plus `_budgets`, as canonical JSON.
    When the state's canonical text is at hand and every top-level key sorts
    after `_budgets` (the orchestrator's `_history`, `_tool_*` and `work` do),
    `_budgets` is spliced in front of the text instead of the whole state
    being encoded again: the same text, one encoding fewer per turn."""
    if state_json is None or not state or min(state) <= "_budgets":
        return canonical_json({**state, "_budgets": budgets_left})
    return '{"_budgets":' + canonical_json(budgets_left) + "," + state_json[1:]


def step_request(
    ctx: Context,
    execution: ExecutionRecord,
    session: SessionRecord,
    code: str,
    state: State,
    state_json: str | None = None,
) -> StepRequest:
    """`state_json`, when given, is canonical_json(state)."""
    budgets = execution["budgets_requested"]
    budgets_left = snapshot(budgets, execution["budgets_consumed"], started_epoch=execution["started_epoch"])
    enable_search = bool((session.get("options") or {}).get("enable_search"))
    limits = step_limits(budgets, enable_search=enable_search)
    # waiting on inline calls counts against max_total_seconds: never past it
    limits.max_step_wait_seconds = max(
        0.001, min(limits.max_step_wait_seconds, deadline_epoch(execution) - time.time())
    )
    return StepRequest(
        tenant_id=execution["tenant_id"],
        session_id=execution["session_id"],
        execution_id=execution["execution_id"],
        turn_index=int(execution["next_turn"]),
        code=code,
        state_json=with_budgets(state, state_json, budgets_left),
        context_manifest=ctx.manifests.of(execution),
        limits=limits,
        require_repl_block=execution["mode"] == ExecutionMode.ANSWERER,
    )


def dispatch(ctx: Context, request: StepRequest, inline: InlineResolver | None = None) -> StepResult:
    """Run the step. An unreachable pool (restarting, being replaced) is
    retried with backoff for up to SANDBOX_RETRY_SECONDS before the step
    counts as failed; a worker that died *during* the step is a StepResult
    error already and is not retried (the step may be what killed it)."""
    retrying = Retrying(
        retry=retry_if_exception_type(SandboxUnavailable),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_before_delay(SANDBOX_RETRY_SECONDS),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with (
                attempt,
                trace_span("sandbox.step", execution_id=request.execution_id, turn_index=request.turn_index),
            ):
                if inline is not None and getattr(ctx.sandbox, "supports_inline", False):
                    result = ctx.sandbox.run_step(request, inline=inline)  # type: ignore[call-arg]
                else:
                    result = ctx.sandbox.run_step(request)
    except SandboxUnavailable as exc:
        log.error("sandbox_unavailable", execution_id=request.execution_id, error=exc.message)
        result = StepResult(turn_index=request.turn_index, state_json=request.state_json)
        result.error.CopyFrom(ErrorDetail(code=exc.code, message=exc.message, details_json="{}"))
        return result
    bound_step_result(result, request.state_json, ctx.settings)
    return result


# --- the step and its tools --------------------------------------------------------------
def step(
    ctx: Context,
    execution: ExecutionRecord,
    session: SessionRecord,
    code: str,
    state: State,
    *,
    state_json: str | None = None,
    resolve: bool,
    started: float,
    completion: Completion | None = None,
    consumed: Consumed | None = None,
) -> Turn:
    """Dispatch `code` on `state` (`state_json`: its canonical text, when at
    hand), then apply the result (and resolve its tools when `resolve`);
    nothing is persisted yet."""
    index = int(execution["next_turn"])
    bind_log_context(turn_index=index)  # runtime steps: until the RPC ends
    consumed = execution["budgets_consumed"].copy() if consumed is None else consumed
    clock = time.perf_counter()
    inline = InlineResolver(ctx, execution, session, consumed)
    result = dispatch(ctx, step_request(ctx, execution, session, code, state, state_json), inline)
    inline.close()
    turn = Turn(index, code, result, consumed, None, started, completion)
    turn.timings["sandbox_ms"] = ms_since(clock)
    step_event(ctx, execution, index, result)
    clock = time.perf_counter()
    turn.state, turn.resolved = _apply(ctx, execution, session, result, consumed, resolve=resolve)
    turn.resolved[:0] = inline.records
    if turn.state is not None:
        turn.state_json = result.state_json = canonical_json(turn.state)
    turn.timings["tools_ms"] = ms_since(clock)
    return turn


def _apply(
    ctx: Context,
    execution: ExecutionRecord,
    session: SessionRecord,
    result: StepResult,
    consumed: Consumed,
    *,
    resolve: bool,
) -> tuple[State | None, list[dict[str, Any]]]:
    """The state to persist after the step (None: unchanged), with its tool
    results injected, and the resolution's records for the trace."""
    answerer = execution["mode"] == ExecutionMode.ANSWERER
    if not result.success and not answerer:
        return None, []  # a runtime caller sees the error; the state stays as it was
    state = json.loads(result.state_json)
    state.pop("_budgets", None)
    work = state.get("work")
    if not result.success:  # recorded in the state, the loop goes on
        if isinstance(work, dict):
            work["last_error"] = f"{result.error.code}: {result.error.message}"
        return state, []
    consumed["spans_total"] += len(result.span_log)
    Resolution.retire(state)  # this step saw the results it was given (docs/api.md#state)
    if answerer and isinstance(work, dict):
        work.pop("last_error", None)
    resolved: list[dict[str, Any]] = []
    if result.final.is_final or not has_requests(result.tool_requests):
        return state, resolved
    if resolve:
        resolution = resolve_tools(ctx, execution, session, result.tool_requests, consumed)
        resolution.inject(state)
        resolved = resolution.records
    else:  # a runtime step without resolve_tools: queued, until tools/resolve answers them
        statuses = state.setdefault("_tool_status", {})
        for kind in ToolKind:
            statuses.update({r.key: str(ToolStatus.PENDING) for r in getattr(result.tool_requests, kind)})
    return state, resolved


def resolve_tools(
    ctx: Context,
    execution: ExecutionRecord,
    session: SessionRecord,
    requests: ToolRequests,
    consumed: Consumed,
    sub_model: str = "",
) -> Resolution:
    """Sub-calls, batches and searches (ToolResolver), then child executions
    (concurrently, children.py); `consumed` is updated in place."""
    resolution = ctx.resolver.resolve(
        requests,
        tenant_id=execution["tenant_id"],
        session=session,
        sub_model=sub_model or execution["models"]["sub_model"],
        budgets=execution["budgets_requested"],
        consumed=consumed,
        question=execution.get("question") or "",
        execution_id=execution["execution_id"],
    )
    if requests.rlm:
        run_children(ctx, execution, session, list(requests.rlm), consumed, resolution)
    turn = int(execution.get("next_turn") or 0)
    ctx.events.emit(execution, turn, EventType.TOOL_RESULTS, {"statuses": dict(resolution.statuses)})
    return resolution


def step_event(ctx: Context, execution: ExecutionRecord, turn: int, result: StepResult) -> None:
    requests = result.tool_requests
    error = {"code": result.error.code, "message": result.error.message} if result.HasField("error") else None
    log.info(
        "step_finished",
        success=result.success,
        error_code=error["code"] if error else None,
        spans=len(result.span_log),
        state_size=len(result.state_json),
        tool_counts={str(kind): len(getattr(requests, kind)) for kind in ToolKind},
        final=result.final.is_final,
        duration_ms=round(result.duration_ms, 3),
    )
    data = {
        "success": result.success,
        "stdout": clip(result.stdout),
        "error": error,
        "spans": len(result.span_log),
        "final": clip(result.final.answer) if result.final.is_final else None,
        "duration_ms": round(result.duration_ms, 3),
    }
    ctx.events.emit(execution, turn, EventType.STEP_RESULT, data)
    if result.success and has_requests(requests):
        keys = {str(kind): [r.key for r in getattr(requests, kind)] for kind in ToolKind}
        ctx.events.emit(execution, turn, EventType.TOOL_REQUESTS, keys)


# --- commit and limits -------------------------------------------------------------------
def trace_turn(turn: Turn) -> dict[str, Any]:
    """The turn as the execution's trace shows it (traces.py): the step's
    output under `lambda` and its tool resolution as `{requests, results,
    duration_ms}`."""
    result = turn.result
    trace: dict[str, Any] = {"turn_index": turn.index}
    if turn.completion is not None:
        trace.update(root_model={"name": turn.completion.model}, root_output_raw=turn.completion.text)
    trace["code"] = turn.code
    requests = codec.to_json(result.tool_requests)
    trace["lambda"] = {
        "success": result.success,
        "stdout": result.stdout,
        "span_log": [codec.to_json(s) for s in result.span_log],
        "tool_requests": requests,
        "final": codec.to_json(result.final),
        "error": codec.to_json(result.error) if result.HasField("error") else None,
        "duration_ms": round(result.duration_ms, 3),
    }
    trace["tool_resolution"] = {
        "requests": requests if turn.resolved else {str(kind): [] for kind in ToolKind},
        "results": turn.resolved,
        "duration_ms": round(turn.timings.get("tools_ms", 0.0), 3),
    }
    trace["duration_ms"] = round(ms_since(turn.started), 3)
    return trace


def _step_record(turn: Turn) -> dict[str, Any]:
    """The step record's fields besides the state (each part through the
    codec alone: the state is never converted; the parts the trace holds too
    are converted once)."""
    result = turn.result
    trace = trace_turn(turn)
    step = trace["lambda"]
    return {
        "success": result.success,
        "stdout": result.stdout,
        "span_log": step["span_log"],
        "tool_requests": step["tool_requests"] if result.HasField("tool_requests") else {},
        "final": step["final"] if result.final.is_final else None,
        "error": step["error"],
        "trace": trace,
    }


def commit(ctx: Context, execution: ExecutionRecord, turn: Turn) -> ExecutionRecord:
    """Persist the step record, the new state and the counters in one
    transaction fenced by the lease this context holds (leases.py): only
    its holder writes the turn, only while the execution is RUNNING at this
    turn; a writer that lost the turn gets CONFLICT and nothing is written."""
    clock = time.perf_counter()
    extra = _step_record(turn)
    state_json = turn.state_json
    record_state = state_json if state_json is not None else canonical_json(ctx.records.load_state(execution))
    states: list[tuple[str, str, dict[str, Any] | None]] = [(step_sk(turn.index), record_state, extra)]
    if state_json is not None:
        states.append(("STATE", state_json, None))
    turn.consumed["turns"] = turn.index + 1
    changes = {"next_turn": turn.index + 1, "budgets_consumed": turn.consumed}
    committed = ctx.records.commit(execution, turn.index, changes, states)
    turn.timings["storage_ms"] = turn.timings.get("storage_ms", 0.0) + ms_since(clock)
    return committed


@dataclass(frozen=True)
class Ending:
    status: ExecutionStatus
    error: RlmError | None = None
    answer: str | None = None


def check_limits(execution: ExecutionRecord, turn: Turn) -> Ending | None:
    """How the execution ends after this committed turn, if it does: its
    budgets spent, its FINAL reached, or its wall-clock time passed."""
    budgets, consumed, result = execution["budgets_requested"], turn.consumed, turn.result
    if consumed["spans_total"] > int(budgets["max_spans_total"]):
        return _spent("max_spans_total")
    if consumed["llm_prompt_chars_total"] > int(budgets["max_total_llm_prompt_chars"]):
        return _spent("max_total_llm_prompt_chars")
    if result.success and result.final.is_final:
        return Ending(ExecutionStatus.COMPLETED, answer=result.final.answer)
    if cost_spent(budgets, consumed):
        return _spent("max_cost_usd")
    if time.time() >= deadline_epoch(execution):
        return _spent("max_total_seconds")  # as when a turn is due past it (docs/api.md#statuses)
    return None


def _spent(budget: str) -> Ending:
    return Ending(ExecutionStatus.BUDGET_EXCEEDED, RlmError("BUDGET_EXCEEDED", f"{budget} spent"))


def end_if_due(ctx: Context, execution: ExecutionRecord, turn: Turn) -> ExecutionRecord | None:
    """The finished record when check_limits ends the execution, else None."""
    ending = check_limits(execution, turn)
    if ending is None:
        return None
    return finish(ctx, execution, ending.status, answer=ending.answer, error=ending.error)
