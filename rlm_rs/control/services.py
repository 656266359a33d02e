"""ExecutionService and CitationService servicers: request validation and
message conversion around the ExecutionEngine (rlm_rs/control/executions/).
Every look-up is by the caller's tenant; another tenant's ids look exactly like missing ones.
Waits, watches and synchronous starts hold a server thread: admission.py
caps them, and they end early when the caller goes away.
Every call on an execution also checks its session, before and after: once
the session is deleted or expired, every read answers SESSION_NOT_FOUND or
SESSION_EXPIRED, a call in flight included (`_session_live`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
from google.protobuf.message import Message

from rlm_rs import codec, wire_enums
from rlm_rs.citations import make_ref, verify_ref
from rlm_rs.control import listings
from rlm_rs.control._rpc import Caller, current_caller
from rlm_rs.control.budgets import budgets_from_dict, budgets_to_dict
from rlm_rs.control.executions import ExecutionEngine
from rlm_rs.control.sessions import load_session
from rlm_rs.control.validation import check_models, check_tool_requests
from rlm_rs.domain import (
    TERMINAL_STATUSES,
    DocumentRecord,
    ExecutionMode,
    ExecutionRecord,
    OutputMode,
    SessionStatus,
    StepRecord,
)
from rlm_rs.errors import NotFound, RlmError
from rlm_rs.limits import (
    DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS,
    DEFAULT_WAIT_TIMEOUT_SECONDS,
    EVENT_ID_PATTERN,
    MAX_CODE_CHARS,
    MAX_PAGE_TOKEN_CHARS,
    MAX_QUESTION_CHARS,
    MAX_SPAN_CHARS,
    MAX_STEPS_PAGE_SIZE,
    MAX_SYNCHRONOUS_TIMEOUT_SECONDS,
    MAX_WAIT_TIMEOUT_SECONDS,
)
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.storage import Storage
from rlm_rs.storage.state import read_state_record
from rlm_rs.v1 import citation_pb2, citation_pb2_grpc, execution_pb2, execution_pb2_grpc
from rlm_rs.v1.common_pb2 import (
    LlmResult,
    Models,
    RlmResult,
    SearchHit,
    SearchResult,
    Span,
    SpanRef,
    ToolRequests,
)

LIST_STEPS_BYTES = 32 * 1024 * 1024  # a ListSteps page; the server sends at most 64 MiB
EVENT_ID = re.compile(EVENT_ID_PATTERN)
# Initial metadata sent once a watch is accepted (auth, id and tenant checked):
# the gateway waits for it before it answers 200 with an event stream.
WATCH_STARTED = "x-rlm-watch"

Children = Callable[[ExecutionRecord], list[ExecutionRecord]]


def execution_message(record: ExecutionRecord, children: Children | None = None) -> execution_pb2.Execution:
    """The Execution message of a record; with `children` (engine.children),
    its sub-executions as a tree."""
    message = execution_pb2.Execution(
        execution_id=record["execution_id"],
        session_id=record["session_id"],
        tenant_id=record["tenant_id"],
        mode=wire_enums.EXECUTION_MODE.to_proto(record["mode"]),
        output_mode=wire_enums.OUTPUT_MODE.to_proto(record.get("output_mode") or OutputMode.ANSWER),
        status=wire_enums.EXECUTION_STATUS.to_proto(record["status"]),
        question=record.get("question") or "",
        contexts_s3_uri=record.get("contexts_s3_uri") or "",
        trace_s3_uri=record.get("trace_s3_uri") or "",
        started_at=record.get("started_at") or "",
        completed_at=record.get("completed_at") or "",
        duration_ms=int(record.get("duration_ms") or 0),
        models=Models(**(record.get("models") or {})),
        trace_json=record.get("trace_json") or "",
        parent_execution_id=record.get("parent_execution_id") or "",
        depth=int(record.get("depth") or 0),
        followup_of=record.get("followup_of") or "",
    )
    if children is not None:
        message.children.extend(execution_message(child, children) for child in children(record))
    answer = record.get("answer")
    if answer is not None:
        message.answer = answer
    for ref in record.get("citations") or []:
        codec.from_json(message.citations.add(), ref)
    for item in record.get("contexts") or []:
        codec.from_json(message.contexts.add(), item)
    message.budgets_requested.CopyFrom(budgets_from_dict(record.get("budgets_requested") or {}))
    message.budgets_effective.CopyFrom(message.budgets_requested)  # merged and within the ceilings
    codec.from_json(message.budgets_consumed, record.get("budgets_consumed") or {})
    error = record.get("error")
    if error:
        codec.from_json(message.error, dict(error) | {"details": error.get("details") or {}})
    return message


def step_message(item: StepRecord) -> execution_pb2.StepRecord:
    record = execution_pb2.StepRecord(
        turn_index=int(item["turn_index"]),
        updated_at=item.get("updated_at") or "",
        success=bool(item.get("success")),
        stdout=item.get("stdout") or "",
        state_json=item["state_json"] or "",
        checksum=item.get("checksum") or "",
        code=(item.get("trace") or {}).get("code") or "",
        summary=execution_pb2.StepSummary(**(item.get("summary") or {})),
    )
    record.span_log.extend(Span(**s) for s in item.get("span_log") or [])
    codec.from_json(record.tool_requests, item.get("tool_requests") or {})
    final, error = item.get("final"), item.get("error")
    if final:
        codec.from_json(record.final, final)
    if error:
        codec.from_json(record.error, error)
    return record


def public_step(result: StepResult) -> execution_pb2.RunStepResponse:
    """The caller's view of a step: RunStepResponse's fields copied from the
    sandbox's StepResult by name (never a field the public message lacks)."""
    response = execution_pb2.RunStepResponse()
    source: Message = result  # fields by name
    for field in response.DESCRIPTOR.fields:
        name = field.name
        if field.is_repeated:
            getattr(response, name).extend(getattr(source, name))
        elif field.type == field.TYPE_MESSAGE:
            if source.HasField(name):
                getattr(response, name).CopyFrom(getattr(source, name))
        else:
            setattr(response, name, getattr(source, name))
    return response


