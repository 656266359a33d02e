"""Executions: the Answerer loop (docs/api.md#the-answerer-loop), runtime steps, finalisation.

Every execution is a record (executions table) plus one record per step
(execution_state, SK `STEP#<turn>`) and the latest state (SK `STATE`), saved
inline or offloaded (rlm_rs/storage/state.py). A turn is committed at its end
(step record, state, counters), so a failed step leaves the persisted state
exactly as it was, and a process that dies mid-turn leaves the previous turn
intact: whoever takes the lease over (after `lease_seconds`) replays that
turn; its sub-calls come from the cache, not the provider.

Statuses: COMPLETED (FINAL), FAILED (the root model could not be reached, or
the corpus could not be read), TIMEOUT (a turn ended past the execution's
wall-clock deadline, max_total_seconds), BUDGET_EXCEEDED (the deadline was
already past when a turn was due, or spans/sub-call/prompt budgets ran out),
MAX_TURNS_EXCEEDED, CANCELLED. Runtime executions run one step at a time
(claims.py: a claimed, fenced commit; the loser gets CONFLICT) and end
BUDGET_EXCEEDED once max_total_seconds has passed; what a step may persist is
bounded by limits.py.

Beyond the spec: child executions (tool.queue_rlm, see
children.py) run to completion between the parent's steps; live events
(events.py) are written as each phase happens; the root prompt carries a
bounded history of earlier turns, summarised by a sub-call (compaction) when
the prompt passes RLM_COMPACTION_SHARE of RLM_ROOT_CONTEXT_TOKENS (estimated
as chars / 4), the summary kept in state["_history"]; a follow-up starts a
new execution from a finished one's `work` and a digest of its history.
"""

from __future__ import annotations

import collections
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from rlm_rs.canonical import canonical_json
from rlm_rs.citations import build_citations, make_ref
from rlm_rs.control import children as kids
from rlm_rs.control import history, prompts
from rlm_rs.control.budgets import consumed_zero, deadline_epoch, merge_budgets, snapshot, step_policy
from rlm_rs.control.claims import StepClaim, busy, fence, not_running
from rlm_rs.control.corpus import DocumentCache
from rlm_rs.control.costs import PriceTable, cost_spent
from rlm_rs.control.events import EventLog, clip
from rlm_rs.control.limits import bound_step_result, parse_state_override
from rlm_rs.control.quotas import Quotas
from rlm_rs.control.tools import Resolution, ToolResolver
from rlm_rs.control.traces import build_trace, read_trace, redact, write_trace
from rlm_rs.errors import RlmError
from rlm_rs.ingestion.search import SearchIndex
from rlm_rs.limits import MAX_WAIT_TIMEOUT_SECONDS
from rlm_rs.observability import (
    EXECUTION_DURATION,
    EXECUTION_SPANS,
    EXECUTION_SUBCALLS,
    EXECUTION_TURNS,
    EXECUTIONS,
    bind_log_context,
    get_logger,
    logged_execution,
)
from rlm_rs.providers.base import CallContext, Provider, ProviderError
from rlm_rs.sandbox.client import SandboxClient
from rlm_rs.sandbox.policy import with_defaults
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import new_id, now_iso
from rlm_rs.storage.state import load_state, read_state_record, save_state
from rlm_rs.tracing import span as trace_span
from rlm_rs.v1.common_pb2 import ErrorDetail, RlmRequest, Span, SpanRef, ToolRequests
from rlm_rs.v1.sandbox_pb2 import StepRequest, StepResult

TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED")
CONTEXTS_INLINE_LIMIT_CHARS = 256_000
SANDBOX_RETRY_SECONDS = 20.0
log = get_logger(component="engine")


def initial_state() -> dict[str, Any]:
    return {"work": {}, "_tool_results": {"llm": {}, "search": {}}, "_tool_status": {}}


def _step_sk(turn: int) -> str:
    return f"STEP#{turn:06d}"


def _is_context_tag(tag: str) -> bool:
    return tag == "context" or tag.startswith("context:")


