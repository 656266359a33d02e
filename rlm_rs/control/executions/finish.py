"""Ending an execution: its status, answer or contexts, citations, trace and
the closing `status` event, written once; and cancelling one.

COMPLETED gathers what the turns read: ANSWER mode cites every successful
turn's spans plus what completed children cited; CONTEXTS mode returns the
spans tagged `context` (inline up to CONTEXTS_INLINE_LIMIT_CHARS, else a blob).
The trace is built from the step records and the children's traces and,
with `redact_trace`, only its redacted form is ever written (traces.py). An
execution cancelled meanwhile stays CANCELLED: only its trace is attached.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from rlm_rs import codec
from rlm_rs.canonical import canonical_json
from rlm_rs.citations import CitedDocument, build_citations, make_ref
from rlm_rs.control.executions.children import child_traces
from rlm_rs.control.executions.claims import RUNNING
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.events import clip
from rlm_rs.control.executions.leases import held, is_lease_lost
from rlm_rs.control.executions.records import as_execution, elapsed_ms
from rlm_rs.control.executions.subcorpus import derived_dir, to_parent
from rlm_rs.control.executions.traces import build_trace, redact, write_trace
from rlm_rs.domain import EventType, ExecutionRecord, ExecutionStatus, OutputMode, StepRecord
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.observability import (
    EXECUTION_DURATION,
    EXECUTION_SPANS,
    EXECUTION_SUBCALLS,
    EXECUTION_TURNS,
    EXECUTIONS,
)
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument
from rlm_rs.storage import keys
from rlm_rs.storage.metadata import now_iso
from rlm_rs.v1.common_pb2 import Span, SpanRef

CONTEXTS_INLINE_LIMIT_CHARS = 256_000
TurnSpans = list[tuple[int, list[Span]]]


def finish(
    ctx: Context,
    execution: ExecutionRecord,
    status: ExecutionStatus,
    *,
    answer: str | None = None,
    error: RlmError | None = None,
) -> ExecutionRecord:
    """End the execution: `status`, its results when COMPLETED, its trace and
    the status event, written once (an execution cancelled meanwhile keeps
    CANCELLED and gets its trace)."""
    clock = time.perf_counter()
    lease = held(execution["execution_id"])
    if lease is not None:
        lease.ensure()  # a holder that lost its lease writes no trace, no status
    consumed: dict[str, Any] = {
        **execution["budgets_consumed"],
        "total_seconds": round(elapsed_ms(execution) / 1000, 3),
    }
    changes: dict[str, Any] = {
        "status": status,
        "completed_at": now_iso(),
        "duration_ms": elapsed_ms(execution),
        "budgets_consumed": consumed,
    }
    if error is not None:
        changes["error"] = {"code": error.code, "message": error.message, "details": error.details}
    steps = ctx.records.steps(execution, with_state=False)  # their span logs and traces, read once
    if status == ExecutionStatus.COMPLETED:
        changes.update(_results(ctx, execution, steps, answer))
    changes.update(_trace(ctx, execution, steps, {**execution, **changes}))
    try:
        final = _end(ctx, execution, changes, under_lease=lease is not None)
    except ConflictError as exc:
        if is_lease_lost(exc):
            raise
        # cancelled meanwhile: keep CANCELLED, attach the trace
        final = ctx.records.update(execution, {"trace_s3_uri": changes["trace_s3_uri"]})
    ctx.manifests.forget(execution["execution_id"])
    if execution.get("corpus"):
        shutil.rmtree(derived_dir(ctx.docs, execution), ignore_errors=True)
    ctx.finish_timings_ms.append((time.perf_counter() - clock) * 1000)
    EXECUTIONS.labels(mode=execution["mode"], status=final["status"]).inc()
    EXECUTION_DURATION.observe((final.get("duration_ms") or 0) / 1000)
    EXECUTION_TURNS.observe(consumed.get("turns", 0))
    EXECUTION_SUBCALLS.observe(consumed.get("llm_subcalls", 0))
    EXECUTION_SPANS.inc(consumed.get("spans_total", 0))
    return final


def _end(
    ctx: Context, execution: ExecutionRecord, changes: dict[str, Any], *, under_lease: bool
) -> ExecutionRecord:
    """The final status and the status event. Under the lease, one
    transaction (the event waits in the outbox for records.end), so a reader
    who sees the status finds the event too; otherwise the event follows."""
    if under_lease:
        ended = as_execution({**execution, **changes})
        return ctx.records.end(execution, changes, lambda: status_event(ctx, ended, flush=False))
    final = ctx.records.update(execution, changes, from_statuses=RUNNING)
    status_event(ctx, final)
    return final


def _results(
    ctx: Context, execution: ExecutionRecord, steps: list[StepRecord], answer: str | None
) -> dict[str, Any]:
    """A completed execution's answer and citations, or its contexts."""
    session_id = execution["session_id"]
    manifest, documents = ctx.docs.cited(session_id)
    turn_spans = _spans(execution, steps)
    if execution.get("output_mode") != OutputMode.CONTEXTS:
        spans = [s for _, step_spans in turn_spans for s in step_spans] + _children_spans(ctx, execution)
        refs = build_citations(execution["tenant_id"], session_id, spans, documents)
        citations = [codec.to_json(r) for r in refs]
        return {"answer": answer, "citations": citations}
    contexts = _contexts(execution, manifest, documents, turn_spans)
    changes: dict[str, Any] = {
        "answer": None,
        "citations": [c["ref"] for c in contexts],
        "contexts": contexts,
    }
    if sum(c["text_char_length"] for c in contexts) > CONTEXTS_INLINE_LIMIT_CHARS:
        key = keys.contexts_key(execution["tenant_id"], session_id, execution["execution_id"])
        ctx.storage.blobs.put(key, canonical_json(contexts).encode("utf-8"))
        changes.update(contexts_s3_uri=ctx.storage.blobs.uri(key), contexts=None)
    return changes


