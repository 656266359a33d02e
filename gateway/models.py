"""Pydantic models of the REST API's request and response bodies (docs/api.md#rest-api).

They are the OpenAPI contract: every field the HTTP API accepts or returns is
declared here with its type and bounds. Every bound comes from rlm_rs/limits.py,
the numbers the control plane and the sandbox enforce, so gateway/openapi.json
advertises what is enforced; integers without a policy bound are bounded to
what the gRPC wire can hold (an oversized number is a 422, never a crash).
JSON state fields appear as real JSON values under the spec's names. No
behaviour lives here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlm_rs import limits as lim
from rlm_rs.domain.enums import (
    ExecutionMode,
    ExecutionStatus,
    IngestStatus,
    OutputMode,
    SessionStatus,
    ToolStatus,
)

INT32 = lim.INT32_MAX
# int64 fields accept JSON-safe integers only (2**53 - 1): exact in every client.
INT64 = lim.JSON_SAFE_INT_MAX
Int32 = Field(default=None, ge=0, le=INT32)


def _budget(name: str) -> Any:
    """An optional budget override, at most its ceiling."""
    return Field(default=None, ge=0, le=lim.BUDGET_CEILINGS[name])


def _one_of(values: type[StrEnum], description: str = "", default: Any = ...) -> Any:
    """A string the OpenAPI document lists the values of (the domain's enum).
    Responses are not checked against it: the control plane's value is shown as it is."""
    return Field(default=default, description=description or None, json_schema_extra={"enum": [*values]})


def _model_name() -> Any:
    return Field(default=None, max_length=lim.MAX_MODEL_NAME_CHARS)


def _tool_key() -> Any:
    return Field(min_length=1, max_length=lim.MAX_TOOL_KEY_CHARS)


class _In(BaseModel):
    """A request body: a field the API does not define is refused (422
    VALIDATION_ERROR naming it), never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- errors
class ErrorBody(_Out):
    code: str = Field(description="An error code (docs/api.md#errors), e.g. SESSION_NOT_FOUND")
    message: str
    request_id: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(_Out):
    error: ErrorBody


# ---------------------------------------------------------------- shared
class Models(_In):
    root_model: str | None = _model_name()
    sub_model: str | None = _model_name()


class Budgets(_In):
    max_turns: int | None = _budget("max_turns")
    max_total_seconds: float | None = _budget("max_total_seconds")
    max_step_seconds: float | None = _budget("max_step_seconds")
    max_spans_total: int | None = _budget("max_spans_total")
    max_spans_per_step: int | None = _budget("max_spans_per_step")
    max_tool_requests_per_step: int | None = _budget("max_tool_requests_per_step")
    max_llm_subcalls: int | None = _budget("max_llm_subcalls")
    max_llm_prompt_chars: int | None = _budget("max_llm_prompt_chars")
    max_total_llm_prompt_chars: int | None = _budget("max_total_llm_prompt_chars")
    max_stdout_chars: int | None = _budget("max_stdout_chars")
    max_state_chars: int | None = _budget("max_state_chars")
    max_rlm_subcalls: int | None = _budget("max_rlm_subcalls")
    max_depth: int | None = _budget("max_depth")
    max_cost_usd: float | None = _budget("max_cost_usd")


class SpanRef(BaseModel):
    model_config = ConfigDict(extra="forbid")  # also a request field (citations/verify)

    tenant_id: str = ""
    session_id: str
    doc_id: str
    doc_index: int = Field(ge=0, le=INT32)
    start_char: int = Field(ge=0, le=INT64)
    end_char: int = Field(ge=0, le=INT64)
    checksum: str


class Span(_Out):
    doc_index: int
    start_char: int
    end_char: int
    tag: str | None = Field(default=None, description="null when the read carried no tag")


class ErrorDetail(_Out):
    code: str
    message: str
    details: Any = None


class LlmRequest(_In):
    type: Literal["llm"] | None = None
    key: str = _tool_key()
    prompt: str
    model_hint: str | None = _model_name()
    max_tokens: int | None = Field(default=None, ge=0, le=lim.MAX_SUBCALL_MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=lim.MAX_TEMPERATURE)
    metadata: dict[str, Any] | None = None


class SearchFilters(_In):
    doc_ids: list[str] = Field(default_factory=list)


class SearchRequest(_In):
    type: Literal["search"] | None = None
    key: str = _tool_key()
    query: str = Field(max_length=lim.MAX_SEARCH_QUERY_CHARS)
    k: int | None = Field(default=None, ge=0, le=lim.MAX_SEARCH_K)
    filters: SearchFilters | None = None


class LlmBatchRequest(_In):
    """tool.queue_llm_batch: many prompts under one key, resolved like individual
    sub-calls (each counts against the same budgets); one result list."""

    type: Literal["llm_batch"] | None = None
    key: str = _tool_key()
    prompts: list[str] = Field(min_length=1, max_length=lim.MAX_BATCH_PROMPTS)
    model_hint: str | None = _model_name()
    max_tokens: int | None = Field(default=None, ge=0, le=lim.MAX_SUBCALL_MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=lim.MAX_TEMPERATURE)
    metadata: dict[str, Any] | None = None


class SpanInput(_In):
    doc_index: int = Field(ge=0, le=INT32)
    start_char: int = Field(ge=0, le=INT64)
    end_char: int = Field(ge=0, le=INT64)
    tag: str = Field(default="", max_length=lim.MAX_SPAN_TAG_CHARS)


class RlmRequest(_In):
    """A child execution (tool.queue_rlm) over a sub-corpus: whole documents
    (doc_indices), spans, or (both empty) every document."""

    type: Literal["rlm"] | None = None
    key: str = _tool_key()
    question: str = Field(min_length=1, max_length=lim.MAX_QUESTION_CHARS)
    doc_indices: list[Annotated[int, Field(ge=0, le=INT32)]] = Field(
        default_factory=list, max_length=lim.MAX_RLM_PIECES
    )
    spans: list[SpanInput] = Field(default_factory=list, max_length=lim.MAX_RLM_PIECES)
    budgets: Budgets | None = Field(default=None, description="overrides, capped by what the parent has left")


class ToolRequests(_In):
    llm: list[LlmRequest] = Field(default_factory=list)
    search: list[SearchRequest] = Field(default_factory=list)
    llm_batch: list[LlmBatchRequest] = Field(default_factory=list)
    rlm: list[RlmRequest] = Field(default_factory=list)


class Final(_Out):
    is_final: bool = False
    answer: str | None = Field(default=None, description="null unless is_final")


class BudgetsView(_Out):
    """An execution's budgets as it applies them (every field set)."""

    max_turns: int = 0
    max_total_seconds: float = 0.0
    max_step_seconds: float = 0.0
    max_spans_total: int = 0
    max_spans_per_step: int = 0
    max_tool_requests_per_step: int = 0
    max_llm_subcalls: int = 0
    max_llm_prompt_chars: int = 0
    max_total_llm_prompt_chars: int = 0
    max_stdout_chars: int = 0
    max_state_chars: int = 0
    max_rlm_subcalls: int = 0
    max_depth: int = 0
    max_cost_usd: float = 0.0


class BudgetsConsumed(_Out):
    turns: int = 0
    llm_subcalls: int = 0
    total_seconds: float = 0.0
    spans_total: int = 0
    llm_prompt_chars_total: int = 0
    rlm_subcalls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0


# ---------------------------------------------------------------- sessions
class DocumentInput(_In):
    source_name: str = Field(min_length=1, max_length=lim.MAX_SOURCE_NAME_CHARS)
    mime_type: str = Field(min_length=1, max_length=lim.MAX_MIME_TYPE_CHARS)
    raw_s3_uri: str = Field(min_length=1, max_length=lim.MAX_S3_URI_CHARS)
    raw_s3_version_id: str | None = Field(default=None, max_length=lim.MAX_S3_VERSION_CHARS)
    raw_s3_etag: str | None = Field(default=None, max_length=lim.MAX_S3_VERSION_CHARS)


class SessionOptions(_In):
    enable_search: bool | None = None
    readiness_mode: Literal["STRICT", "LAX"] | None = None


class CreateSessionBody(_In):
    ttl_minutes: int | None = Field(
        default=None, ge=1, le=lim.MAX_TTL_MINUTES, description=f"default {lim.DEFAULT_TTL_MINUTES}"
    )
    docs: list[DocumentInput] = Field(min_length=1, max_length=lim.MAX_DOCS_PER_SESSION)
    options: SessionOptions | None = None
    models_default: Models | None = None
    budgets_default: Budgets | None = None


class CreatedDoc(_Out):
    doc_id: str
    doc_index: int
    ingest_status: str = _one_of(IngestStatus)


class SessionCreated(_Out):
    session_id: str
    status: str = _one_of(SessionStatus, "CREATING")
    created_at: str
    expires_at: str
    docs: list[CreatedDoc]


class Readiness(_Out):
    parsed_ready: bool = False
    search_ready: bool = False
    ready: bool = False


class SessionDoc(_Out):
    doc_id: str
    doc_index: int
    ingest_status: str = _one_of(IngestStatus)
    text_s3_uri: str = ""
    meta_s3_uri: str = ""
    offsets_s3_uri: str = ""
    source_name: str = ""
    mime_type: str = ""
    char_length: int = 0
    page_count: int = 0
    failure_reason: str = ""
    text_checksum: str = ""


class SessionView(_Out):
    session_id: str
    status: str = _one_of(SessionStatus)
    created_at: str = ""
    expires_at: str = ""
    readiness: Readiness | None = None
    docs: list[SessionDoc] = Field(default_factory=list)
    doc_count: int = 0
    total_chars: int = 0


class SessionDeleted(_Out):
    session_id: str = ""
    status: str = _one_of(SessionStatus, "DELETING")


# ---------------------------------------------------------------- executions
class ExecutionOptions(_In):
    return_trace: bool | None = None
    redact_trace: bool | None = None
    synchronous: bool | None = None
    synchronous_timeout_seconds: float | None = Field(
        default=None,
        ge=0,
        le=lim.MAX_SYNCHRONOUS_TIMEOUT_SECONDS,
        description=f"0 or unset: {lim.DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS:g}",
    )
    output_mode: Literal["ANSWER", "CONTEXTS"] | None = None


class StartExecutionBody(_In):
    question: str = Field(min_length=1, max_length=lim.MAX_QUESTION_CHARS)
    models: Models | None = None
    budgets: Budgets | None = None
    options: ExecutionOptions | None = None


class FollowupBody(StartExecutionBody):
    """A follow-up question on a finished execution: a new Answerer execution on
    the same session that starts from its `work` state and a digest of its turns.
    Models not given are the source execution's."""


class CreateRuntimeBody(_In):
    models: Models | None = None
    budgets: Budgets | None = None
    options: ExecutionOptions | None = None


class ContextItem(_Out):
    sequence_index: int
    turn_index: int
    span_index: int
    tag: str = ""
    text: str = ""
    text_char_length: int = 0
    source_name: str = ""
    mime_type: str = ""
    ref: SpanRef | None = None


class ExecutionView(_Out):
    execution_id: str
    session_id: str = ""
    mode: str = _one_of(ExecutionMode)
    output_mode: str = _one_of(OutputMode, default=OutputMode.ANSWER.value)
    status: str = _one_of(ExecutionStatus)
    answer: str | None = None
    citations: list[SpanRef] = Field(default_factory=list)
    contexts: list[ContextItem] | None = None
    contexts_s3_uri: str | None = Field(default=None, description="set when contexts were stored aside")
    budgets_effective: BudgetsView | None = Field(
        default=None, description="Every budget as this execution applies it (docs/api.md#budgets)"
    )
    budgets_consumed: BudgetsConsumed | None = None
    trace_s3_uri: str | None = Field(default=None, description="null until the trace is written")
    started_at: str = ""
    completed_at: str | None = Field(default=None, description="null while RUNNING")
    duration_ms: int = 0
    error: ErrorDetail | None = None
    trace: Any = Field(default=None, description="The trace document when return_trace was set")
    parent_execution_id: str | None = Field(default=None, description="A child's parent (tool.queue_rlm)")
    depth: int = Field(default=0, description="0 for a top-level execution, parent's + 1 for a child")
    children: list[ExecutionView] = Field(
        default_factory=list, description="Child executions (tool.queue_rlm), each with its own children"
    )
    followup_of: str | None = Field(default=None, description="The execution this one is a follow-up of")


class WaitBody(_In):
    timeout_seconds: float = Field(
        default=lim.DEFAULT_WAIT_TIMEOUT_SECONDS, ge=0, le=lim.MAX_WAIT_TIMEOUT_SECONDS
    )


class CancelResult(_Out):
    execution_id: str
    status: str = _one_of(ExecutionStatus)
    completed_at: str | None = None


class StepSummary(_Out):
    byte_length: int = 0
    char_length: int = 0


class ToolRequestsOut(_Out):
    llm: list[dict[str, Any]] = Field(default_factory=list)
    search: list[dict[str, Any]] = Field(default_factory=list)
    llm_batch: list[dict[str, Any]] = Field(default_factory=list)
    rlm: list[dict[str, Any]] = Field(default_factory=list)


class StepRecord(_Out):
    turn_index: int
    updated_at: str = ""
    success: bool
    stdout: str = ""
    state: Any = None
    span_log: list[Span] = Field(default_factory=list)
    tool_requests: ToolRequestsOut | None = None
    final: Final | None = None
    error: ErrorDetail | None = None
    checksum: str = ""
    summary: StepSummary | None = None
    code: str = ""


class StepList(_Out):
    steps: list[StepRecord]
    next_page_token: str = Field(default="", description="set when more steps follow")


class RunStepOptions(_In):
    resolve_tools: bool | None = None


class RunStepBody(_In):
    code: str = Field(min_length=1, max_length=lim.MAX_CODE_CHARS)
    state: dict[str, Any] | None = None
    options: RunStepOptions | None = None


class StepOutput(_Out):
    success: bool
    stdout: str = ""
    stdout_truncated: bool = False
    state: Any = None
    span_log: list[Span] = Field(default_factory=list)
    tool_requests: ToolRequestsOut | None = None
    final: Final | None = None
    error: ErrorDetail | None = None
    turn_index: int = 0
    duration_ms: float = 0.0
    yield_reason: str = ""
    isolation: str = ""


class ResolveToolsBody(_In):
    tool_requests: ToolRequests
    models: Models | None = None


class LlmResult(_Out):
    text: str = ""
    meta: Any = None


class SearchHit(_Out):
    score: float
    doc_index: int
    start_char: int
    end_char: int
    preview: str = ""


class SearchResult(_Out):
    hits: list[SearchHit] = Field(default_factory=list)
    meta: Any = None


class LlmBatchResult(_Out):
    results: list[LlmResult] = Field(default_factory=list)


class RlmResult(_Out):
    text: str = Field(default="", description="The child execution's answer")
    citations: list[SpanRef] = Field(default_factory=list, description="SpanRefs into the session's docs")
    meta: Any = Field(default=None, description="execution_id, status, depth, budgets_consumed, error")


class ToolResults(_Out):
    llm: dict[str, LlmResult] = Field(default_factory=dict)
    search: dict[str, SearchResult] = Field(default_factory=dict)
    llm_batch: dict[str, LlmBatchResult] = Field(default_factory=dict)
    rlm: dict[str, RlmResult] = Field(default_factory=dict)


class ResolveToolsResult(_Out):
    tool_results: ToolResults
    statuses: dict[str, str] = Field(
        description="key -> its outcome", json_schema_extra={"additionalProperties": {"enum": [*ToolStatus]}}
    )


# ---------------------------------------------------------------- spans, citations
class SpanGetBody(_In):
    session_id: str = Field(min_length=1, max_length=lim.MAX_ID_CHARS)
    doc_id: str = Field(min_length=1, max_length=lim.MAX_ID_CHARS)
    start_char: int = Field(ge=0, le=INT64)
    end_char: int = Field(
        ge=0, le=INT64, description=f"end_char - start_char is at most {lim.MAX_SPAN_CHARS:,}"
    )


class SpanText(_Out):
    text: str
    ref: SpanRef


class VerifyBody(_In):
    ref: SpanRef


class CharRange(_Out):
    start_char: int
    end_char: int


class VerifyResult(_Out):
    valid: bool
    text: str = ""
    source_name: str = ""
    char_range: CharRange | None = None


# ---------------------------------------------------------------- health
class Live(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: str = Field(description="ok when the control plane and its components serve")
    components: dict[str, str] = Field(
        description="component -> SERVING|NOT_SERVING|UNKNOWN; sandbox NOT_HARDENED when the control "
        "plane runs steps in its own process (development mode)"
    )


# ---------------------------------------------------------------- uploads and listings
class UploadView(_Out):
    upload_id: str = Field(description="upl_ + 24 hex digits")
    raw_s3_uri: str = Field(description="name it as a document's raw_s3_uri in POST /v1/sessions")
    file_name: str = Field(description="the stored name (reduced to a safe base name)")
    content_type: str = Field(description="the MIME type, without parameters")
    size_bytes: int
    sha256: str = Field(description="hex SHA-256 of the stored bytes")
    created_at: str


class SessionList(_Out):
    sessions: list[SessionView]
    next_page_token: str = Field(default="", description="set when more sessions may follow")


class ExecutionList(_Out):
    executions: list[ExecutionView] = Field(description="without contexts, trace and children")
    next_page_token: str = Field(default="", description="set when more executions may follow")
