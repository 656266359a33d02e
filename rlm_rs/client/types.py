"""Typed results of rlm_rs.client: frozen dataclasses built from the API's JSON.

Both transports hand these parsers the REST shape (docs/api.md): the gRPC
transport first turns each reply message into that same JSON. Parsers are
lenient in one direction only: an unset value arrives as `""` today and as
`null` once the REST JSON follows the specification, and both become `None`
here; a field a server adds later is ignored, never an error. Nothing here
performs I/O (the handles with methods, `Session` and `AsyncSession`, live in
`_sync.py` / `_async.py` and subclass `SessionInfo`).
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rlm_rs.client.errors import StepFailedError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Execution statuses after which nothing changes (docs/api.md#statuses).
FINISHED_STATUSES = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED"}
)
# Session statuses that will never become READY.
SESSION_DEAD_STATUSES = frozenset({"FAILED", "EXPIRED", "DELETING"})
# Documents whose parsing is done (successfully).
_DOC_DONE = frozenset({"PARSED", "INDEXING", "INDEXED"})

# Extensions the appliance parses, for documents given by URI alone.
MIME_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

Json = dict[str, Any]


def _opt(value: Any) -> str | None:
    """An optional string: "" and null are both unset."""
    return None if value is None or value == "" else str(value)


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _float(value: Any) -> float:
    return float(value) if value not in (None, "") else 0.0


def _time(value: Any) -> datetime | None:
    """RFC 3339 UTC (`...Z`) -> an aware datetime; unset -> None."""
    text = _opt(value)
    return datetime.fromisoformat(text) if text else None


def _obj(value: Any) -> Json:
    return dict(value) if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _meta(value: Any) -> Any:
    """A free-form JSON value (meta, details, state) as the server sent it."""
    return value


_Scalars = TypeVar("_Scalars", bound="DataclassInstance")

# How a field's annotation reads a JSON value (used by _from_scalars).
_READERS = {"str": _str, "int": _int, "float": _float, "str | None": _opt}


def _from_scalars(cls: type[_Scalars], data: Any) -> _Scalars:
    """A dataclass whose fields are all scalars, each read by its annotation."""
    data = _obj(data)
    return cls(**{f.name: _READERS[str(f.type)](data.get(f.name)) for f in fields(cls)})


# ---------------------------------------------------------------- shared pieces
@dataclass(frozen=True)
class SpanRef:
    """A verifiable citation: a range of a document's canonical text and its checksum."""

    session_id: str
    doc_id: str
    doc_index: int
    start_char: int
    end_char: int
    checksum: str
    tenant_id: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpanRef:
        return _from_scalars(cls, data)

    def to_json(self) -> Json:
        out: Json = {
            "session_id": self.session_id,
            "doc_id": self.doc_id,
            "doc_index": self.doc_index,
            "start_char": self.start_char,
            "end_char": self.end_char,
            "checksum": self.checksum,
        }
        if self.tenant_id:
            out["tenant_id"] = self.tenant_id
        return out


@dataclass(frozen=True)
class Span:
    """One entry of a step's span log: text the step's code read."""

    doc_index: int
    start_char: int
    end_char: int
    tag: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Span:
        return _from_scalars(cls, data)

    def to_json(self) -> Json:
        out: Json = {"doc_index": self.doc_index, "start_char": self.start_char, "end_char": self.end_char}
        if self.tag:
            out["tag"] = self.tag
        return out


@dataclass(frozen=True)
class ErrorDetail:
    """Why an execution or a step ended badly: a spec code, a message, details."""

    code: str
    message: str
    details: Any = None

    @classmethod
    def parse(cls, data: Any) -> ErrorDetail | None:
        if not isinstance(data, Mapping) or not data.get("code"):
            return None
        details = data.get("details")
        if isinstance(details, str):  # not yet decoded (a gRPC details_json the server left as text)
            with contextlib.suppress(ValueError):
                details = json.loads(details) if details else None
        return cls(code=_str(data.get("code")), message=_str(data.get("message")), details=details)


