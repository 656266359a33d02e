"""Protobuf <-> JSON translation for the REST gateway.

Generic over the generated messages: `*_json` fields (canonical JSON text on the
wire) become real JSON values under the name without the suffix, int64 stays an
integer (unlike json_format), unset optional scalars and messages become null.
A few presentation rules protobuf cannot express follow the spec's JSON
(`_NULL_WHEN_EMPTY`, `_REQUEST_TYPE`, `_EMPTY_WHEN_UNSET`: docs/api.md,
Conventions). It must never interpret a value: the control plane owns every
meaning.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rlm_rs.canonical import canonical_json

_JSON_SUFFIX = "_json"

# Strings whose "" means "not set": the spec shows null (an untagged span's
# tag, an execution's URIs and times while it runs, a top-level execution's
# parent). Keyed by the message's full name.
_NULL_WHEN_EMPTY: dict[str, frozenset[str]] = {
    "rlm_rs.v1.Span": frozenset({"tag"}),
    "rlm_rs.v1.Execution": frozenset(
        {"contexts_s3_uri", "trace_s3_uri", "completed_at", "parent_execution_id", "followup_of"}
    ),
    "rlm_rs.v1.CancelExecutionResponse": frozenset({"completed_at"}),
}
# Each queued tool request carries its kind, `type` (the spec's llm and
# search requests; the appliance's llm_batch and rlm likewise).
_REQUEST_TYPE: dict[str, str] = {
    "rlm_rs.v1.LlmRequest": "llm",
    "rlm_rs.v1.SearchRequest": "search",
    "rlm_rs.v1.LlmBatchRequest": "llm_batch",
    "rlm_rs.v1.RlmRequest": "rlm",
}
# Messages shown in their empty form when unset: a step that queued nothing
# has `tool_requests: {llm: [], search: [], ...}`, one that did not call
# FINAL has `final: {is_final: false, answer: null}`.
_EMPTY_WHEN_UNSET = frozenset({"rlm_rs.v1.ToolRequests", "rlm_rs.v1.Final"})


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    return message is not None and message.GetOptions().map_entry


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_dict(value)
    return value


def _load_json(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # never lose what the control plane sent


def to_dict(msg: Message) -> dict[str, Any]:
    """A message as the HTTP API shows it."""
    descriptor: Any = msg.DESCRIPTOR
    full_name = descriptor.full_name
    kind = _REQUEST_TYPE.get(full_name)
    out: dict[str, Any] = {"type": kind} if kind else {}
    nullable = _NULL_WHEN_EMPTY.get(full_name, frozenset())
    for field in descriptor.fields:
        name = field.name
        value = getattr(msg, name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            result: Any = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            result = [_value(field, v) for v in value]
        elif field.has_presence and not msg.HasField(name):
            empty = field.type == FieldDescriptor.TYPE_MESSAGE and (
                field.message_type.full_name in _EMPTY_WHEN_UNSET
            )
            result = to_dict(value) if empty else None
        elif name in nullable and value == "":
            result = None
        else:
            result = _value(field, value)
        if name.endswith(_JSON_SUFFIX) and field.type == FieldDescriptor.TYPE_STRING:
            name = name[: -len(_JSON_SUFFIX)]
            result = _load_json(result) if isinstance(result, str) else result
        out[name] = result
    if full_name == "rlm_rs.v1.Final" and not msg.is_final:  # type: ignore[attr-defined]
        out["answer"] = None
    return out


def from_dict(msg: Message, data: dict[str, Any]) -> Message:
    """Fill `msg` from an HTTP body (None = unset); returns `msg`.

    Raises ValueError/TypeError on values the message cannot hold; the caller
    turns them into VALIDATION_ERROR.
    """
    descriptor: Any = msg.DESCRIPTOR
    fields = descriptor.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key)
        if field is None and (key + _JSON_SUFFIX) in fields:
            field = fields[key + _JSON_SUFFIX]
            setattr(msg, field.name, canonical_json(value))
            continue
        if field is None:
            continue  # not part of the wire message (the gateway ignores it)
        if _is_map(field):
            target = getattr(msg, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_dict(target[k], v)
                else:
                    target[k] = v
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for item in value:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    from_dict(target.add(), item)
                else:
                    target.append(item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            from_dict(getattr(msg, field.name), value)
        else:
            setattr(msg, field.name, value)
    return msg
