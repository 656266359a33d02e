"""Recursive sub-executions (tool.queue_rlm): child ids, budget caps, running a child.

A child is an Answerer execution on the parent's session over a sub-corpus
(subcorpus.py), run to completion inside the parent's turn, between two of
its steps; its answer and citations become the parent's `rlm` tool result.

Depth: a top-level execution is depth 0; a child is created only while
`depth + 1 <= max_depth` (default 2: root -> child -> grandchild).

Budgets: the child's budgets are its request merged over the parent's, then
capped by its share of what the parent has left (sub-calls, prompt chars,
spans, cost, rlm sub-calls after the step's children themselves; seconds are
wall clock, not shared out) and by the parent's per-step limits; the tree's
max_depth cannot be raised. Children of one step run concurrently
(RLM_CHILD_CONCURRENCY at a time). When a child starts, what it may spend is
reserved out of the parent's remainder (a ChildLedger, one per step): each
gets an equal share of what is neither consumed nor reserved among the
children not yet started. When it ends, its consumption is added to the
parent's (rlm_subcalls + 1 for the child itself) and the unused part of its
reservation returns, so "capped by what the parent has left" stays exact
however the children interleave.

Ids are derived from (parent, turn, key): a parent turn replayed after a lease
takeover finds the same child (finished: its result is reused; running: it is
resumed) instead of starting a second one. A child never outlives a parent
that stopped running (`ancestors_running`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from rlm_rs import codec
from rlm_rs.control.budgets import budgets_to_dict, merge_budgets
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.events import clip
from rlm_rs.control.executions.leases import carried, held, is_lease_lost
from rlm_rs.control.executions.subcorpus import compose, execution_manifest, subcorpus
from rlm_rs.control.executions.traces import read_trace
from rlm_rs.control.tools import Resolution
from rlm_rs.domain import (
    CONSUMED,
    Budgets,
    Consumed,
    EventType,
    ExecutionMode,
    ExecutionRecord,
    ExecutionStatus,
    SessionRecord,
    ToolStatus,
)
from rlm_rs.errors import NotFound, RlmError
from rlm_rs.v1.common_pb2 import RlmRequest, SpanRef

# per-step limits a child may lower but never raise
_PER_STEP = (
    "max_turns", "max_step_seconds", "max_spans_per_step", "max_tool_requests_per_step",
    "max_llm_prompt_chars", "max_stdout_chars", "max_state_chars",
)  # fmt: skip
# consumption that rolls up from a child into its parent
ROLLUP = tuple(name for name, field in CONSUMED.items() if field.rolls_up)


def child_execution_id(parent_id: str, turn: int, key: str) -> str:
    digest = hashlib.sha256(f"{parent_id}\0{turn}\0{key}".encode()).hexdigest()
    return f"exec_{digest[:24]}"


# budget -> the consumption counter a child's reservation holds it against
RESERVED = {
    "max_llm_subcalls": "llm_subcalls",
    "max_total_llm_prompt_chars": "llm_prompt_chars_total",
    "max_spans_total": "spans_total",
}


def child_budgets(
    parent: ExecutionRecord,
    consumed: Consumed,
    requested: Mapping[str, Any],
    now: float,
    reserved: dict[str, float] | None = None,
    share: int = 1,
) -> Budgets:
    """The child's budgets, or RlmError(BUDGET_EXCEEDED|VALIDATION_ERROR) with
    a reason the root model can read. `reserved`: what running siblings hold
    (by consumption counter: llm_subcalls, llm_prompt_chars_total,
    spans_total, cost_usd, rlm_subcalls); `share`: how many children (this one
    included) still split what is left."""
    budgets = parent["budgets_requested"]
    limits, spent = cast(dict[str, float], budgets), cast(dict[str, float], consumed)
    held: dict[str, float] = reserved or {}
    depth = int(parent.get("depth") or 0)
    if depth + 1 > int(budgets["max_depth"]):
        raise RlmError(
            "BUDGET_EXCEEDED",
            f"max_depth reached: this execution is at depth {depth} and max_depth is {budgets['max_depth']}",
        )
    rlm_left = int(limits["max_rlm_subcalls"]) - int(spent["rlm_subcalls"]) - int(held.get("rlm_subcalls", 0))
    if rlm_left <= 0:
        raise RlmError(
            "BUDGET_EXCEEDED", f"rlm sub-call budget spent (max_rlm_subcalls={budgets['max_rlm_subcalls']})"
        )
    share = max(min(share, rlm_left), 1)  # only as many children as rlm sub-calls are left will start
    seconds_left = seconds_left_at(parent, now)
    if seconds_left < 1.0:
        raise RlmError("BUDGET_EXCEEDED", f"only {max(seconds_left, 0):.1f}s of max_total_seconds left")
    cost_cap = float(budgets["max_cost_usd"])
    cost_left = (cost_cap - float(consumed["cost_usd"]) - float(held.get("cost_usd", 0.0))) / share
    if cost_cap > 0 and cost_left <= 0:
        raise RlmError("BUDGET_EXCEEDED", f"cost budget spent (max_cost_usd={cost_cap})")
    merged: dict[str, Any] = {**merge_budgets(budgets, requested)}  # validates values and ceilings
    caps: dict[str, float] = {name: limits[name] for name in _PER_STEP}
    for name, counter in RESERVED.items():
        caps[name] = (int(limits[name]) - int(spent[counter]) - int(held.get(counter, 0))) // share
    caps.update(
        max_total_seconds=round(seconds_left, 3),
        # each unstarted child is one rlm sub-call itself; the rest is shared for their children
        max_rlm_subcalls=max(rlm_left - share, 0) // share,
        max_depth=int(budgets["max_depth"]),
    )
    for name, cap in caps.items():
        merged[name] = type(merged[name])(max(min(merged[name], cap), 0))
    if cost_cap > 0:
        requested_cost = float(merged["max_cost_usd"])
        merged["max_cost_usd"] = cost_left if requested_cost <= 0 else min(requested_cost, cost_left)
    return cast(Budgets, merged)


def reservation(budgets: Budgets, parent_cost_capped: bool) -> dict[str, float]:
    """What a child with these budgets may spend of its parent's, held while it runs."""
    values = cast(dict[str, float], budgets)
    held = {counter: float(values[name]) for name, counter in RESERVED.items()}
    held["cost_usd"] = float(values["max_cost_usd"]) if parent_cost_capped else 0.0
    held["rlm_subcalls"] = 1.0 + float(values["max_rlm_subcalls"])
    return held