@dataclass(frozen=True)
class BudgetsConsumed:
    """What an execution has used so far."""

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

    @classmethod
    def from_json(cls, data: Any) -> BudgetsConsumed:
        return _from_scalars(cls, data)


# ---------------------------------------------------------------- sessions
@dataclass(frozen=True)
class DocumentInput:
    """A document for a new session: an uploaded raw file and how to parse it.

    `DocumentInput.from_uri(uri)` names it after the URI's last part and picks
    the MIME type from its extension (the appliance's upload keeps the file name).
    """

    source_name: str
    mime_type: str
    raw_s3_uri: str
    raw_s3_version_id: str | None = None
    raw_s3_etag: str | None = None

    @classmethod
    def from_uri(
        cls, uri: str, source_name: str | None = None, mime_type: str | None = None
    ) -> DocumentInput:
        name = source_name or posixpath.basename(uri.rstrip("/")) or uri
        if mime_type is None:
            ext = posixpath.splitext(name)[1].lower()
            mime_type = MIME_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "text/plain"
        return cls(source_name=name, mime_type=mime_type, raw_s3_uri=uri)

    @classmethod
    def coerce(cls, value: DocumentInput | str | Mapping[str, Any]) -> DocumentInput:
        if isinstance(value, DocumentInput):
            return value
        if isinstance(value, str):
            return cls.from_uri(value)
        data = dict(value)
        uri = _str(data.get("raw_s3_uri"))
        base = cls.from_uri(uri, data.get("source_name"), data.get("mime_type"))
        return cls(
            base.source_name,
            base.mime_type,
            uri,
            _opt(data.get("raw_s3_version_id")),
            _opt(data.get("raw_s3_etag")),
        )

    def to_json(self) -> Json:
        out: Json = {
            "source_name": self.source_name,
            "mime_type": self.mime_type,
            "raw_s3_uri": self.raw_s3_uri,
        }
        if self.raw_s3_version_id:
            out["raw_s3_version_id"] = self.raw_s3_version_id
        if self.raw_s3_etag:
            out["raw_s3_etag"] = self.raw_s3_etag
        return out


@dataclass(frozen=True)
class Document:
    """A session's document and its ingestion status."""

    doc_id: str
    doc_index: int
    ingest_status: str
    source_name: str = ""
    mime_type: str = ""
    char_length: int = 0
    page_count: int = 0
    failure_reason: str | None = None
    text_checksum: str | None = None
    text_s3_uri: str | None = None
    meta_s3_uri: str | None = None
    offsets_s3_uri: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Document:
        return cls(
            doc_id=_str(data.get("doc_id")),
            doc_index=_int(data.get("doc_index")),
            ingest_status=_str(data.get("ingest_status")),
            source_name=_str(data.get("source_name")),
            mime_type=_str(data.get("mime_type")),
            char_length=_int(data.get("char_length")),
            page_count=_int(data.get("page_count")),
            failure_reason=_opt(data.get("failure_reason")),
            text_checksum=_opt(data.get("text_checksum")),
            text_s3_uri=_opt(data.get("text_s3_uri")),
            meta_s3_uri=_opt(data.get("meta_s3_uri")),
            offsets_s3_uri=_opt(data.get("offsets_s3_uri")),
        )

    @property
    def parsed(self) -> bool:
        return self.ingest_status in _DOC_DONE


@dataclass(frozen=True)
class Readiness:
    parsed_ready: bool = False
    search_ready: bool = False
    ready: bool = False

    @classmethod
    def from_json(cls, data: Any) -> Readiness:
        data = _obj(data)
        return cls(
            parsed_ready=bool(data.get("parsed_ready")),
            search_ready=bool(data.get("search_ready")),
            ready=bool(data.get("ready")),
        )