def _trace(
    ctx: Context, execution: ExecutionRecord, steps: list[StepRecord], merged: dict[str, Any]
) -> dict[str, Any]:
    """Write the trace (the redacted form only, with redact_trace); its uri,
    and the trace itself when the caller asked for it inline."""
    options = execution.get("options") or {}
    turns = [s.get("trace") or {} for s in steps]
    trace = build_trace(merged, turns, child_traces(ctx, execution))
    if options.get("redact_trace"):
        trace = redact(trace)  # every copy: the blob, trace_json, a parent's embedded copy
    lease = held(execution["execution_id"])
    changes = {"trace_s3_uri": write_trace(ctx.storage, trace, lease.fence.token if lease else None)}
    if options.get("return_trace"):
        changes["trace_json"] = canonical_json(trace)
    return changes


def _spans(execution: ExecutionRecord, steps: list[StepRecord]) -> TurnSpans:
    """Each successful turn's span log, in the session's coordinates (a
    child's sub-corpus spans are mapped back to the session's documents)."""
    pieces = execution.get("corpus")
    out = []
    for step in steps:
        if step.get("success"):
            spans = [Span(**s) for s in step.get("span_log", [])]
            if pieces:
                spans = [to_parent(span, pieces) for span in spans]
            out.append((int(step["turn_index"]), spans))
    return out


def _children_spans(ctx: Context, execution: ExecutionRecord) -> list[Span]:
    """What the completed children read (their citations), for the parent's citations."""
    refs = [
        codec.parse(SpanRef, ref)
        for child in ctx.records.children(execution)
        if child["status"] == ExecutionStatus.COMPLETED
        for ref in child.get("citations") or []
    ]
    return [Span(doc_index=r.doc_index, start_char=r.start_char, end_char=r.end_char) for r in refs]


def _is_context_tag(tag: str) -> bool:
    return tag == "context" or tag.startswith("context:")


def _contexts(
    execution: ExecutionRecord,
    manifest: list[ContextDocument],
    documents: dict[int, CitedDocument],
    turn_spans: TurnSpans,
) -> list[dict[str, Any]]:
    by_index = {m.doc_index: m for m in manifest}
    contexts: list[dict[str, Any]] = []
    for turn, spans in turn_spans:
        for span_index, span in enumerate(spans):
            doc = documents.get(span.doc_index)
            if not _is_context_tag(span.tag) or doc is None:
                continue
            ref = make_ref(
                execution["tenant_id"],
                execution["session_id"],
                span.doc_index,
                doc,
                span.start_char,
                span.end_char,
            )
            text = doc.text.slice(span.start_char, span.end_char)
            contexts.append(
                {
                    "sequence_index": len(contexts),
                    "turn_index": turn,
                    "span_index": span_index,
                    "tag": span.tag,
                    "text": text,
                    "text_char_length": len(text),
                    "source_name": by_index[span.doc_index].source_name,
                    "mime_type": by_index[span.doc_index].mime_type,
                    "ref": codec.to_json(ref),
                }
            )
    return contexts


# --- cancelling and the status event -----------------------------------------------------------
def cancel(ctx: Context, tenant_id: str, execution_id: str) -> ExecutionRecord:
    """CANCELLED, with its children; idempotent (an ended execution is returned as it is)."""
    execution = ctx.records.get(tenant_id, execution_id)
    if execution["status"] != ExecutionStatus.RUNNING:
        return execution
    changes = {
        "status": ExecutionStatus.CANCELLED,
        "completed_at": now_iso(),
        "duration_ms": elapsed_ms(execution),
    }
    try:
        cancelled = ctx.records.update(execution, changes, from_statuses=RUNNING)
    except ConflictError as exc:
        if is_lease_lost(exc):
            raise
        return ctx.records.reload(execution)
    status_event(ctx, cancelled)
    for child_id in cancelled.get("children") or []:
        try:
            cancel(ctx, tenant_id, child_id)
        except RlmError:
            continue
    return cancelled


def status_event(ctx: Context, execution: ExecutionRecord, *, flush: bool = True) -> None:
    """The event that closes an execution's stream (events.py; `flush`: EventLog.emit's)."""
    answer = execution.get("answer")
    data = {
        "status": execution["status"],
        "answer": clip(answer) if answer else None,
        "error": execution.get("error"),
        "budgets_consumed": execution.get("budgets_consumed"),
    }
    ctx.events.emit(execution, int(execution.get("next_turn") or 0), EventType.STATUS, data, flush=flush)