class ChildLedger:
    """One step's children: their reservations out of the parent's remainder,
    the parent's consumption and the resolution, changed under one lock."""

    def __init__(self, consumed: Consumed, resolution: Resolution, children: int) -> None:
        self.lock = threading.Condition()
        self.started = 0  # children start (are budgeted) in request order
        self.consumed = consumed
        self.resolution = resolution
        self.unstarted = children
        self.reserved: dict[str, float] = {}
        self.running = 0
        self.peak = 0  # the most children of this step running at once

    def hold(self, held: dict[str, float]) -> None:
        for counter, value in held.items():
            self.reserved[counter] = self.reserved.get(counter, 0.0) + value
        self.running += 1
        self.peak = max(self.peak, self.running)

    def release(self, held: dict[str, float], child_consumed: Consumed) -> None:
        for counter, value in held.items():
            self.reserved[counter] = self.reserved.get(counter, 0.0) - value
        self.running -= 1
        roll_up(self.consumed, child_consumed)


def roll_up(consumed: Consumed, child_consumed: Consumed) -> None:
    counters, child = cast(dict[str, Any], consumed), cast(dict[str, Any], child_consumed)
    for name in ROLLUP:
        counters[name] = counters.get(name, 0) + child.get(name, 0)
    consumed["rlm_subcalls"] += 1
    consumed["cost_usd"] = round(float(consumed["cost_usd"]), 10)