@dataclass(frozen=True)
class SessionInfo:
    """A session: a corpus of documents with a TTL.

    `tenant_id`, `options`, `models_default` and `budgets_default` are filled
    by the gRPC transport only (the REST view leaves them out).
    """

    session_id: str
    status: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    readiness: Readiness = field(default_factory=Readiness)
    docs: tuple[Document, ...] = ()
    doc_count: int = 0
    total_chars: int = 0
    tenant_id: str | None = None
    options: Json | None = None
    models_default: Json | None = None
    budgets_default: Json | None = None

    @classmethod
    def fields_from_json(cls, data: Mapping[str, Any]) -> Json:
        docs = tuple(Document.from_json(d) for d in _list(data.get("docs")))
        return {
            "session_id": _str(data.get("session_id")),
            "status": _str(data.get("status")),
            "created_at": _time(data.get("created_at")),
            "expires_at": _time(data.get("expires_at")),
            "readiness": Readiness.from_json(data.get("readiness")),
            "docs": docs,
            "doc_count": _int(data.get("doc_count")) or len(docs),
            "total_chars": _int(data.get("total_chars")),
            "tenant_id": _opt(data.get("tenant_id")),
            "options": _obj(data["options"]) if isinstance(data.get("options"), Mapping) else None,
            "models_default": (
                _obj(data["models_default"]) if isinstance(data.get("models_default"), Mapping) else None
            ),
            "budgets_default": (
                {k: v for k, v in data["budgets_default"].items() if v is not None}
                if isinstance(data.get("budgets_default"), Mapping)
                else None
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionInfo:
        return cls(**cls.fields_from_json(data))

    @property
    def ready(self) -> bool:
        return self.status == "READY"

    @property
    def ingest_progress(self) -> tuple[int, int]:
        """(documents parsed, documents in the session)."""
        return sum(d.parsed for d in self.docs), len(self.docs)


# ---------------------------------------------------------------- executions
@dataclass(frozen=True)
class ContextItem:
    """One span a CONTEXTS-mode execution marked (docs/api.md#contexts-output-mode)."""

    sequence_index: int
    turn_index: int
    span_index: int
    tag: str
    text: str
    text_char_length: int
    source_name: str
    mime_type: str
    ref: SpanRef | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContextItem:
        ref = data.get("ref")
        return cls(
            sequence_index=_int(data.get("sequence_index")),
            turn_index=_int(data.get("turn_index")),
            span_index=_int(data.get("span_index")),
            tag=_str(data.get("tag")),
            text=_str(data.get("text")),
            text_char_length=_int(data.get("text_char_length")),
            source_name=_str(data.get("source_name")),
            mime_type=_str(data.get("mime_type")),
            ref=SpanRef.from_json(ref) if isinstance(ref, Mapping) else None,
        )


@dataclass(frozen=True)
class Execution:
    """An Answerer or runtime execution and, once it ended, its outcome.

    `question`, `tenant_id`, `models` and `budgets_requested` are filled by the
    gRPC transport only (the REST view leaves them out).
    """

    execution_id: str
    status: str
    session_id: str = ""
    mode: str = ""
    output_mode: str = ""
    answer: str | None = None
    citations: tuple[SpanRef, ...] = ()
    contexts: tuple[ContextItem, ...] = ()
    contexts_s3_uri: str | None = None
    budgets_consumed: BudgetsConsumed = field(default_factory=BudgetsConsumed)
    trace_s3_uri: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int = 0
    error: ErrorDetail | None = None
    trace: Any = None
    parent_execution_id: str | None = None
    depth: int = 0
    children: tuple[Execution, ...] = ()
    followup_of: str | None = None
    question: str | None = None
    tenant_id: str | None = None
    models: Json | None = None
    budgets_requested: Json | None = None
    budgets_effective: Json | None = None  # every budget as the execution applies it

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Execution:
        trace = data.get("trace")
        if isinstance(trace, str) and trace:  # defensive: a trace left as JSON text
            with contextlib.suppress(ValueError):
                trace = json.loads(trace)
        budgets_requested = data.get("budgets_requested")
        return cls(
            execution_id=_str(data.get("execution_id")),
            status=_str(data.get("status")),
            session_id=_str(data.get("session_id")),
            mode=_str(data.get("mode")),
            output_mode=_str(data.get("output_mode")),
            answer=data.get("answer") if isinstance(data.get("answer"), str) else None,
            citations=tuple(SpanRef.from_json(c) for c in _list(data.get("citations"))),
            contexts=tuple(ContextItem.from_json(c) for c in _list(data.get("contexts"))),
            contexts_s3_uri=_opt(data.get("contexts_s3_uri")),
            budgets_consumed=BudgetsConsumed.from_json(data.get("budgets_consumed")),
            trace_s3_uri=_opt(data.get("trace_s3_uri")),
            started_at=_time(data.get("started_at")),
            completed_at=_time(data.get("completed_at")),
            duration_ms=_int(data.get("duration_ms")),
            error=ErrorDetail.parse(data.get("error")),
            trace=trace if trace not in ("", None) else None,
            parent_execution_id=_opt(data.get("parent_execution_id")),
            depth=_int(data.get("depth")),
            children=tuple(Execution.from_json(c) for c in _list(data.get("children"))),
            followup_of=_opt(data.get("followup_of")),
            question=_opt(data.get("question")),
            tenant_id=_opt(data.get("tenant_id")),
            models=_obj(data["models"]) if isinstance(data.get("models"), Mapping) else None,
            budgets_requested=(
                {k: v for k, v in budgets_requested.items() if v is not None}
                if isinstance(budgets_requested, Mapping)
                else None
            ),
            budgets_effective=(
                _obj(data["budgets_effective"])
                if isinstance(data.get("budgets_effective"), Mapping)
                else None
            ),
        )

    @property
    def finished(self) -> bool:
        """The execution has ended; nothing about it changes any more."""
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class CancelResult:
    execution_id: str
    status: str
    completed_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CancelResult:
        return cls(
            execution_id=_str(data.get("execution_id")),
            status=_str(data.get("status")),
            completed_at=_time(data.get("completed_at")),
        )


@dataclass(frozen=True)
class Event:
    """One live event of an execution (docs/api.md#events); `status` is the last."""

    event_id: str
    execution_id: str
    type: str
    turn_index: int
    at: datetime | None
    data: Json

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        payload = data.get("data")
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                payload = {"text": payload}
        return cls(
            event_id=_str(data.get("event_id")),
            execution_id=_str(data.get("execution_id")),
            type=_str(data.get("type")),
            turn_index=_int(data.get("turn_index")),
            at=_time(data.get("at")),
            data=_obj(payload),
        )

    @property
    def is_final(self) -> bool:
        """The `status` event: the execution has ended and the stream ends with it."""
        return self.type == "status"


# ---------------------------------------------------------------- steps and tools
@dataclass(frozen=True)
class LlmRequest:
    key: str
    prompt: str
    model_hint: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    metadata: Any = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LlmRequest:
        return cls(
            key=_str(data.get("key")),
            prompt=_str(data.get("prompt")),
            model_hint=_str(data.get("model_hint")),
            max_tokens=_int(data.get("max_tokens")),
            temperature=_float(data.get("temperature")),
            metadata=data.get("metadata"),
        )

    def to_json(self) -> Json:
        out: Json = {"key": self.key, "prompt": self.prompt}
        if self.model_hint:
            out["model_hint"] = self.model_hint
        if self.max_tokens:
            out["max_tokens"] = self.max_tokens
        if self.temperature:
            out["temperature"] = self.temperature
        if isinstance(self.metadata, Mapping):
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class LlmBatchRequest:
    key: str
    prompts: tuple[str, ...]
    model_hint: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    metadata: Any = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LlmBatchRequest:
        return cls(
            key=_str(data.get("key")),
            prompts=tuple(_str(p) for p in _list(data.get("prompts"))),
            model_hint=_str(data.get("model_hint")),
            max_tokens=_int(data.get("max_tokens")),
            temperature=_float(data.get("temperature")),
            metadata=data.get("metadata"),
        )

    def to_json(self) -> Json:
        out: Json = {"key": self.key, "prompts": list(self.prompts)}
        if self.model_hint:
            out["model_hint"] = self.model_hint
        if self.max_tokens:
            out["max_tokens"] = self.max_tokens
        if self.temperature:
            out["temperature"] = self.temperature
        if isinstance(self.metadata, Mapping):
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True)
class SearchRequest:
    key: str
    query: str
    k: int = 0
    doc_ids: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchRequest:
        filters = _obj(data.get("filters"))
        return cls(
            key=_str(data.get("key")),
            query=_str(data.get("query")),
            k=_int(data.get("k")),
            doc_ids=tuple(_str(d) for d in _list(filters.get("doc_ids"))),
        )

    def to_json(self) -> Json:
        out: Json = {"key": self.key, "query": self.query}
        if self.k:
            out["k"] = self.k
        if self.doc_ids:
            out["filters"] = {"doc_ids": list(self.doc_ids)}
        return out


@dataclass(frozen=True)
class RlmRequest:
    """A child execution queued by `tool.queue_rlm`."""

    key: str
    question: str
    doc_indices: tuple[int, ...] = ()
    spans: tuple[Span, ...] = ()
    budgets: Json | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RlmRequest:
        budgets = data.get("budgets")
        return cls(
            key=_str(data.get("key")),
            question=_str(data.get("question")),
            doc_indices=tuple(_int(i) for i in _list(data.get("doc_indices"))),
            spans=tuple(Span.from_json(s) for s in _list(data.get("spans"))),
            budgets=_obj(budgets) if isinstance(budgets, Mapping) else None,
        )

    def to_json(self) -> Json:
        out: Json = {"key": self.key, "question": self.question}
        if self.doc_indices:
            out["doc_indices"] = list(self.doc_indices)
        if self.spans:
            out["spans"] = [s.to_json() for s in self.spans]
        if self.budgets:
            out["budgets"] = dict(self.budgets)
        return out


@dataclass(frozen=True)
class ToolRequests:
    """What a step queued for resolution (`tool.queue_*`)."""

    llm: tuple[LlmRequest, ...] = ()
    search: tuple[SearchRequest, ...] = ()
    llm_batch: tuple[LlmBatchRequest, ...] = ()
    rlm: tuple[RlmRequest, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> ToolRequests:
        data = _obj(data)  # null (a step that queued nothing) is empty
        return cls(
            llm=tuple(LlmRequest.from_json(r) for r in _list(data.get("llm"))),
            search=tuple(SearchRequest.from_json(r) for r in _list(data.get("search"))),
            llm_batch=tuple(LlmBatchRequest.from_json(r) for r in _list(data.get("llm_batch"))),
            rlm=tuple(RlmRequest.from_json(r) for r in _list(data.get("rlm"))),
        )

    def to_json(self) -> Json:
        return {
            "llm": [r.to_json() for r in self.llm],
            "search": [r.to_json() for r in self.search],
            "llm_batch": [r.to_json() for r in self.llm_batch],
            "rlm": [r.to_json() for r in self.rlm],
        }

    def __bool__(self) -> bool:
        return bool(self.llm or self.search or self.llm_batch or self.rlm)

    @property
    def keys(self) -> list[str]:
        return [r.key for group in (self.llm, self.search, self.llm_batch, self.rlm) for r in group]


@dataclass(frozen=True)
class LlmResult:
    text: str
    meta: Any = None

    @classmethod
    def from_json(cls, data: Any) -> LlmResult:
        data = _obj(data)
        return cls(text=_str(data.get("text")), meta=_meta(data.get("meta")))

    @property
    def error(self) -> str | None:
        return _opt(self.meta.get("error")) if isinstance(self.meta, Mapping) else None


@dataclass(frozen=True)
class SearchHit:
    score: float
    doc_index: int
    start_char: int
    end_char: int
    preview: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchHit:
        return _from_scalars(cls, data)


@dataclass(frozen=True)
class SearchResult:
    hits: tuple[SearchHit, ...] = ()
    meta: Any = None

    @classmethod
    def from_json(cls, data: Any) -> SearchResult:
        data = _obj(data)
        return cls(hits=tuple(SearchHit.from_json(h) for h in _list(data.get("hits"))), meta=data.get("meta"))


@dataclass(frozen=True)
class LlmBatchResult:
    results: tuple[LlmResult, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> LlmBatchResult:
        return cls(results=tuple(LlmResult.from_json(r) for r in _list(_obj(data).get("results"))))


@dataclass(frozen=True)
class RlmResult:
    """A child execution's answer, its citations (into the parent's documents) and meta."""

    text: str = ""
    citations: tuple[SpanRef, ...] = ()
    meta: Any = None

    @classmethod
    def from_json(cls, data: Any) -> RlmResult:
        data = _obj(data)
        return cls(
            text=_str(data.get("text")),
            citations=tuple(SpanRef.from_json(c) for c in _list(data.get("citations"))),
            meta=data.get("meta"),
        )


@dataclass(frozen=True)
class ToolResults:
    """Resolved tool results by key, as a step finds them in `state["_tool_results"]`."""

    llm: dict[str, LlmResult] = field(default_factory=dict)
    search: dict[str, SearchResult] = field(default_factory=dict)
    llm_batch: dict[str, LlmBatchResult] = field(default_factory=dict)
    rlm: dict[str, RlmResult] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> ToolResults:
        data = _obj(data)
        return cls(
            llm={k: LlmResult.from_json(v) for k, v in _obj(data.get("llm")).items()},
            search={k: SearchResult.from_json(v) for k, v in _obj(data.get("search")).items()},
            llm_batch={k: LlmBatchResult.from_json(v) for k, v in _obj(data.get("llm_batch")).items()},
            rlm={k: RlmResult.from_json(v) for k, v in _obj(data.get("rlm")).items()},
        )


@dataclass(frozen=True)
class ToolResolution:
    """The answer of `tools/resolve`: results by kind and key, and each key's status."""

    tool_results: ToolResults
    statuses: dict[str, str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToolResolution:
        return cls(
            tool_results=ToolResults.from_json(data.get("tool_results")),
            statuses={str(k): _str(v) for k, v in _obj(data.get("statuses")).items()},
        )


@dataclass(frozen=True)
class Final:
    answer: str

    @classmethod
    def parse(cls, data: Any) -> Final | None:
        """`{is_final: true, answer}` -> Final; null or `{is_final: false}` -> None."""
        if isinstance(data, Mapping) and data.get("is_final"):
            return cls(answer=_str(data.get("answer")))
        return None


@dataclass(frozen=True)
class StepResult:
    """What a runtime step answered (docs/api.md#step-output).

    A step's own failure is `error` (the call itself succeeded);
    `raise_for_error()` turns it into `StepFailedError`.
    `instructions_executed` is filled by the gRPC transport only.
    """

    success: bool
    stdout: str = ""
    stdout_truncated: bool = False
    state: Any = None
    span_log: tuple[Span, ...] = ()
    tool_requests: ToolRequests = field(default_factory=ToolRequests)
    final: Final | None = None
    error: ErrorDetail | None = None
    turn_index: int = 0
    duration_ms: float = 0.0
    yield_reason: str | None = None
    isolation: str = ""
    instructions_executed: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepResult:
        executed = data.get("instructions_executed")
        return cls(
            success=bool(data.get("success")),
            stdout=_str(data.get("stdout")),
            stdout_truncated=bool(data.get("stdout_truncated")),
            state=data.get("state"),
            span_log=tuple(Span.from_json(s) for s in _list(data.get("span_log"))),
            tool_requests=ToolRequests.from_json(data.get("tool_requests")),
            final=Final.parse(data.get("final")),
            error=ErrorDetail.parse(data.get("error")),
            turn_index=_int(data.get("turn_index")),
            duration_ms=_float(data.get("duration_ms")),
            yield_reason=_opt(data.get("yield_reason")),
            isolation=_str(data.get("isolation")),
            instructions_executed=_int(executed) if executed not in (None, "") else None,
        )

    @property
    def is_final(self) -> bool:
        return self.final is not None

    def raise_for_error(self) -> StepResult:
        """This result, or StepFailedError when the step failed."""
        if not self.success:
            raise StepFailedError(self)
        return self


@dataclass(frozen=True)
class Step:
    """A persisted step record of an execution (`GET .../steps`)."""

    turn_index: int
    success: bool
    updated_at: datetime | None = None
    stdout: str = ""
    state: Any = None
    span_log: tuple[Span, ...] = ()
    tool_requests: ToolRequests = field(default_factory=ToolRequests)
    final: Final | None = None
    error: ErrorDetail | None = None
    checksum: str = ""
    summary: Json = field(default_factory=dict)
    code: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            turn_index=_int(data.get("turn_index")),
            success=bool(data.get("success")),
            updated_at=_time(data.get("updated_at")),
            stdout=_str(data.get("stdout")),
            state=data.get("state"),
            span_log=tuple(Span.from_json(s) for s in _list(data.get("span_log"))),
            tool_requests=ToolRequests.from_json(data.get("tool_requests")),
            final=Final.parse(data.get("final")),
            error=ErrorDetail.parse(data.get("error")),
            checksum=_str(data.get("checksum")),
            summary=_obj(data.get("summary")),
            code=_str(data.get("code")),
        )


# ---------------------------------------------------------------- citations
@dataclass(frozen=True)
class SpanText:
    """The canonical text of a document range and its SpanRef (`spans/get`)."""

    text: str
    ref: SpanRef

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpanText:
        return cls(text=_str(data.get("text")), ref=SpanRef.from_json(_obj(data.get("ref"))))


@dataclass(frozen=True)
class Citation:
    """A citation checked with the server (`VerifyCitation`): `verified` when the
    range lies in the document and its checksum still matches the text."""

    ref: SpanRef
    verified: bool
    text: str = ""
    source_name: str = ""
    start_char: int = 0
    end_char: int = 0

    @classmethod
    def from_verify(cls, ref: SpanRef, data: Mapping[str, Any]) -> Citation:
        span = _obj(data.get("char_range"))
        return cls(
            ref=ref,
            verified=bool(data.get("valid")),
            text=_str(data.get("text")),
            source_name=_str(data.get("source_name")),
            start_char=_int(span.get("start_char")) if span else ref.start_char,
            end_char=_int(span.get("end_char")) if span else ref.end_char,
        )


@dataclass(frozen=True)
class Answer:
    """An execution's answer with each citation verified; `str(answer)` is the text."""

    text: str
    citations: tuple[Citation, ...]
    execution: Execution

    @property
    def verified(self) -> bool:
        """Every citation verified (and there is at least one)."""
        return bool(self.citations) and all(c.verified for c in self.citations)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class UploadInfo:
    """A stored upload (POST /v1/uploads, gRPC Upload): `raw_s3_uri` names it in a session."""

    upload_id: str
    raw_s3_uri: str
    file_name: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadInfo:
        return cls(
            upload_id=_str(data.get("upload_id")),
            raw_s3_uri=_str(data.get("raw_s3_uri")),
            file_name=_str(data.get("file_name")),
            content_type=_str(data.get("content_type")),
            size_bytes=_int(data.get("size_bytes")),
            sha256=_str(data.get("sha256")),
            created_at=_time(data.get("created_at")),
        )

    def document(self, source_name: str | None = None) -> DocumentInput:
        """The session document this upload is."""
        return DocumentInput(
            source_name=source_name or self.file_name, mime_type=self.content_type, raw_s3_uri=self.raw_s3_uri
        )


@dataclass(frozen=True)
class UploadProgress:
    """How far one file of an upload has gone (`progress` callbacks).

    `index` counts the files of one `sessions.create(files=...)` from 0;
    `total_bytes` is None when the size is not known in advance."""

    file_name: str
    index: int
    files: int
    sent_bytes: int
    total_bytes: int | None
    done: bool = False


def docs_json(docs: Sequence[DocumentInput | str | Mapping[str, Any]]) -> list[Json]:
    return [DocumentInput.coerce(d).to_json() for d in docs]
