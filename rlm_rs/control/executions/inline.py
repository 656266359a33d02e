"""Inline calls of a running step (llm_query, llm_query_batched, rlm_query),
resolved while the step waits for them.

One InlineResolver per step, bound to that step's execution: the step names
no key, execution or tenant, so it can reach nothing but its own execution's
calls. Each call becomes a ToolRequests of one request under a key chosen
here, `inline#<call_id>` (1, 2, ... in the order the step makes them), and
goes through the same resolution as queued calls (`turn.resolve_tools`:
budget checks, the sub-call cache, the provider's concurrency, cost
accounting, events, `children.py` for rlm_query). The keys are deterministic,
so a step replayed after a takeover finds the same cache entries (temperature
0: nothing is paid twice) and the same child executions. A call is refused
once max_total_seconds has passed; the wait is abandoned when the execution
stops running (cancel: seen within POLL_SECONDS) or the step's wait ceiling
passes. Consumption is merged into the turn's when a call ends; it is never
resolved outside the step's turn.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from rlm_rs.control.budgets import deadline_epoch
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.leases import carried, held
from rlm_rs.control.tools import Resolution
from rlm_rs.control.validation import check_tool_requests
from rlm_rs.domain import Consumed, EventType, ExecutionRecord, ExecutionStatus, SessionRecord
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.v1.sandbox_pb2 import InlineCall, InlineReply
from rlm_rs.v1.common_pb2 import ToolRequests

KEY_PREFIX = "inline#"
POLL_SECONDS = 0.25
# How long the turn waits, after its step ended, for calls the step abandoned
# (their consumption still counts); provider calls and children are bounded
# by their own timeouts and the execution's max_total_seconds.
_ABANDONED_JOIN_SECONDS = 60.0


def inline_key(call_id: int) -> str:
    return f"{KEY_PREFIX}{call_id}"


class InlineResolver:
    """Resolves one step's inline calls; `records` are the trace's entries."""

    def __init__(
        self, ctx: Context, execution: ExecutionRecord, session: SessionRecord, consumed: Consumed
    ) -> None:
        self.ctx = ctx
        self.execution = execution
        self.session = session
        self.consumed = consumed
        self.records: list[dict[str, Any]] = []
        self.lease = held(execution["execution_id"])  # carried to the threads that resolve calls
        self.calls = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def __call__(self, call: InlineCall, timeout: float) -> InlineReply:
        with carried(self.lease):  # the step's thread of control holds the lease; this one works for it
            return self._call(call, timeout)

    def _call(self, call: InlineCall, timeout: float) -> InlineReply:
        kind = call.WhichOneof("call")
        if kind is None:
            return _refused(call, "VALIDATION_ERROR", "an inline call needs llm, llm_batch or rlm")
        if self._stopped:
            return _refused(call, "CONFLICT", "the execution is no longer running")
        if time.time() >= deadline_epoch(self.execution):
            return _refused(call, "BUDGET_EXCEEDED", "max_total_seconds spent")
        self.calls += 1
        key = inline_key(call.call_id)
        requests = ToolRequests()
        request = getattr(call, kind)
        request.key = key
        getattr(requests, kind).append(request)
        try:
            check_tool_requests(requests)
        except RlmError as exc:
            return _refused(call, exc.code, exc.message)
        turn = int(self.execution.get("next_turn") or 0)
        self.ctx.events.emit(self.execution, turn, EventType.TOOL_REQUESTS, {kind: [key], "inline": True})
        outcome: dict[str, Resolution] = {}
        thread = threading.Thread(
            target=self._resolve, args=(requests, outcome), name=f"inline-{key}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        give_up = time.monotonic() + timeout
        while True:
            thread.join(POLL_SECONDS)
            if not thread.is_alive():
                break
            if not self._running():
                self._stopped = True
                return _refused(call, "CONFLICT", "the execution is no longer running (cancelled)")
            if time.monotonic() >= give_up:
                return _refused(call, "STEP_TIMEOUT", "the inline call outlasted max_step_wait_seconds")
        resolution = outcome.get("resolution")
        if resolution is None:
            return _refused(call, "INTERNAL_ERROR", "the inline call could not be resolved")
        return _reply(call, kind, key, resolution)

    def close(self) -> None:
        """After the step: wait (bounded) for calls the step stopped waiting
        for, so their consumption is in the turn it commits."""
        if self._stopped:
            return
        give_up = time.monotonic() + _ABANDONED_JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, give_up - time.monotonic()))

    def _resolve(self, requests: ToolRequests, outcome: dict[str, Resolution]) -> None:
        from rlm_rs.control.executions.turn import resolve_tools  # turn.py imports this module

        with self._lock:
            scratch = cast(Consumed, dict(self.consumed))
        before = dict(scratch)
        with carried(self.lease):
            resolution = resolve_tools(self.ctx, self.execution, self.session, requests, scratch)
        with self._lock:
            counters = cast(dict[str, Any], self.consumed)
            for name, value in scratch.items():
                if isinstance(value, int | float) and value != before.get(name):
                    counters[name] = counters.get(name, 0) + value - before[name]
            if "cost_usd" in counters:
                counters["cost_usd"] = round(float(counters["cost_usd"]), 10)
            self.records.extend({**record, "inline": True} for record in resolution.records)
        outcome["resolution"] = resolution

    def _running(self) -> bool:
        if self.lease is not None and self.lease.lost.is_set():
            return False  # taken over: the new owner replays the step
        try:
            current = self.ctx.records.reload(self.execution)
        except RlmError:
            return False
        return bool(current["status"] == ExecutionStatus.RUNNING)


def _refused(call: InlineCall, code: str, message: str) -> InlineReply:
    return InlineReply(call_id=call.call_id, error_code=code, error=message)


def _reply(call: InlineCall, kind: str, key: str, resolution: Resolution) -> InlineReply:
    """The resolution's results as the step sees them: texts in order, and
    per text the reason it failed ("" when it did not)."""
    reply = InlineReply(call_id=call.call_id)
    if kind == "llm_batch":
        results = resolution.llm_batch[key]["results"]
    elif kind == "llm":
        results = [resolution.llm[key]]
    else:
        entry = resolution.rlm[key]
        results = [entry]
        meta = entry.get("meta") or {}
        reply.meta_json = _json(
            {
                "execution_id": meta.get("execution_id"),
                "status": meta.get("status"),
                "citations": entry.get("citations", []),
            }
        )
    for result in results:
        meta = (result or {}).get("meta") or {}
        reply.texts.append(str((result or {}).get("text") or ""))
        reply.errors.append(str(meta.get("error") or ""))
    return reply


def _json(value: dict[str, Any]) -> str:
    from rlm_rs.canonical import canonical_json

    return canonical_json(value)