def seconds_left_at(parent: ExecutionRecord, now: float) -> float:
    """What is left of the parent's max_total_seconds at `now`."""
    return float(parent["started_epoch"]) + float(parent["budgets_requested"]["max_total_seconds"]) - now


def run_children(
    ctx: Context,
    parent: ExecutionRecord,
    session: SessionRecord,
    requests: list[RlmRequest],
    consumed: Consumed,
    resolution: Resolution,
) -> ChildLedger:
    """Run one step's children concurrently (RLM_CHILD_CONCURRENCY at a
    time), each to its end; their answers go into `resolution.rlm` and their
    consumption rolls up into `consumed`."""
    ledger = ChildLedger(consumed, resolution, len(requests))
    width = min(len(requests), max(1, ctx.settings.child_concurrency))
    if width <= 1:
        for index, request in enumerate(requests):
            run_child(ctx, parent, session, request, ledger, index)
        return ledger
    lease = held(parent["execution_id"])  # each child's thread writes for the parent under its lease

    def run(request: RlmRequest, index: int) -> None:
        with carried(lease):
            run_child(ctx, parent, session, request, ledger, index)

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="child") as pool:
        for done in [pool.submit(run, r, i) for i, r in enumerate(requests)]:
            done.result()
    return ledger


def run_child(
    ctx: Context,
    parent: ExecutionRecord,
    session: SessionRecord,
    request: RlmRequest,
    ledger: ChildLedger,
    index: int,
) -> None:
    """Find or start the child for `request` (its share reserved, after the
    step's earlier children started), run it to its end and put its answer
    into the ledger's resolution."""
    turn = int(parent.get("next_turn") or 0)
    with ledger.lock:
        ledger.lock.wait_for(lambda: ledger.started == index)
        ledger.unstarted -= 1
        try:
            child = _child(ctx, parent, session, request, ledger, turn)
        except RlmError as exc:  # refused (budgets, sub-corpus) or not created (the session is going)
            if is_lease_lost(exc):
                raise  # the parent's turn is no longer this process's
            rlm_result(ledger.resolution, request.key, None, f"{exc.code}: {exc.message}")
            return
        finally:
            ledger.started += 1
            ledger.lock.notify_all()
        held = reservation(child["budgets_requested"], float(parent["budgets_requested"]["max_cost_usd"]) > 0)
        ledger.hold(held)
    data = {"key": request.key, "execution_id": child["execution_id"], "depth": child["depth"]}
    ctx.events.emit(parent, turn, EventType.CHILD_STARTED, {**data, "question": clip(request.question)})
    try:
        child = _run_to_end(ctx, parent, child)
    finally:
        with ledger.lock:
            ledger.release(held, child["budgets_consumed"])
    error = ""
    if child["status"] != ExecutionStatus.COMPLETED:
        detail = child.get("error")
        reason = f"{detail['code']} {detail['message']}".strip() if detail else ""
        error = f"child execution ended {child['status']}: {reason}"
    with ledger.lock:
        rlm_result(ledger.resolution, request.key, child, error.strip())
    ctx.events.emit(
        parent,
        turn,
        EventType.CHILD_FINISHED,
        {"key": request.key, "execution_id": child["execution_id"], "status": child["status"]},
    )


