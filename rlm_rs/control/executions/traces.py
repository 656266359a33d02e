"""Execution traces (docs/api.md#traces): gzipped JSON at
`traces/{tenant}/{session}/{execution}[.t{token}].json.gz` (the lease
holder's fencing token), written once when the execution ends. `redact`
replaces prompts, model output and what derives from it (code, stdout,
answers, step error messages and details) with their sizes and keeps the
structure. Protobuf parts (span logs, tool requests, errors) are in the
project's JSON shape (rlm_rs/codec.py), as everywhere else. With
`redact_trace` the redacted form is the only one that leaves the engine:
the stored blob, the inline `trace_json` (return_trace), a child's trace
inside its parent's, and the live events (events.py). Never redact only one
copy.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from rlm_rs.canonical import canonical_json
from rlm_rs.storage import Storage, keys

TRACE_VERSION = "1.1"  # the trace schema this document follows (docs/api.md#traces)
_REDACTED_FIELDS = (
    "root_output_raw", "code", "stdout", "prompt", "text", "question", "answer", "final",
    "message", "details_json",
)  # fmt: skip


# Errors' details (the codec's JSON value of `details_json`): may quote the step's code.
_REDACTED_VALUES = ("details",)


def _redacted(key: str, value: Any) -> Any:
    if key in _REDACTED_FIELDS and isinstance(value, str):
        return {"redacted": True, "chars": len(value)}
    if key in _REDACTED_VALUES and value is not None:
        return {"redacted": True, "chars": len(canonical_json(value))}
    return redact(value)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redacted(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def build_trace(
    execution: dict[str, Any], turns: list[dict[str, Any]], children: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The trace document; `children` are the child executions' own traces
    (tool.queue_rlm), so a recursive execution's trace is a tree."""
    return {
        "version": TRACE_VERSION,
        "tenant_id": execution["tenant_id"],
        "session_id": execution["session_id"],
        "execution_id": execution["execution_id"],
        "mode": execution["mode"],
        "question": execution.get("question", ""),
        "started_at": execution.get("started_at"),
        "completed_at": execution.get("completed_at"),
        "status": execution["status"],
        "budgets_requested": execution.get("budgets_requested"),
        "budgets_consumed": execution.get("budgets_consumed"),
        "parent_execution_id": execution.get("parent_execution_id"),
        "depth": int(execution.get("depth") or 0),
        "turns": turns,
        "children": children or [],
        "final": {
            "answer": execution.get("answer"),
            "citations": [_span_ref(ref) for ref in execution.get("citations") or []],
            "completed_at": execution.get("completed_at"),
        },
    }


def _span_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """A stored SpanRef with its numbers as JSON integers (protobuf's JSON
    form writes int64 as strings and leaves zeros out)."""
    out = dict(ref)
    for name in ("doc_index", "start_char", "end_char"):
        out[name] = int(ref.get(name) or 0)
    return out


def read_trace(storage: Storage, uri: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(gzip.decompress(storage.blobs.get(keys.key_of(uri))))
    return loaded


def write_trace(storage: Storage, trace: dict[str, Any], token: int | None = None) -> str:
    """Store `trace` as given: the caller passes the redacted form when
    redact_trace is set (the same object it returns inline). A lease
    holder's trace key names its fencing token: a stale holder's trace can
    never take the key the execution's real finisher writes."""
    key = keys.trace_key(trace["tenant_id"], trace["session_id"], trace["execution_id"], token)
    storage.blobs.put(key, gzip.compress(canonical_json(trace).encode("utf-8"), mtime=0))
    return storage.blobs.uri(key)