class ExecutionEngine:
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        sandbox: SandboxClient,
        provider: Provider,
        *,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        workers: int = 8,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.sandbox = sandbox
        self.provider = provider
        self.owner = owner or f"cp-{uuid.uuid4().hex[:10]}"
        self.lease_seconds = lease_seconds
        self.docs = DocumentCache(storage, settings.data_dir / "doc-cache")
        self.quotas = Quotas.from_settings(settings, storage)
        self.search_index = SearchIndex(settings.data_dir / "search.sqlite3")
        self.prices = PriceTable.from_settings(settings, getattr(provider, "name", None))
        self.resolver = ToolResolver(storage, provider, self.search_index, self.prices)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="answerer")
        self._changed = threading.Condition()  # an execution record changed (waiters of wait())
        self._new_events = threading.Condition()  # an event was written (watchers)
        self.events = EventLog(storage, self._notify_watchers)
        self._active: set[str] = set()  # Answerer loops queued or running in this process
        self._active_lock = threading.Lock()
        # per-turn phase durations of the Answerer loop (bench orchestrator reads them)
        self.turn_timings: collections.deque[dict[str, float]] = collections.deque(maxlen=2_000)
        self.finish_timings_ms: collections.deque[float] = collections.deque(maxlen=2_000)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _notify_watchers(self) -> None:
        with self._new_events:
            self._new_events.notify_all()

    # --- records ------------------------------------------------------------------------
    def create(
        self,
        tenant_id: str,
        session: dict[str, Any],
        *,
        mode: str,
        question: str,
        models: dict[str, str],
        budgets: dict[str, Any],
        options: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new RUNNING execution record; `extra` sets the tree fields
        (execution_id, parent_execution_id, depth, corpus, followup_of)."""
        if session["status"] != "READY":
            raise RlmError(
                "SESSION_NOT_READY", f"session is {session['status']}", {"session_id": session["session_id"]}
            )
        defaults = session.get("defaults") or {}
        requested = merge_budgets(
            self.settings.default_budgets_json, defaults.get("budgets_default") or {}, budgets
        )
        session_models = defaults.get("models_default") or {}
        output_mode = (options.get("output_mode") or "ANSWER").upper()
        if output_mode not in ("ANSWER", "CONTEXTS"):
            raise RlmError("VALIDATION_ERROR", "options.output_mode must be ANSWER or CONTEXTS")
        record = {
            "tenant_id": tenant_id,
            "session_id": session["session_id"],
            "execution_id": new_id("exec"),
            "status": "RUNNING",
            "mode": mode,
            "output_mode": output_mode,
            "question": question,
            "answer": None,
            "citations": [],
            "models": {
                "root_model": models.get("root_model")
                or session_models.get("root_model")
                or self.settings.default_root_model,
                "sub_model": models.get("sub_model")
                or session_models.get("sub_model")
                or self.settings.default_sub_model,
            },
            "options": options,
            "budgets_requested": requested,
            "budgets_consumed": consumed_zero(),
            "next_turn": 0,
            "started_at": now_iso(),
            "started_epoch": time.time(),
            "completed_at": None,
            "duration_ms": None,
            "trace_s3_uri": None,
            "error": None,
            "ttl_epoch": session.get("ttl_epoch"),
            "parent_execution_id": None,
            "depth": 0,
            "children": [],
            "followup_of": None,
            **(extra or {}),
        }
        if mode == "ANSWERER":  # leased from birth: the takeover sweep leaves a queued execution alone
            record.update(lease_owner=self.owner, lease_until=time.time() + self.lease_seconds)
        with self.quotas.admit_execution(record):
            return self.storage.metadata.put_execution(record)

    def get(self, tenant_id: str, execution_id: str) -> dict[str, Any]:
        return self.storage.metadata.get_execution(tenant_id, execution_id)

    def _update(self, execution: dict[str, Any], changes: dict[str, Any], **condition: Any) -> dict[str, Any]:
        updated = self.storage.metadata.update_execution(
            execution["session_id"], execution["execution_id"], changes, **condition
        )
        self._notify()
        return updated

    def _manifest(self, execution: dict[str, Any]) -> list[Any]:
        """The execution's context: the session's documents, or a child's sub-corpus."""
        manifest = self.docs.manifest(execution["session_id"])
        if not execution.get("corpus"):
            return manifest
        return kids.child_manifest(execution["corpus"], manifest, self._derived_dir(execution))

    def _derived_dir(self, execution: dict[str, Any]) -> Path:
        """A child's span documents: under the document cache (the pool opens
        only files below RLM_SANDBOX_DOCUMENT_ROOT); removed when it ends
        (citations map to the session's own documents), rewritten if a
        resumed child needs them again."""
        return self.docs.cache_dir / "derived" / execution["execution_id"]

    def children(self, execution: dict[str, Any]) -> list[dict[str, Any]]:
        """The execution's child records, in the order they were started."""
        out = []
        for child_id in execution.get("children") or []:
            try:
                out.append(self.get(execution["tenant_id"], child_id))
            except RlmError:
                continue  # not created yet (the parent died between the two writes)
        return out

    def _save_state(
        self, execution: dict[str, Any], turn: int, state_json: str, *, sk: str = "STATE", extra: Any = None
    ) -> None:
        save_state(
            self.storage.metadata,
            self.storage.blobs,
            tenant_id=execution["tenant_id"],
            execution_id=execution["execution_id"],
            turn_index=turn,
            state_json=state_json,
            ttl_epoch=execution.get("ttl_epoch"),
            sk=sk,
            extra=extra,
        )

    def _load_state(self, execution: dict[str, Any]) -> dict[str, Any]:
        loaded = load_state(self.storage.metadata, self.storage.blobs, execution["execution_id"])
        return json.loads(loaded[0]) if loaded else initial_state()

    def steps(self, execution: dict[str, Any], *, with_state: bool = True) -> list[dict[str, Any]]:
        """The step records in turn order; `with_state` False leaves an
        offloaded state unread (read_state_record reads one later)."""
        items = self.storage.metadata.items.query(
            "execution_state", f"EXEC#{execution['execution_id']}", "STEP#"
        )
        items.sort(key=lambda item: int(item["turn_index"]))
        if with_state:
            for item in items:
                item["state_json"] = read_state_record(self.storage.blobs, item)
        return items

    # --- waiting and cancelling ---------------------------------------------------------------
    def wait(self, tenant_id: str, execution_id: str, timeout_seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + max(0.0, min(timeout_seconds, MAX_WAIT_TIMEOUT_SECONDS))
        while True:
            execution = self.get(tenant_id, execution_id)
            remaining = deadline - time.monotonic()
            if execution["status"] in TERMINAL or remaining <= 0:
                return execution
            with self._changed:
                self._changed.wait(min(remaining, 0.1))

    def cancel(self, tenant_id: str, execution_id: str) -> dict[str, Any]:
        execution = self.get(tenant_id, execution_id)
        if execution["status"] != "RUNNING":
            return execution  # idempotent
        try:
            cancelled = self._update(
                execution,
                {
                    "status": "CANCELLED",
                    "completed_at": now_iso(),
                    "duration_ms": self._elapsed_ms(execution),
                },
                from_statuses=("RUNNING",),
            )
        except RlmError as exc:
            if exc.code != "CONFLICT":
                raise
            return self.get(tenant_id, execution_id)
        self._status_event(cancelled)
        for child_id in cancelled.get("children") or []:
            try:
                self.cancel(tenant_id, child_id)
            except RlmError:
                continue
        return cancelled

    def _status_event(self, execution: dict[str, Any]) -> None:
        self.events.emit(
            execution,
            int(execution.get("next_turn") or 0),
            "status",
            {
                "status": execution["status"],
                "answer": clip(execution["answer"]) if execution.get("answer") else None,
                "error": execution.get("error"),
                "budgets_consumed": execution.get("budgets_consumed"),
            },
        )

    def watch(
        self,
        tenant_id: str,
        execution_id: str,
        after_event_id: str = "",
        *,
        poll_seconds: float = 0.25,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events past `after_event_id` as they are written, ending with the
        `status` event (at once when the caller already has it). Events
        written by another control plane are seen by polling storage every
        `poll_seconds`; `stop()` true (the caller went away) ends the watch."""
        self.get(tenant_id, execution_id)  # NOT_FOUND for a foreign or unknown id
        last = after_event_id
        terminal_seen = False
        while stop is None or not stop():
            fresh = self.events.after(execution_id, last)
            for event in fresh:
                yield event
                last = event["event_id"]
                if event["type"] == "status":
                    return
            if fresh:
                continue
            execution = self.get(tenant_id, execution_id)
            if execution["status"] in TERMINAL:
                if terminal_seen:
                    if not any(e["type"] == "status" for e in self.events.after(execution_id)):
                        self._status_event(execution)  # ended before events existed
                    if not self.events.after(execution_id, last):
                        return  # the caller is already past the status event
                    continue
                terminal_seen = True  # its status event may be a moment behind the record
            with self._new_events:
                self._new_events.wait(poll_seconds)

    @staticmethod
    def _elapsed_ms(execution: dict[str, Any]) -> int:
        return int((time.time() - float(execution.get("started_epoch") or time.time())) * 1000)

    # --- one step (both modes) -----------------------------------------------------------------
    def _run_step(
        self,
        execution: dict[str, Any],
        session: dict[str, Any],
        code: str,
        state: dict[str, Any],
        *,
        require_block: bool,
    ) -> tuple[StepResult, list[Any]]:
        bind_log_context(turn_index=int(execution["next_turn"]))  # runtime steps: until the RPC ends
        budgets = execution["budgets_requested"]
        manifest = self._manifest(execution)
        state = {**state, "_budgets": snapshot(budgets, execution["budgets_consumed"])}
        request = StepRequest(
            tenant_id=execution["tenant_id"],
            session_id=execution["session_id"],
            execution_id=execution["execution_id"],
            turn_index=int(execution["next_turn"]),
            code=code,
            state_json=canonical_json(state),
            context_manifest=manifest,
            limits=with_defaults(
                step_policy(budgets, enable_search=bool((session.get("options") or {}).get("enable_search")))
            ),
            require_repl_block=require_block,
        )
        # An unreachable pool (restarting, being replaced) is retried with
        # backoff for up to SANDBOX_RETRY_SECONDS before the step counts as
        # failed; a worker that died *during* the step is a StepResult error
        # already and is not retried (the step may be what killed it).
        give_up = time.monotonic() + SANDBOX_RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                with trace_span(
                    "sandbox.step", execution_id=request.execution_id, turn_index=request.turn_index
                ):
                    result = self.sandbox.run_step(request)
                bound_step_result(result, request.state_json, self.settings)
                return result, manifest
            except RlmError as exc:
                if exc.code != "LAMBDA_ERROR":
                    raise
                if time.monotonic() + delay > give_up:
                    log.error(
                        "sandbox_unavailable", execution_id=execution["execution_id"], error=exc.message
                    )
                    failed = StepResult(turn_index=request.turn_index, state_json=request.state_json)
                    failed.error.CopyFrom(ErrorDetail(code=exc.code, message=exc.message, details_json="{}"))
                    return failed, manifest
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _commit_turn(
        self,
        execution: dict[str, Any],
        result: StepResult,
        state_json: str | None,
        trace_turn: dict[str, Any],
        consumed: dict[str, Any],
        claim: StepClaim | None = None,
    ) -> dict[str, Any]:
        """Persist the step record, the new state (None: unchanged) and the
        counters, fenced (claims.py): only the holder of the turn writes it,
        and the counters' update is conditional on the fenced version; a
        writer that lost the turn gets CONFLICT before it writes anything."""
        turn = int(execution["next_turn"])
        if claim is not None:
            execution = claim.fence(turn)
        else:
            execution = fence(self.storage.metadata, execution, self.owner, turn, self.lease_seconds)
        record_state = state_json if state_json is not None else canonical_json(self._load_state(execution))
        step = json_format.MessageToDict(result, preserving_proto_field_name=True)
        extra = {
            "success": result.success,
            "stdout": result.stdout,
            "span_log": [
                {"doc_index": s.doc_index, "start_char": s.start_char, "end_char": s.end_char, "tag": s.tag}
                for s in result.span_log
            ],
            "tool_requests": step.get("tool_requests", {}),
            "final": step.get("final") if result.final.is_final else None,
            "error": step.get("error"),
            "trace": trace_turn,
        }
        self._save_state(execution, turn, record_state, sk=_step_sk(turn), extra=extra)
        if state_json is not None:
            self._save_state(execution, turn, state_json)
        consumed["turns"] = turn + 1
        try:
            return self._update(
                execution,
                {"next_turn": turn + 1, "budgets_consumed": consumed},
                from_statuses=("RUNNING",),
                expected_version=execution["version"],
            )
        except RlmError as exc:
            if exc.code != "CONFLICT":
                raise
            current = self.get(execution["tenant_id"], execution["execution_id"])  # e.g. cancelled
            raise (not_running(current) if current["status"] != "RUNNING" else busy(current)) from None

    # --- finishing -------------------------------------------------------------------------------
    def _spans(self, execution: dict[str, Any]) -> list[tuple[int, list[Span]]]:
        """Each successful turn's span log, in the session's coordinates (a
        child's sub-corpus spans are mapped back to the session's documents)."""
        pieces = execution.get("corpus")
        out = []
        for step in self.steps(execution):
            if step.get("success"):
                spans = [Span(**s) for s in step.get("span_log", [])]
                if pieces:
                    spans = [kids.to_parent(span, pieces) for span in spans]
                out.append((int(step["turn_index"]), spans))
        return out

    def _children_spans(self, execution: dict[str, Any]) -> list[Span]:
        """What the completed children read (their citations), for the parent's citations."""
        refs = [
            json_format.ParseDict(ref, SpanRef())
            for child in self.children(execution)
            if child["status"] == "COMPLETED"
            for ref in child.get("citations") or []
        ]
        return [Span(doc_index=r.doc_index, start_char=r.start_char, end_char=r.end_char) for r in refs]

    def finish(
        self,
        execution: dict[str, Any],
        status: str,
        *,
        answer: str | None = None,
        error: RlmError | None = None,
        turns: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        clock = time.perf_counter()
        session_id = execution["session_id"]
        changes: dict[str, Any] = {
            "status": status,
            "completed_at": now_iso(),
            "duration_ms": self._elapsed_ms(execution),
        }
        consumed = dict(execution["budgets_consumed"])
        consumed["total_seconds"] = round(self._elapsed_ms(execution) / 1000, 3)
        changes["budgets_consumed"] = consumed
        if error is not None:
            changes["error"] = {"code": error.code, "message": error.message, "details": error.details}
        if status == "COMPLETED":
            manifest = self.docs.manifest(session_id)
            documents = self.docs.cited_documents(manifest, session_id)
            turn_spans = self._spans(execution)
            if execution.get("output_mode") == "CONTEXTS":
                contexts = self._contexts(execution, manifest, documents, turn_spans)
                changes["answer"] = None
                changes["citations"] = [c["ref"] for c in contexts]
                if sum(c["text_char_length"] for c in contexts) > CONTEXTS_INLINE_LIMIT_CHARS:
                    key = f"contexts/{execution['tenant_id']}/{session_id}/{execution['execution_id']}.json"
                    self.storage.blobs.put(key, canonical_json(contexts).encode("utf-8"))
                    changes["contexts_s3_uri"] = self.storage.blobs.uri(key)
                    changes["contexts"] = None
                else:
                    changes["contexts"] = contexts
            else:
                spans = [s for _, step_spans in turn_spans for s in step_spans]
                spans += self._children_spans(execution)
                refs = build_citations(execution["tenant_id"], session_id, spans, documents)
                changes["answer"] = answer
                changes["citations"] = [
                    json_format.MessageToDict(r, preserving_proto_field_name=True) for r in refs
                ]
        merged = {**execution, **changes}
        trace_turns = turns if turns is not None else [s.get("trace") or {} for s in self.steps(execution)]
        options = execution.get("options") or {}
        trace = build_trace(merged, trace_turns, self._child_traces(execution))
        if options.get("redact_trace"):
            trace = redact(trace)  # every copy: the blob, trace_json, a parent's embedded copy
        changes["trace_s3_uri"] = write_trace(self.storage, trace)
        if options.get("return_trace"):
            changes["trace_json"] = canonical_json(trace)
        try:
            final = self._update(execution, changes, from_statuses=("RUNNING",))
        except RlmError as exc:
            if exc.code != "CONFLICT":
                raise
            # cancelled meanwhile: keep CANCELLED, attach the trace
            final = self._update(execution, {"trace_s3_uri": changes["trace_s3_uri"]})
        else:
            self._status_event(final)
        if execution.get("corpus"):
            shutil.rmtree(self._derived_dir(execution), ignore_errors=True)
        self.finish_timings_ms.append((time.perf_counter() - clock) * 1000)
        EXECUTIONS.labels(mode=execution["mode"], status=final["status"]).inc()
        EXECUTION_DURATION.observe((final.get("duration_ms") or 0) / 1000)
        EXECUTION_TURNS.observe(consumed.get("turns", 0))
        EXECUTION_SUBCALLS.observe(consumed.get("llm_subcalls", 0))
        EXECUTION_SPANS.inc(consumed.get("spans_total", 0))
        return final

    def _contexts(
        self,
        execution: dict[str, Any],
        manifest: list[Any],
        documents: dict[int, Any],
        turn_spans: list[tuple[int, list[Span]]],
    ) -> list[dict[str, Any]]:
        by_index = {m.doc_index: m for m in manifest}
        contexts: list[dict[str, Any]] = []
        for turn, spans in turn_spans:
            for span_index, span in enumerate(spans):
                doc = documents.get(span.doc_index)
                if not _is_context_tag(span.tag) or doc is None:
                    continue
                ref: SpanRef = make_ref(
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
                        "ref": json_format.MessageToDict(ref, preserving_proto_field_name=True),
                    }
                )
        return contexts

    # --- runtime mode -------------------------------------------------------------------------
    @logged_execution
    def runtime_step(
        self, tenant_id: str, execution_id: str, code: str, state_override: str | None, resolve: bool
    ) -> StepResult:
        """One caller-driven step, alone on its execution (claims.py): a step
        sent while another runs on the same execution answers CONFLICT and
        runs nothing; max_turns and max_total_seconds are checked under the
        claim, so no race can pass them."""
        execution = self._runtime(tenant_id, execution_id)
        override = parse_state_override(state_override, execution) if state_override is not None else None
        claim = StepClaim.take(self.storage.metadata, execution)
        try:
            execution = claim.execution
            budgets = execution["budgets_requested"]
            if int(execution["next_turn"]) >= int(budgets["max_turns"]):
                self.finish(
                    execution, "MAX_TURNS_EXCEEDED", error=RlmError("MAX_TURNS_EXCEEDED", "max_turns reached")
                )
                raise RlmError("MAX_TURNS_EXCEEDED", f"max_turns ({budgets['max_turns']}) reached")
            self._runtime_deadline(execution)
            with claim.kept_alive():
                session = self.storage.metadata.get_session(tenant_id, execution["session_id"])
                state = self._load_state(execution)
                if override is not None:
                    state = {
                        **{k: v for k, v in override.items() if not k.startswith("_")},
                        **{k: v for k, v in state.items() if k.startswith("_")},
                    }
                started = time.perf_counter()
                result, _ = self._run_step(execution, session, code, state, require_block=False)
                self._step_event(execution, int(execution["next_turn"]), result)
                consumed = dict(execution["budgets_consumed"])
                new_state: str | None = None
                resolution_records: list[dict[str, Any]] = []
                if result.success:
                    consumed["spans_total"] += len(result.span_log)
                    state_obj = json.loads(result.state_json)
                    state_obj.pop("_budgets", None)
                    if resolve and not result.final.is_final:
                        resolution = self._resolve(execution, session, result.tool_requests, consumed)
                        resolution.inject(state_obj)
                        resolution_records = resolution.records
                    new_state = canonical_json(state_obj)
                    result.state_json = new_state
            trace_turn = {
                "turn_index": int(execution["next_turn"]),
                "code": code,
                "sandbox": {
                    "success": result.success,
                    "stdout": result.stdout,
                    "error": json_format.MessageToDict(result.error) if result.HasField("error") else None,
                    "duration_ms": round(result.duration_ms, 3),
                },
                "tool_resolution": {"results": resolution_records},
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            execution = self._commit_turn(execution, result, new_state, trace_turn, consumed, claim)
            if consumed["spans_total"] > budgets["max_spans_total"]:
                self.finish(
                    execution, "BUDGET_EXCEEDED", error=RlmError("BUDGET_EXCEEDED", "max_spans_total")
                )
            elif result.success and result.final.is_final:
                self.finish(execution, "COMPLETED", answer=result.final.answer)
            return result
        finally:
            claim.release()

    @logged_execution
    def resolve_tools(self, tenant_id: str, execution_id: str, requests: ToolRequests, sub_model: str) -> Any:
        """Resolve a runtime caller's tool requests and inject the results
        into the persisted state; claimed like a step, so it never races one."""
        execution = self._runtime(tenant_id, execution_id)
        claim = StepClaim.take(self.storage.metadata, execution)
        try:
            execution = claim.execution
            self._runtime_deadline(execution)
            with claim.kept_alive():
                session = self.storage.metadata.get_session(tenant_id, execution["session_id"])
                consumed = dict(execution["budgets_consumed"])
                resolution = self._resolve(execution, session, requests, consumed, sub_model)
            # the next step sees the results too (callers may also pass them in a state override)
            fenced = claim.fence(int(execution["next_turn"]))
            state = self._load_state(fenced)
            resolution.inject(state)
            self._save_state(fenced, int(fenced["next_turn"]), canonical_json(state))
            self._update(
                fenced,
                {"budgets_consumed": consumed},
                from_statuses=("RUNNING",),
                expected_version=fenced["version"],
            )
            return resolution
        finally:
            claim.release()

    def _runtime(self, tenant_id: str, execution_id: str) -> dict[str, Any]:
        execution = self.get(tenant_id, execution_id)
        if execution["mode"] != "RUNTIME":
            raise RlmError("VALIDATION_ERROR", "steps and tool resolution are only for runtime executions")
        if execution["status"] != "RUNNING":
            raise not_running(execution)
        return execution

    def _runtime_deadline(self, execution: dict[str, Any]) -> None:
        """A runtime execution past max_total_seconds ends BUDGET_EXCEEDED when
        its next step is due (the sweep ends idle ones: recover_orphans)."""
        if time.time() >= deadline_epoch(execution):
            self.finish(
                execution, "BUDGET_EXCEEDED", error=RlmError("BUDGET_EXCEEDED", "max_total_seconds spent")
            )
            raise RlmError("BUDGET_EXCEEDED", "max_total_seconds spent: the execution has ended")

    # --- Answerer mode --------------------------------------------------------------------------
    def start(self, execution: dict[str, Any]) -> None:
        """Queue the execution's loop, at most once per process: the takeover
        sweep may find an execution still queued here (its creation lease ran
        out while every loop thread was busy) and must not run it twice."""
        execution_id = execution["execution_id"]
        with self._active_lock:
            if execution_id in self._active:
                return
            self._active.add(execution_id)
        self._pool.submit(self._guarded_run, execution["tenant_id"], execution_id)

    def _guarded_run(self, tenant_id: str, execution_id: str) -> None:
        try:
            self.run_answerer(tenant_id, execution_id)
        except Exception as exc:  # the loop must never die silently
            # the traceback goes to the operator's log, never to the caller
            log.error("answerer_crashed", execution_id=execution_id, error=type(exc).__name__, exc_info=True)
            execution = self.get(tenant_id, execution_id)
            if execution["status"] == "RUNNING":
                self.finish(execution, "FAILED", error=RlmError("INTERNAL_ERROR", "the execution failed"))
        finally:
            with self._active_lock:
                self._active.discard(execution_id)

    def _lease(self, execution: dict[str, Any]) -> bool:
        return (
            self.storage.metadata.acquire_lease(
                "executions",
                f"SESSION#{execution['session_id']}",
                f"EXEC#{execution['execution_id']}",
                owner=self.owner,
                ttl_seconds=self.lease_seconds,
            )
            is not None
        )

    def recover_orphans(self) -> int:
        """Take over RUNNING Answerer executions whose owner's lease expired,
        and end runtime executions past max_total_seconds that no step holds."""
        taken = 0
        now = time.time()
        for execution in self.storage.metadata.executions_with_status("RUNNING"):
            if execution.get("mode") == "RUNTIME" and now >= deadline_epoch(execution):
                self._expire_runtime(execution)
                continue
            if execution.get("mode") != "ANSWERER" or execution.get("parent_execution_id"):
                continue  # runtime executions have no loop; children are run by their parent
            if execution.get("lease_owner") and float(execution.get("lease_until") or 0) > now:
                continue
            if self._lease(execution):
                log.info(
                    "execution_taken_over",
                    execution_id=execution["execution_id"],
                    from_owner=execution.get("lease_owner"),
                )
                self.start(execution)
                taken += 1
        return taken

    def _expire_runtime(self, execution: dict[str, Any]) -> None:
        try:
            claim = StepClaim.take(self.storage.metadata, execution)
        except RlmError:
            return  # a step holds it (it ends the execution itself) or it just ended
        try:
            self._runtime_deadline(claim.execution)
        except RlmError:
            pass
        finally:
            claim.release()

    @logged_execution
    def run_answerer(self, tenant_id: str, execution_id: str) -> dict[str, Any]:
        execution = self.get(tenant_id, execution_id)
        if not self._lease(execution):
            return execution  # another control plane owns it
        session = self.storage.metadata.get_session(tenant_id, execution["session_id"])
        budgets = execution["budgets_requested"]
        deadline = float(execution["started_epoch"]) + float(budgets["max_total_seconds"])
        docs = self._manifest(execution)
        subcalls = int(budgets["max_llm_subcalls"]) > 0
        search = bool((session.get("options") or {}).get("enable_search"))
        system = prompts.system_prompt(
            doc_count=len(docs),
            subcalls=subcalls,
            search=search,
            contexts=execution.get("output_mode") == "CONTEXTS",
            max_stdout_chars=int(budgets["max_stdout_chars"]),
            rlm=int(budgets["max_rlm_subcalls"]) > 0
            and int(execution.get("depth") or 0) < int(budgets["max_depth"]),
        )
        turns = history.committed_turns(self.storage, execution_id)
        while True:
            execution = self.get(tenant_id, execution_id)
            if execution["status"] != "RUNNING":
                return execution  # cancelled (or finished elsewhere)
            if not self._lease(execution):
                return execution  # lost the lease: the new owner carries on
            if not self._ancestors_running(execution):
                return self.cancel(tenant_id, execution_id)
            turn = int(execution["next_turn"])
            bind_log_context(turn_index=turn)
            if turn >= int(budgets["max_turns"]):
                return self.finish(
                    execution,
                    "MAX_TURNS_EXCEEDED",
                    error=RlmError("MAX_TURNS_EXCEEDED", f"no FINAL after {turn} turns"),
                )
            if time.time() >= deadline:
                return self.finish(
                    execution, "BUDGET_EXCEEDED", error=RlmError("BUDGET_EXCEEDED", "max_total_seconds spent")
                )
            clock = time.perf_counter()
            state = self._load_state(execution)
            consumed = dict(execution["budgets_consumed"])
            timings = {"storage_ms": (time.perf_counter() - clock) * 1000}
            self.events.emit(execution, turn, "turn_started", {"budgets": snapshot(budgets, consumed)})
            clock = time.perf_counter()
            user = history.turn_prompt(execution, docs, state, consumed, turns)
            if history.too_large(self.settings, system, user):
                compaction = history.compact(self.provider, self.prices, execution, state, consumed, turns)
                if compaction is not None:
                    self.events.emit(execution, turn, "compaction", compaction)
                    user = history.turn_prompt(execution, docs, state, consumed, turns)
            timings["prompt_ms"] = (time.perf_counter() - clock) * 1000
            started = time.perf_counter()
            try:
                with trace_span("llm.root", execution_id=execution_id, turn_index=turn):
                    completion = self.provider.complete(
                        execution["models"]["root_model"],
                        [{"role": "system", "content": system}, {"role": "user", "content": user}],
                        max_tokens=4096,
                        temperature=0.0,
                        context=CallContext(role="root", question=execution["question"], turn_index=turn),
                    )
            except ProviderError as exc:
                return self.finish(
                    execution, "FAILED", error=RlmError("LLM_PROVIDER_ERROR", f"root model: {exc}")
                )
            timings["root_model_ms"] = (time.perf_counter() - started) * 1000
            self.prices.record(consumed, completion.model, completion.input_tokens, completion.output_tokens)
            self.events.emit(
                execution,
                turn,
                "root_reply",
                {
                    "model": completion.model,
                    "chars": len(completion.text),
                    "text": clip(completion.text),
                    "input_tokens": completion.input_tokens,
                    "output_tokens": completion.output_tokens,
                },
            )
            clock = time.perf_counter()
            result, _ = self._run_step(execution, session, completion.text, state, require_block=True)
            timings["sandbox_ms"] = (time.perf_counter() - clock) * 1000
            self._step_event(execution, turn, result)
            clock = time.perf_counter()
            new_state: str | None = None
            resolution_records: list[dict[str, Any]] = []
            if result.success:
                consumed["spans_total"] += len(result.span_log)
                state_obj = json.loads(result.state_json)
                state_obj.pop("_budgets", None)
                if isinstance(state_obj.get("work"), dict):
                    state_obj["work"].pop("last_error", None)
                if not result.final.is_final and _has_requests(result.tool_requests):
                    resolution = self._resolve(execution, session, result.tool_requests, consumed)
                    resolution.inject(state_obj)
                    resolution_records = resolution.records
                new_state = canonical_json(state_obj)
                entry = {"turn": turn, "code": completion.text, "stdout": result.stdout, "error": ""}
            else:
                error_text = f"{result.error.code}: {result.error.message}"
                state_obj = json.loads(result.state_json)
                state_obj.pop("_budgets", None)
                if isinstance(state_obj.get("work"), dict):
                    state_obj["work"]["last_error"] = error_text  # recorded, the loop goes on
                new_state = canonical_json(state_obj)
                entry = {"turn": turn, "code": completion.text, "stdout": result.stdout, "error": error_text}
            trace_turn = {
                "turn_index": turn,
                "root_model": {"name": completion.model},
                "root_output_raw": completion.text,
                "code": completion.text,
                "sandbox": {
                    "success": result.success,
                    "stdout": result.stdout,
                    "span_log": [json_format.MessageToDict(s) for s in result.span_log],
                    "tool_requests": json_format.MessageToDict(result.tool_requests),
                    "final": json_format.MessageToDict(result.final) if result.final.is_final else None,
                    "error": json_format.MessageToDict(result.error) if result.HasField("error") else None,
                    "duration_ms": round(result.duration_ms, 3),
                },
                "tool_resolution": {"results": resolution_records},
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            timings["tools_ms"] = (time.perf_counter() - clock) * 1000
            clock = time.perf_counter()
            try:
                execution = self._commit_turn(execution, result, new_state, trace_turn, consumed)
                timings["storage_ms"] += (time.perf_counter() - clock) * 1000
                self.turn_timings.append(timings)
            except RlmError as exc:
                if exc.code == "CONFLICT":  # cancelled during the turn
                    return self.get(tenant_id, execution_id)
                raise
            turns.append(entry)
            if consumed["spans_total"] > int(budgets["max_spans_total"]):
                return self.finish(
                    execution, "BUDGET_EXCEEDED", error=RlmError("BUDGET_EXCEEDED", "max_spans_total spent")
                )
            if consumed["llm_prompt_chars_total"] > int(budgets["max_total_llm_prompt_chars"]):
                return self.finish(
                    execution,
                    "BUDGET_EXCEEDED",
                    error=RlmError("BUDGET_EXCEEDED", "max_total_llm_prompt_chars spent"),
                )
            if result.success and result.final.is_final:
                return self.finish(execution, "COMPLETED", answer=result.final.answer)
            if cost_spent(budgets, consumed):
                return self.finish(
                    execution, "BUDGET_EXCEEDED", error=RlmError("BUDGET_EXCEEDED", "max_cost_usd spent")
                )
            if time.time() >= deadline:
                return self.finish(
                    execution,
                    "TIMEOUT",
                    error=RlmError("STEP_TIMEOUT", "the execution passed max_total_seconds"),
                )

    def _step_event(self, execution: dict[str, Any], turn: int, result: StepResult) -> None:
        requests = result.tool_requests
        log.info(
            "step_finished",
            success=result.success,
            error_code=result.error.code if result.HasField("error") else None,
            spans=len(result.span_log),
            state_size=len(result.state_json),
            tool_counts={k: len(getattr(requests, k)) for k in ("llm", "llm_batch", "search", "rlm")},
            final=result.final.is_final,
            duration_ms=round(result.duration_ms, 3),
        )
        self.events.emit(
            execution,
            turn,
            "step_result",
            {
                "success": result.success,
                "stdout": clip(result.stdout),
                "error": {"code": result.error.code, "message": result.error.message}
                if result.HasField("error")
                else None,
                "spans": len(result.span_log),
                "final": clip(result.final.answer) if result.final.is_final else None,
                "duration_ms": round(result.duration_ms, 3),
            },
        )
        if result.success and _has_requests(requests):
            self.events.emit(
                execution,
                turn,
                "tool_requests",
                {
                    "llm": [r.key for r in requests.llm],
                    "llm_batch": [r.key for r in requests.llm_batch],
                    "search": [r.key for r in requests.search],
                    "rlm": [r.key for r in requests.rlm],
                },
            )

    # --- tool resolution (both modes) ---------------------------------------------------------
    def _resolve(
        self,
        execution: dict[str, Any],
        session: dict[str, Any],
        requests: ToolRequests,
        consumed: dict[str, Any],
        sub_model: str = "",
    ) -> Resolution:
        """Sub-calls, batches and searches (ToolResolver), then child executions
        one after another; `consumed` is updated in place."""
        resolution = self.resolver.resolve(
            requests,
            tenant_id=execution["tenant_id"],
            session=session,
            sub_model=sub_model or execution["models"]["sub_model"],
            budgets=execution["budgets_requested"],
            consumed=consumed,
            question=execution.get("question") or "",
        )
        for request in requests.rlm:
            self._run_child(execution, session, request, consumed, resolution)
        turn = int(execution.get("next_turn") or 0)
        self.events.emit(execution, turn, "tool_results", {"statuses": dict(resolution.statuses)})
        return resolution

    def _run_child(
        self,
        parent: dict[str, Any],
        session: dict[str, Any],
        request: RlmRequest,
        consumed: dict[str, Any],
        resolution: Resolution,
    ) -> None:
        tenant_id = parent["tenant_id"]
        turn = int(parent.get("next_turn") or 0)
        child_id = kids.child_execution_id(parent["execution_id"], turn, request.key)
        try:
            child = self.get(tenant_id, child_id)  # a replayed turn finds its child
        except RlmError:
            try:
                budgets = kids.child_budgets(parent, consumed, request.budgets_json, time.time())
                pieces = kids.subcorpus(request, self._manifest(parent))
            except RlmError as exc:
                self._rlm_result(resolution, request.key, None, f"{exc.code}: {exc.message}")
                return
            if parent.get("corpus"):  # a grandchild: compose with the parent's own view
                pieces = [kids.compose(piece, parent["corpus"]) for piece in pieces]
            current = self.get(tenant_id, parent["execution_id"])
            self._update(current, {"children": [*(current.get("children") or []), child_id]})
            try:
                child = self.create(
                    tenant_id,
                    session,
                    mode="ANSWERER",
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
            except RlmError as exc:  # e.g. the session is being deleted
                self._rlm_result(resolution, request.key, None, f"{exc.code}: {exc.message}")
                return
        self.events.emit(
            parent,
            turn,
            "child_started",
            {
                "key": request.key,
                "execution_id": child_id,
                "depth": child["depth"],
                "question": clip(request.question),
            },
        )
        now = time.time()
        give_up = now + max(kids.seconds_left_at(parent, now), 0.0) + self.lease_seconds
        while child["status"] == "RUNNING" and time.time() < give_up:
            child = self.run_answerer(tenant_id, child_id)
            if child["status"] == "RUNNING":
                time.sleep(0.5)  # another owner's lease has not expired yet
        kids.roll_up(consumed, child["budgets_consumed"])
        error = ""
        if child["status"] != "COMPLETED":
            detail = child.get("error") or {}
            reason = f"{detail.get('code', '')} {detail.get('message', '')}".strip()
            error = f"child execution ended {child['status']}: {reason}"
        self._rlm_result(resolution, request.key, child, error.strip())
        self.events.emit(
            parent,
            turn,
            "child_finished",
            {"key": request.key, "execution_id": child_id, "status": child["status"]},
        )

    @staticmethod
    def _rlm_result(resolution: Resolution, key: str, child: dict[str, Any] | None, error: str) -> None:
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
        refs = [json_format.ParseDict(ref, SpanRef()) for ref in (child or {}).get("citations") or []]
        resolution.rlm[key] = {
            "text": (child or {}).get("answer") or "",
            "citations": [
                json_format.MessageToDict(
                    ref, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                )
                | {"start_char": ref.start_char, "end_char": ref.end_char}  # ints, not JSON strings
                for ref in refs
            ],
            "meta": meta,
        }
        resolution.statuses[key] = "error" if error else "resolved"
        resolution.records.append({"type": "rlm", "key": key, "meta": meta})

    def _ancestors_running(self, execution: dict[str, Any]) -> bool:
        """A child runs inside its parent's turn: keep the parents' leases alive,
        and tell whether they are all still RUNNING (a cancel may have come
        between a parent's cascade and this child's creation)."""
        parent_id = execution.get("parent_execution_id")
        while parent_id:
            parent = self.get(execution["tenant_id"], parent_id)
            if parent["status"] != "RUNNING":
                return False
            self._lease(parent)
            parent_id = parent.get("parent_execution_id")
        return True

    def _child_traces(self, execution: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for child in self.children(execution):
            uri = child.get("trace_s3_uri")
            out.append(read_trace(self.storage, uri) if uri else {"execution_id": child["execution_id"]})
        return out

    # --- follow-ups -------------------------------------------------------------------------------
    def followup(
        self,
        tenant_id: str,
        execution_id: str,
        *,
        question: str,
        models: dict[str, str],
        budgets: dict[str, Any],
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """A new Answerer execution on the same session that starts from a
        finished execution's `work` and a digest of its history (its question,
        answer, summary and last turns). The caller starts it."""
        source = self.get(tenant_id, execution_id)
        if source["status"] not in TERMINAL:
            raise RlmError(
                "CONFLICT",
                f"execution is {source['status']}: a follow-up needs a finished execution",
                {"status": source["status"]},
            )
        if not question.strip():
            raise RlmError("VALIDATION_ERROR", "question must not be empty")
        session = self.storage.metadata.get_session(tenant_id, source["session_id"])
        source_state = self._load_state(source)
        record = self.create(
            tenant_id,
            session,
            mode="ANSWERER",
            question=question,
            models={**source["models"], **{k: v for k, v in models.items() if v}},
            budgets=budgets,
            options=options,
            extra={"followup_of": execution_id},
        )
        turns = history.committed_turns(self.storage, source["execution_id"])
        state = history.followup_state(initial_state(), source, source_state, turns)
        self._save_state(record, 0, canonical_json(state))
        return record


def _has_requests(requests: ToolRequests) -> bool:
    return bool(requests.llm or requests.search or requests.llm_batch or requests.rlm)