def _options(request_options: execution_pb2.ExecutionOptions) -> dict[str, Any]:
    options = {k: v for k, v in codec.to_json(request_options).items() if v}
    timeout = float(options.get("synchronous_timeout_seconds") or 0)
    if not 0 <= timeout <= MAX_SYNCHRONOUS_TIMEOUT_SECONDS:  # NaN fails too
        raise RlmError(
            "VALIDATION_ERROR",
            f"options.synchronous_timeout_seconds must be 0..{MAX_SYNCHRONOUS_TIMEOUT_SECONDS:g}",
        )
    return options


def _models(models: Models) -> dict[str, str]:
    """The models a caller named (unnamed ones left out: the session's default applies)."""
    return {k: v for k, v in codec.to_json(models).items() if v}


def _question(text: str) -> str:
    question = text.strip()
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise RlmError("VALIDATION_ERROR", f"question must be 1..{MAX_QUESTION_CHARS} characters")
    return question


def _session_live(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a handler of a request with `execution_id`: the execution's
    session must be live before the call and when its answer is ready (a
    delete or expiry during the call wins over the answer or its error)."""

    @functools.wraps(handler)
    def checked(self: ExecutionServicer, request: Any, context: Any) -> Any:
        caller = current_caller()
        session_id = self.engine.get(caller.tenant_id, request.execution_id)["session_id"]
        load_session(self.storage, caller.tenant_id, session_id)
        try:
            reply = handler(self, request, context)
        except RlmError:
            load_session(self.storage, caller.tenant_id, session_id)
            raise
        load_session(self.storage, caller.tenant_id, session_id)
        return reply

    return checked


class ExecutionServicer(execution_pb2_grpc.ExecutionServiceServicer):
    """Every method runs behind `CallGuard` (server.py); StartExecution,
    CreateRuntimeExecution, WatchExecution and ListExecutions load the
    session themselves, the others are `_session_live`."""

    def __init__(self, engine: ExecutionEngine, storage: Storage) -> None:
        self.engine = engine
        self.storage = storage

    def ListExecutions(
        self, request: execution_pb2.ListExecutionsRequest, context: grpc.ServicerContext
    ) -> execution_pb2.ListExecutionsResponse:
        """The caller's top-level executions newest first, optionally of one
        session (SESSION_NOT_FOUND unless it is the caller's and not deleted)
        and in one status; executions of deleted sessions are left out."""
        caller = current_caller()
        size = listings.page_size(request.page_size)
        status = listings.status_filter(request.status, wire_enums.EXECUTION_STATUS)
        if request.session_id:
            session = self.storage.metadata.get_session(caller.tenant_id, request.session_id)
            if session["status"] == SessionStatus.DELETING:
                raise RlmError("SESSION_NOT_FOUND", "session not found", {"session_id": request.session_id})
        filters = {"session_id": request.session_id, "status": status}
        records, last = self.storage.metadata.list_executions_page(
            caller.tenant_id,
            limit=size,
            after=listings.decode_cursor(request.page_token, filters),
            session_id=request.session_id,
            status=status,
        )
        live: dict[str, bool] = {}
        response = execution_pb2.ListExecutionsResponse(next_page_token=listings.encode_cursor(last, filters))
        for record in records:
            session_id = record["session_id"]
            if session_id not in live:
                try:
                    found = self.storage.metadata.get_session(caller.tenant_id, session_id)
                    live[session_id] = found["status"] != SessionStatus.DELETING
                except NotFound:
                    live[session_id] = False
            if live[session_id]:
                listed = {k: v for k, v in record.items() if k not in ("contexts", "trace_json")}
                response.executions.append(execution_message(cast(ExecutionRecord, listed)))
        return response

    def _message(self, record: ExecutionRecord) -> execution_pb2.Execution:
        return execution_message(record, self.engine.children)

    def _run(
        self,
        caller: Caller,
        record: ExecutionRecord,
        options: execution_pb2.ExecutionOptions,
        context: grpc.ServicerContext,
    ) -> execution_pb2.Execution:
        """Start an Answerer record; a synchronous request waits for it."""
        self.engine.start(record)
        if options.synchronous:
            timeout = options.synchronous_timeout_seconds or DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS
            record = self._wait(caller, record["execution_id"], timeout, context)
        return self._message(record)

    def _wait(
        self, caller: Caller, execution_id: str, timeout: float, context: grpc.ServicerContext
    ) -> ExecutionRecord:
        """engine.wait in one-second slices that stop when the caller went away,
        so an abandoned wait gives its thread and its long-call slot back."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            record = self.engine.wait(caller.tenant_id, execution_id, min(left, 1.0))
            if record["status"] in TERMINAL_STATUSES or left <= 1.0 or not context.is_active():
                return record

    def _create(
        self, caller: Caller, session_id: str, mode: ExecutionMode, question: str, request: Any
    ) -> ExecutionRecord:
        session = load_session(self.storage, caller.tenant_id, session_id)
        check_models(request.models)
        models = _models(request.models)
        return self.engine.create(
            caller.tenant_id,
            session,
            mode=mode,
            question=question,
            models=models,
            budgets=budgets_to_dict(request.budgets),
            options=_options(request.options),
        )

    def StartExecution(
        self, request: execution_pb2.StartExecutionRequest, context: grpc.ServicerContext
    ) -> execution_pb2.Execution:
        caller = current_caller()
        question = _question(request.question)
        record = self._create(caller, request.session_id, ExecutionMode.ANSWERER, question, request)
        return self._run(caller, record, request.options, context)

    @_session_live
    def StartFollowup(
        self, request: execution_pb2.StartFollowupRequest, context: grpc.ServicerContext
    ) -> execution_pb2.Execution:
        caller = current_caller()
        question = _question(request.question)
        check_models(request.models)
        record = self.engine.followup(
            caller.tenant_id,
            request.execution_id,
            question=question,
            models=_models(request.models),
            budgets=budgets_to_dict(request.budgets),
            options=_options(request.options),
        )
        return self._run(caller, record, request.options, context)

    def WatchExecution(
        self, request: execution_pb2.WatchExecutionRequest, context: grpc.ServicerContext
    ) -> Iterator[execution_pb2.ExecutionEvent]:
        caller = current_caller()
        after = request.after_event_id
        if after and not EVENT_ID.fullmatch(after):
            raise RlmError("VALIDATION_ERROR", "after_event_id must be empty or an event id like 000003.0002")
        execution = self.engine.get(caller.tenant_id, request.execution_id)  # NOT_FOUND before the stream
        load_session(self.storage, caller.tenant_id, execution["session_id"])
        context.send_initial_metadata(((WATCH_STARTED, "1"),))
        events = self.engine.watch(
            caller.tenant_id, request.execution_id, after, stop=lambda: not context.is_active()
        )
        for event in events:
            yield execution_pb2.ExecutionEvent(
                event_id=event["event_id"],
                execution_id=event["execution_id"],
                type=wire_enums.EVENT_TYPE.to_proto(event["type"]),
                turn_index=int(event["turn_index"]),
                at=event["at"],
                data_json=event["data_json"],
            )

    @_session_live
    def GetExecution(
        self, request: execution_pb2.GetExecutionRequest, context: grpc.ServicerContext
    ) -> execution_pb2.Execution:
        caller = current_caller()
        return self._message(self.engine.get(caller.tenant_id, request.execution_id))

    @_session_live
    def WaitExecution(
        self, request: execution_pb2.WaitExecutionRequest, context: grpc.ServicerContext
    ) -> execution_pb2.Execution:
        caller = current_caller()
        if not 0 <= request.timeout_seconds <= MAX_WAIT_TIMEOUT_SECONDS:
            raise RlmError("VALIDATION_ERROR", f"timeout_seconds must be 0..{MAX_WAIT_TIMEOUT_SECONDS:g}")
        timeout = request.timeout_seconds or DEFAULT_WAIT_TIMEOUT_SECONDS
        record = self._wait(caller, request.execution_id, timeout, context)
        return self._message(record)

    @_session_live
    def CancelExecution(
        self, request: execution_pb2.CancelExecutionRequest, context: grpc.ServicerContext
    ) -> execution_pb2.CancelExecutionResponse:
        caller = current_caller()
        record = self.engine.cancel(caller.tenant_id, request.execution_id)
        return execution_pb2.CancelExecutionResponse(
            execution_id=record["execution_id"],
            status=wire_enums.EXECUTION_STATUS.to_proto(record["status"]),
            completed_at=record.get("completed_at") or "",
        )

    @_session_live
    def ListSteps(
        self, request: execution_pb2.ListStepsRequest, context: grpc.ServicerContext
    ) -> execution_pb2.ListStepsResponse:
        """A page of steps: page_size of them at most, and never more than
        LIST_STEPS_BYTES (one step always, whatever its size); next_page_token
        is the turn index the next page starts at."""
        caller = current_caller()
        if not 0 <= request.page_size <= MAX_STEPS_PAGE_SIZE:
            raise RlmError(
                "VALIDATION_ERROR", f"page_size must be 0..{MAX_STEPS_PAGE_SIZE} (0: as many as fit)"
            )
        token = request.page_token
        if token and not (token.isascii() and token.isdigit() and len(token) <= MAX_PAGE_TOKEN_CHARS):
            raise RlmError("VALIDATION_ERROR", "page_token is not one this service issued")
        execution = self.engine.get(caller.tenant_id, request.execution_id)
        start = int(token) if token else 0
        items = [i for i in self.engine.steps(execution, with_state=False) if int(i["turn_index"]) >= start]
        response = execution_pb2.ListStepsResponse()
        size = 0
        for index, item in enumerate(items):
            if request.page_size and index == request.page_size:
                response.next_page_token = str(int(item["turn_index"]))
                break
            item["state_json"] = read_state_record(self.storage.blobs, dict(item))
            message = step_message(item)
            size += message.ByteSize() + 8
            if index and size > LIST_STEPS_BYTES:
                response.next_page_token = str(int(item["turn_index"]))
                break
            response.steps.append(message)
        return response

    def CreateRuntimeExecution(
        self,
        request: execution_pb2.CreateRuntimeExecutionRequest,
        context: grpc.ServicerContext,
    ) -> execution_pb2.Execution:
        caller = current_caller()
        return self._message(self._create(caller, request.session_id, ExecutionMode.RUNTIME, "", request))

    @_session_live
    def RunStep(
        self, request: execution_pb2.RunStepRequest, context: grpc.ServicerContext
    ) -> execution_pb2.RunStepResponse:
        caller = current_caller()
        if not request.code.strip() or len(request.code) > MAX_CODE_CHARS:
            raise RlmError("VALIDATION_ERROR", f"code must be 1..{MAX_CODE_CHARS} characters")
        state = request.state_json if request.HasField("state_json") else None
        result = self.engine.runtime_step(
            caller.tenant_id, request.execution_id, request.code, state, request.options.resolve_tools
        )
        return public_step(result)

    @_session_live
    def ResolveTools(
        self, request: execution_pb2.ResolveToolsRequest, context: grpc.ServicerContext
    ) -> execution_pb2.ResolveToolsResponse:
        caller = current_caller()
        requests = ToolRequests()
        requests.CopyFrom(request.tool_requests)
        check_tool_requests(requests)
        check_models(request.models)
        resolution = self.engine.resolve_tools(
            caller.tenant_id, request.execution_id, requests, request.models.sub_model
        )
        response = execution_pb2.ResolveToolsResponse(
            statuses={
                key: wire_enums.TOOL_STATUS.to_proto(value) for key, value in resolution.statuses.items()
            }
        )
        for key, value in resolution.llm.items():
            response.tool_results.llm[key].CopyFrom(
                LlmResult(text=value["text"], meta_json=json.dumps(value["meta"], sort_keys=True))
            )
        for key, value in resolution.llm_batch.items():
            response.tool_results.llm_batch[key].results.extend(
                LlmResult(text=r["text"], meta_json=json.dumps(r["meta"], sort_keys=True))
                for r in value["results"]
            )
        for key, value in resolution.rlm.items():
            response.tool_results.rlm[key].CopyFrom(
                RlmResult(
                    text=value["text"],
                    citations=[codec.parse(SpanRef, ref) for ref in value["citations"]],
                    meta_json=json.dumps(value["meta"], sort_keys=True),
                )
            )
        for key, value in resolution.search.items():
            response.tool_results.search[key].CopyFrom(
                SearchResult(
                    hits=[SearchHit(**h) for h in value["hits"]],
                    meta_json=json.dumps(value["meta"], sort_keys=True),
                )
            )
        return response


class CitationServicer(citation_pb2_grpc.CitationServiceServicer):
    def __init__(self, engine: ExecutionEngine, storage: Storage) -> None:
        self.engine = engine
        self.storage = storage

    def _document(self, caller: Caller, session_id: str, doc_id: str) -> DocumentRecord:
        load_session(self.storage, caller.tenant_id, session_id)
        doc = self.storage.metadata.get_document(session_id, doc_id) if doc_id else None
        if doc is None:
            raise RlmError("VALIDATION_ERROR", "no such document in this session", {"doc_id": doc_id})
        return doc

    def GetSpan(
        self, request: citation_pb2.GetSpanRequest, context: grpc.ServicerContext
    ) -> citation_pb2.GetSpanResponse:
        caller = current_caller()
        doc = self._document(caller, request.session_id, request.doc_id)
        text = self.engine.docs.text(doc)
        if not 0 <= request.start_char <= request.end_char <= len(text):
            raise RlmError(
                "VALIDATION_ERROR",
                f"need 0 <= start_char <= end_char <= {len(text)}",
                {"char_length": len(text)},
            )
        if request.end_char - request.start_char > MAX_SPAN_CHARS:
            raise RlmError("VALIDATION_ERROR", f"a span is at most {MAX_SPAN_CHARS:,} characters")
        from rlm_rs.citations import CitedDocument

        ref = make_ref(
            caller.tenant_id,
            request.session_id,
            int(doc["doc_index"]),
            CitedDocument(doc["doc_id"], text),
            request.start_char,
            request.end_char,
        )
        return citation_pb2.GetSpanResponse(text=text.slice(request.start_char, request.end_char), ref=ref)

    def VerifyCitation(
        self, request: citation_pb2.VerifyCitationRequest, context: grpc.ServicerContext
    ) -> citation_pb2.VerifyCitationResponse:
        caller = current_caller()
        ref = request.ref
        if ref.tenant_id and ref.tenant_id != caller.tenant_id:
            raise RlmError("SESSION_NOT_FOUND", "session not found", {"session_id": ref.session_id})
        doc = self._document(caller, ref.session_id, ref.doc_id)
        valid, text = verify_ref(ref, self.engine.docs.text(doc))
        valid = valid and int(doc["doc_index"]) == ref.doc_index
        if len(text) > MAX_SPAN_CHARS:
            text = ""  # as GetSpan: never more than MAX_SPAN_CHARS in one answer
        return citation_pb2.VerifyCitationResponse(
            valid=valid,
            text=text,
            source_name=doc.get("source_name") or "",
            char_range=citation_pb2.CharRange(start_char=ref.start_char, end_char=ref.end_char),
        )
