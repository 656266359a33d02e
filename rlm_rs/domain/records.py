"""The shapes of the records the metadata store returns, as the control
plane reads them (TypedDicts over the stored JSON: no conversion, no copy).

Statuses and modes hold their enum's value (enums.py). Fields a record may
lack (written later, or only for some records) are NotRequired; the store's
own keys (PK, SK, GSI*, version) are left out except `version`, which
conditional writes use. Declaring a field here never makes storage write it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from rlm_rs.domain.budgets import Budgets, Consumed


class ErrorRecord(TypedDict):
    code: str
    message: str
    details: dict[str, Any]


class Piece(TypedDict):
    """One document of a child's sub-corpus, as a piece of a session document."""

    doc_index: int
    start_char: int
    end_char: int
    whole: bool


class ExecutionRecord(TypedDict):
    tenant_id: str
    session_id: str
    execution_id: str
    status: str  # ExecutionStatus
    mode: str  # ExecutionMode
    output_mode: str  # OutputMode
    question: str
    answer: str | None
    citations: list[dict[str, Any]]  # SpanRefs
    models: dict[str, str]  # root_model, sub_model
    options: dict[str, Any]  # ExecutionOptions, as its JSON
    budgets_requested: Budgets
    budgets_consumed: Consumed
    next_turn: int
    started_at: str
    started_epoch: float
    completed_at: str | None
    duration_ms: int | None
    trace_s3_uri: str | None
    error: ErrorRecord | None
    ttl_epoch: int | None
    parent_execution_id: str | None
    depth: int
    children: list[str]  # child execution ids, in the order they started
    followup_of: str | None
    version: NotRequired[int]
    corpus: NotRequired[list[Piece] | None]  # a child's sub-corpus
    contexts: NotRequired[list[dict[str, Any]] | None]  # CONTEXTS mode, inline
    contexts_s3_uri: NotRequired[str | None]
    trace_json: NotRequired[str | None]  # return_trace
    lease_owner: NotRequired[str]
    lease_until: NotRequired[float]
    lease_token: NotRequired[int]


class SessionRecord(TypedDict):
    tenant_id: str
    session_id: str
    status: str  # SessionStatus
    created_at: str
    expires_at: str
    ttl_epoch: int
    doc_count: int
    total_chars: int
    options: dict[str, Any]  # enable_search, readiness_mode
    defaults: dict[str, Any]  # models_default, budgets_default
    version: NotRequired[int]
    search_index: NotRequired[dict[str, Any]]  # storage/search.py ArtifactRef.record()


class DocumentRecord(TypedDict):
    tenant_id: str
    session_id: str
    doc_id: str
    doc_index: int
    source_name: str
    mime_type: str
    raw_s3_uri: str
    ingest_status: str  # IngestStatus
    ttl_epoch: int | None
    raw_s3_version_id: NotRequired[str | None]
    raw_s3_etag: NotRequired[str | None]
    text_s3_uri: NotRequired[str]
    meta_s3_uri: NotRequired[str | None]
    offsets_s3_uri: NotRequired[str]
    char_length: NotRequired[int]
    byte_length: NotRequired[int]
    page_count: NotRequired[int]
    text_checksum: NotRequired[str]
    failure_reason: NotRequired[str | None]
    search_version: NotRequired[int]  # the session index version that first held it


class StepRecord(TypedDict):
    """execution_state `STEP#<turn>`: one committed turn."""

    execution_id: str
    turn_index: int
    checksum: str
    updated_at: str
    summary: dict[str, int]  # byte_length, char_length of the state
    state_json: str | None  # inline, else state_s3_uri
    state_s3_uri: str | None
    success: bool
    stdout: str
    span_log: list[dict[str, Any]]  # doc_index, start_char, end_char, tag
    tool_requests: dict[str, Any]
    final: dict[str, Any] | None
    error: dict[str, Any] | None
    trace: dict[str, Any]  # the turn as the trace shows it


class EventRecord(TypedDict):
    """execution_state `EVENT#<event_id>`, as WatchExecution streams it."""

    event_id: str
    execution_id: str
    type: str  # EventType
    turn_index: int
    at: str
    data_json: str
