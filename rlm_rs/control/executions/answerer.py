"""Answerer mode: the loop that asks the root model for code, turn after turn.

Each turn: the loop-top checks (still RUNNING, still this process's lease,
parents still running, max_turns, the wall-clock deadline), the root prompt
(history.py: a bounded history, compacted when it grows too large), one root
model call, then the turn pipeline (turn.py). Loops run on a bounded pool,
each execution at most once per process; the takeover sweep resumes an
execution whose owner's lease ran out from its last committed turn. A loop
never runs a turn without holding the lease.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlm_rs.control import prompts
from rlm_rs.control.budgets import deadline_epoch, snapshot
from rlm_rs.control.executions import history
from rlm_rs.control.executions import turn as pipeline
from rlm_rs.control.executions.children import ancestors_running
from rlm_rs.control.executions.claims import take_loop_lease
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.events import clip
from rlm_rs.control.executions.finish import cancel, finish
from rlm_rs.control.executions.leases import LEASE_LOST, Lease, holding, is_lease_lost
from rlm_rs.control.executions.records import State, initial_state
from rlm_rs.domain import (
    Consumed,
    EventType,
    ExecutionMode,
    ExecutionRecord,
    ExecutionStatus,
    OutputMode,
    SessionRecord,
)
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.observability import bind_log_context, get_logger, logged_execution
from rlm_rs.providers.base import CallContext, Completion, ProviderError
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument
from rlm_rs.tracing import span as trace_span

ROOT_MAX_TOKENS = 4096
log = get_logger(component="engine")


@dataclass
class Loop:
    """What stays the same from one turn of an execution to the next."""

    session: SessionRecord
    lease: Lease
    docs: list[ContextDocument]
    system: str  # the root model's system prompt
    turns: list[dict[str, Any]]  # history entries of the committed turns
    # the state after the last committed turn, and its canonical text (None
    # when it changed since): read once, then carried from turn to turn
    state: State
    state_json: str | None

    @classmethod
    def open(cls, ctx: Context, execution: ExecutionRecord, lease: Lease) -> Loop:
        session = ctx.storage.metadata.get_session(execution["tenant_id"], execution["session_id"])
        budgets = execution["budgets_requested"]
        docs = ctx.manifests.of(execution)
        system = prompts.system_prompt(
            doc_count=len(docs),
            subcalls=int(budgets["max_llm_subcalls"]) > 0,
            search=bool((session.get("options") or {}).get("enable_search")),
            contexts=execution.get("output_mode") == OutputMode.CONTEXTS,
            max_stdout_chars=int(budgets["max_stdout_chars"]),
            rlm=int(budgets["max_rlm_subcalls"]) > 0
            and int(execution.get("depth") or 0) < int(budgets["max_depth"]),
            limits=budgets,
        )
        turns: list[dict[str, Any]] = []
        state, state_json = initial_state(), None
        if int(execution.get("next_turn") or 0) > 0 or execution.get(
            "followup_of"
        ):  # else nothing stored yet
            turns = history.committed_turns(ctx.storage, execution["execution_id"])
            state, state_json = ctx.records.load_state_text(execution)
        return cls(session, lease, docs, system, turns, state, state_json)


@logged_execution
def run_answerer(
    ctx: Context,
    tenant_id: str,
    execution_id: str,
    session_id: str | None = None,
    known: ExecutionRecord | None = None,
) -> ExecutionRecord:
    """Run the execution's turns until it ends, is cancelled or its lease is
    lost. `known`: the record as this process just wrote it (its lease is
    taken on its version; a stale one costs a read); else it is read by its
    key (`session_id`) or by id."""
    if known is not None:
        execution = known
    elif session_id is None:
        execution = ctx.records.get(tenant_id, execution_id)
    else:
        execution = ctx.records.read(session_id, execution_id)
    execution, lease = take_loop_lease(ctx.storage.metadata, execution, ctx.owner, ctx.lease_seconds)
    if lease is None:
        return execution  # ended, or another control plane owns it
    with ctx.heartbeat.keeping(lease), holding(lease):
        try:
            loop = Loop.open(ctx, execution, lease)
            while True:
                lease.ensure()
                execution, ended = _turn_due(ctx, execution)
                if not ended:
                    execution, ended = _turn(ctx, loop, execution)
                if ended:
                    return execution
        except ConflictError as exc:
            if not is_lease_lost(exc):
                raise
            # another owner took the execution over (or it ended): stop here, write nothing more
            log.warning("answerer_stopped", execution_id=execution_id, reason=LEASE_LOST)
            return ctx.records.reload(execution)


def _turn_due(ctx: Context, execution: ExecutionRecord) -> tuple[ExecutionRecord, bool]:
    """Whether the loop ends before this turn (the record, held under the
    lease, is RUNNING): its parents stopped, its turns or its time ran out."""
    if not ancestors_running(ctx, execution):
        return cancel(ctx, execution["tenant_id"], execution["execution_id"]), True
    turn = int(execution["next_turn"])
    bind_log_context(turn_index=turn)
    if turn >= int(execution["budgets_requested"]["max_turns"]):
        error = RlmError("MAX_TURNS_EXCEEDED", f"no FINAL after {turn} turns")
        return finish(ctx, execution, ExecutionStatus.MAX_TURNS_EXCEEDED, error=error), True
    if time.time() >= deadline_epoch(execution):
        error = RlmError("BUDGET_EXCEEDED", "max_total_seconds spent")
        return finish(ctx, execution, ExecutionStatus.BUDGET_EXCEEDED, error=error), True
    return execution, False


def _turn(ctx: Context, loop: Loop, execution: ExecutionRecord) -> tuple[ExecutionRecord, bool]:
    """One turn: the committed record, and whether the execution ended (or
    was taken from this loop)."""
    turn = int(execution["next_turn"])
    consumed = execution["budgets_consumed"].copy()
    timings = {"storage_ms": 0.0}  # the state is carried: nothing to read
    snapshot_now = snapshot(
        execution["budgets_requested"], consumed, started_epoch=execution["started_epoch"]
    )
    ctx.events.emit(execution, turn, EventType.TURN_STARTED, {"budgets": snapshot_now})
    clock = time.perf_counter()
    user = _turn_prompt(ctx, loop, execution, consumed)
    timings["prompt_ms"] = pipeline.ms_since(clock)
    loop.lease.ensure()  # the root call is paid for: only under a live lease
    started = time.perf_counter()
    try:
        completion = _root_call(ctx, loop, execution, user)
    except ProviderError as exc:
        error = RlmError("LLM_PROVIDER_ERROR", f"root model: {exc}")
        return finish(ctx, execution, ExecutionStatus.FAILED, error=error), True
    timings["root_model_ms"] = pipeline.ms_since(started)
    loop.lease.ensure()  # a long call (or a paused process) may have outlived the lease
    _root_reply(ctx, execution, completion, consumed)
    step = pipeline.step(
        ctx, execution, loop.session, completion.text, loop.state, state_json=loop.state_json,
        resolve=True, started=started, completion=completion, consumed=consumed,
    )  # fmt: skip
    step.timings.update(timings)
    try:
        execution = pipeline.commit(ctx, execution, step)
    except ConflictError as exc:  # cancelled during the turn (or the lease was lost: the caller stops)
        if is_lease_lost(exc):
            raise
        return ctx.records.reload(execution), True
    ctx.turn_timings.append(step.timings)
    loop.turns.append(step.history_entry())
    if step.state is not None:
        loop.state, loop.state_json = step.state, step.state_json
    finished = pipeline.end_if_due(ctx, execution, step)
    return (execution, False) if finished is None else (finished, True)


def _turn_prompt(ctx: Context, loop: Loop, execution: ExecutionRecord, consumed: Consumed) -> str:
    """The turn's user prompt; past the compaction share, earlier turns are
    summarised first (history.py) into the carried state."""
    user = history.turn_prompt(execution, loop.docs, loop.state, consumed, loop.turns)
    if history.too_large(ctx.settings, loop.system, user):
        compaction = history.compact(ctx.provider, ctx.prices, execution, loop.state, consumed, loop.turns)
        if compaction is not None:
            loop.state_json = None  # state["_history"] changed
            ctx.events.emit(execution, int(execution["next_turn"]), EventType.COMPACTION, compaction)
            user = history.turn_prompt(execution, loop.docs, loop.state, consumed, loop.turns)
    return user


def _root_reply(ctx: Context, execution: ExecutionRecord, completion: Completion, consumed: Consumed) -> None:
    ctx.prices.record(consumed, completion.model, completion.input_tokens, completion.output_tokens)
    data = {
        "model": completion.model,
        "chars": len(completion.text),
        "text": clip(completion.text),
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
    }
    ctx.events.emit(execution, int(execution["next_turn"]), EventType.ROOT_REPLY, data)


def _root_call(ctx: Context, loop: Loop, execution: ExecutionRecord, user: str) -> Completion:
    """The root model's reply (its usage and cost go into the turn's consumption)."""
    turn = int(execution["next_turn"])
    with trace_span("llm.root", execution_id=execution["execution_id"], turn_index=turn):
        completion = ctx.provider.complete(
            execution["models"]["root_model"],
            [{"role": "system", "content": loop.system}, {"role": "user", "content": user}],
            max_tokens=ROOT_MAX_TOKENS,
            temperature=0.0,
            context=CallContext(role="root", question=execution["question"], turn_index=turn),
        )
    return completion


# --- the loops of this process ---------------------------------------------------------------
class AnswererLoops:
    """Answerer loops queued or running in this process, on a bounded pool."""

    def __init__(self, ctx: Context, workers: int) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="answerer")
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def start(self, execution: ExecutionRecord, *, fresh: bool = True) -> None:
        """Queue the execution's loop, at most once per process: the takeover
        sweep may find an execution still queued here (its creation lease ran
        out while every loop thread was busy) and must not run it twice.
        `fresh`: `execution` is the record as written (no read needed)."""
        execution_id = execution["execution_id"]
        with self._lock:
            if execution_id in self._active:
                return
            self._active.add(execution_id)
        known = execution if fresh else None
        self._pool.submit(
            self._guarded_run, execution["tenant_id"], execution["session_id"], execution_id, known
        )

    def _guarded_run(
        self, tenant_id: str, session_id: str, execution_id: str, known: ExecutionRecord | None = None
    ) -> None:
        try:
            run_answerer(self.ctx, tenant_id, execution_id, session_id, known)
        except Exception as exc:  # the loop must never die silently
            # the traceback goes to the operator's log, never to the caller
            log.error("answerer_crashed", execution_id=execution_id, error=type(exc).__name__, exc_info=True)
            execution = self.ctx.records.read(session_id, execution_id)
            ctx = self.ctx
            execution, lease = take_loop_lease(ctx.storage.metadata, execution, ctx.owner, ctx.lease_seconds)
            if lease is not None:  # still RUNNING and nobody else's: end it, fenced like any write
                error = RlmError("INTERNAL_ERROR", "the execution failed")
                with holding(lease), contextlib.suppress(ConflictError):
                    finish(ctx, execution, ExecutionStatus.FAILED, error=error)
        finally:
            with self._lock:
                self._active.discard(execution_id)

    def take_over(self, execution: ExecutionRecord, now: float) -> bool:
        """Resume a top-level Answerer execution whose owner's lease expired."""
        if execution.get("mode") != ExecutionMode.ANSWERER or execution.get("parent_execution_id"):
            return False  # runtime executions have no loop; children are run by their parent
        if execution.get("lease_owner") and float(execution.get("lease_until") or 0) > now:
            return False
        metadata = self.ctx.storage.metadata
        if Lease.take(metadata, execution, self.ctx.owner, self.ctx.lease_seconds) is None:
            return False  # another node's sweep was first (or it changed since the listing)
        log.info(
            "execution_taken_over",
            execution_id=execution["execution_id"],
            from_owner=execution.get("lease_owner"),
        )
        self.start(execution, fresh=False)
        return True