def _child(
    ctx: Context,
    parent: ExecutionRecord,
    session: SessionRecord,
    request: RlmRequest,
    ledger: ChildLedger,
    turn: int,
) -> ExecutionRecord:
    """The child's record: found (a replayed turn), else created; RlmError
    when refused. Called under the ledger's lock."""
    tenant_id = parent["tenant_id"]
    child_id = child_execution_id(parent["execution_id"], turn, request.key)
    try:
        return ctx.records.read(parent["session_id"], child_id)  # a replayed turn finds its child
    except NotFound:
        pass
    budgets = child_budgets(
        parent,
        ledger.consumed,
        budgets_to_dict(request.budgets),
        time.time(),
        ledger.reserved,
        ledger.unstarted + 1,
    )
    pieces = subcorpus(request, execution_manifest(ctx.docs, parent))
    parent_pieces = parent.get("corpus")
    if parent_pieces:  # a grandchild: compose with the parent's own view
        pieces = [compose(piece, parent_pieces) for piece in pieces]
    current = ctx.records.reload(parent)
    children = [*(current.get("children") or []), child_id]
    ctx.records.update(current, {"children": children})  # fenced by the parent's lease
    parent["children"] = children  # the loop's record: its commit and finish carry the list on
    return ctx.records.create(
        tenant_id,
        session,
        mode=ExecutionMode.ANSWERER,
        question=request.question,
        models=parent["models"],
        budgets=budgets,
        options={"redact_trace": bool((parent.get("options") or {}).get("redact_trace"))},
        extra={
            "execution_id": child_id,
            "parent_execution_id": parent["execution_id"],
            "depth": int(parent.get("depth") or 0) + 1,
            "corpus": pieces,
        },
    )


def _run_to_end(ctx: Context, parent: ExecutionRecord, child: ExecutionRecord) -> ExecutionRecord:
    """Run the child's loop here until it ends, or until the parent's time
    (plus one lease, for a child another owner still holds) is up."""
    from rlm_rs.control.executions.answerer import run_answerer  # the loop runs children: a cycle

    now = time.time()
    give_up = now + max(seconds_left_at(parent, now), 0.0) + ctx.lease_seconds
    parent_lease = held(parent["execution_id"])
    while child["status"] == ExecutionStatus.RUNNING and time.time() < give_up:
        if parent_lease is not None:
            parent_lease.ensure()  # a parent taken over stops here, not after the child
        child = run_answerer(ctx, child["tenant_id"], child["execution_id"], child["session_id"])
        if child["status"] == ExecutionStatus.RUNNING:
            time.sleep(0.5)  # another owner's lease has not expired yet
    return child


def rlm_result(resolution: Resolution, key: str, child: ExecutionRecord | None, error: str) -> None:
    meta: dict[str, Any] = {}
    if child is not None:
        meta = {
            "execution_id": child["execution_id"],
            "status": child["status"],
            "depth": child["depth"],
            "budgets_consumed": child["budgets_consumed"],
        }
    if error:
        meta["error"] = error[:300]
    refs = [codec.parse(SpanRef, ref) for ref in (child["citations"] if child else [])]
    resolution.rlm[key] = {
        "text": (child.get("answer") if child else None) or "",
        "citations": [codec.to_json(ref) for ref in refs],
        "meta": meta,
    }
    resolution.statuses[key] = ToolStatus.ERROR if error else ToolStatus.RESOLVED
    resolution.records.append({"type": "rlm", "key": key, "meta": meta})


def ancestors_running(ctx: Context, execution: ExecutionRecord) -> bool:
    """Whether a child's parents are all still RUNNING (a cancel may have
    come between a parent's cascade and this child's creation). Their leases
    are the heartbeat's: a child runs inside its parent's held turn."""
    parent_id = execution.get("parent_execution_id")
    while parent_id:
        parent = ctx.records.read(execution["session_id"], parent_id)
        if parent["status"] != ExecutionStatus.RUNNING:
            return False
        parent_id = parent.get("parent_execution_id")
    return True


def child_traces(ctx: Context, execution: ExecutionRecord) -> list[dict[str, Any]]:
    """The children's own traces, for the parent's (a recursive trace is a tree)."""
    out = []
    for child in ctx.records.children(execution):
        uri = child.get("trace_s3_uri")
        out.append(read_trace(ctx.storage, uri) if uri else {"execution_id": child["execution_id"]})
    return out
