"""Each REST operation accepts every field of the proto request it builds, and
nothing the proto lacks: a field missing from gateway/models.py would be
silently dropped (as `llm_batch` once was from POST .../tools/resolve), a field
the proto lacks would be accepted and never sent. The walk covers the path,
query and header parameters and the body, nested models included."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.cli import openapi_text
from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2

# (method, path) -> the proto request the operation sends.
OPERATIONS: dict[tuple[str, str], type[Any]] = {
    ("POST", "/v1/sessions"): session_pb2.CreateSessionRequest,
    ("GET", "/v1/sessions/{session_id}"): session_pb2.GetSessionRequest,
    ("DELETE", "/v1/sessions/{session_id}"): session_pb2.DeleteSessionRequest,
    ("POST", "/v1/sessions/{session_id}/executions"): execution_pb2.StartExecutionRequest,
    ("POST", "/v1/sessions/{session_id}/executions/runtime"): execution_pb2.CreateRuntimeExecutionRequest,
    ("POST", "/v1/executions/{execution_id}/followups"): execution_pb2.StartFollowupRequest,
    ("GET", "/v1/executions/{execution_id}"): execution_pb2.GetExecutionRequest,
    ("GET", "/v1/executions/{execution_id}/steps"): execution_pb2.ListStepsRequest,
    ("POST", "/v1/executions/{execution_id}/wait"): execution_pb2.WaitExecutionRequest,
    ("POST", "/v1/executions/{execution_id}/cancel"): execution_pb2.CancelExecutionRequest,
    ("POST", "/v1/executions/{execution_id}/steps"): execution_pb2.RunStepRequest,
    ("POST", "/v1/executions/{execution_id}/tools/resolve"): execution_pb2.ResolveToolsRequest,
    ("GET", "/v1/executions/{execution_id}/events"): execution_pb2.WatchExecutionRequest,
    ("POST", "/v1/spans/get"): citation_pb2.GetSpanRequest,
    ("POST", "/v1/citations/verify"): citation_pb2.VerifyCitationRequest,
    ("POST", "/v1/uploads"): session_pb2.UploadRequest,
    ("GET", "/v1/sessions"): session_pb2.ListSessionsRequest,
    ("GET", "/v1/executions"): execution_pb2.ListExecutionsRequest,
}

# REST operations that send no request of their own.
NO_RPC = {
    ("GET", "/v1/executions/{execution_id}/view"),  # the viewer page: static HTML, the browser calls the API
    ("GET", "/v1/view"),  # the viewer's index page: the same
}

# RPCs with no REST operation.
GRPC_ONLY: set[str] = set()

# REST names that differ from the proto's, per proto message: REST name -> proto field.
RENAMED: dict[str, dict[str, str]] = {
    # `after` (query) and `Last-Event-ID` (the header EventSource sends on reconnect)
    "WatchExecutionRequest": {"after": "after_event_id", "Last-Event-ID": "after_event_id"},
    # the upload's MIME type is the body's own Content-Type header
    "UploadRequest": {"content-type": "content_type"},
}

# REST-only fields, per proto message, each with why it is not on the wire.
REST_ONLY: dict[str, set[str]] = {
    # The spec's request shapes carry a `type` tag ({type: "llm", ...}); the
    # proto keeps each kind in its own list instead.
    "LlmRequest": {"type"},
    "SearchRequest": {"type"},
    "LlmBatchRequest": {"type"},
    "RlmRequest": {"type"},
}

# Proto fields REST does not expose, per proto message, each with why.
PROTO_ONLY: dict[str, set[str]] = {
    # REST: `data` is the request body itself, streamed into chunks by the
    # gateway; `last` marks the body's end (docs/api.md#uploads).
    "UploadRequest": {"data", "last"},
}

_JSON = "_json"


@cache
def openapi() -> dict[str, Any]:
    return dict(json.loads(openapi_text()))


def _refs(schema: dict[str, Any]) -> list[str]:
    """The component schemas a property's schema names (X, X | null, [X], {str: X})."""
    if "$ref" in schema:
        return [schema["$ref"].rsplit("/", 1)[-1]]
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, ()):
            found.extend(_refs(option))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found.extend(_refs(schema[key]))
    return found


def _properties(name: str) -> dict[str, Any]:
    return dict(openapi()["components"]["schemas"][name].get("properties", {}))


def _proto_name(rest: str, descriptor: Descriptor) -> str | None:
    fields = descriptor.fields_by_name
    renamed = RENAMED.get(descriptor.name, {}).get(rest)
    if renamed is not None:
        return renamed
    if rest in fields:
        return rest
    if rest + _JSON in fields:  # JSON values cross the wire as canonical JSON text
        return rest + _JSON
    return None


def _compare(where: str, rest_fields: dict[str, Any], descriptor: Descriptor, seen: set[str]) -> list[str]:
    """Differences between REST fields (name -> JSON schema) and a proto message."""
    problems: list[str] = []
    rest_only = REST_ONLY.get(descriptor.name, set())
    covered: set[str] = set()
    for rest, schema in rest_fields.items():
        if rest in rest_only:
            continue
        proto = _proto_name(rest, descriptor)
        if proto is None:
            problems.append(f"{where}: REST field {rest!r} is not in {descriptor.full_name}")
            continue
        covered.add(proto)
        field = descriptor.fields_by_name[proto]
        if field.type != FieldDescriptor.TYPE_MESSAGE or proto.endswith(_JSON):
            continue
        target = field.message_type
        assert target is not None
        if target.GetOptions().map_entry:
            target = target.fields_by_name["value"].message_type
            assert target is not None
        refs = _refs(schema)
        if not refs:
            problems.append(f"{where}.{rest}: a message on the wire, no object schema in REST")
        for ref in refs:
            if f"{ref}:{target.full_name}" not in seen:
                seen.add(f"{ref}:{target.full_name}")
                problems.extend(_compare(f"{where}.{rest}", _properties(ref), target, seen))
    for name in descriptor.fields_by_name:
        if name not in covered and name not in PROTO_ONLY.get(descriptor.name, set()):
            problems.append(f"{where}: proto field {descriptor.full_name}.{name} has no REST field")
    return problems


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in openapi()["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    }


def _inputs(op: dict[str, Any]) -> dict[str, Any]:
    """An operation's inputs as a client sees them: parameters and body properties."""
    inputs: dict[str, Any] = {
        p["name"]: p["schema"] for p in op.get("parameters", ()) if p["name"] != "authorization"
    }
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    for ref in _refs(body or {}):
        inputs.update(_properties(ref))
    return inputs


def test_every_rest_operation_is_mapped_to_its_proto_request() -> None:
    assert set(_operations()) == set(OPERATIONS) | NO_RPC


def test_every_rpc_has_a_rest_operation_or_is_grpc_only() -> None:
    served = {cls.DESCRIPTOR.full_name for cls in OPERATIONS.values()}
    for module in (session_pb2, execution_pb2, citation_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                name = f"{service.full_name}.{method.name}"
                assert method.input_type.full_name in served or name in GRPC_ONLY, name


@pytest.mark.parametrize("operation", sorted(OPERATIONS), ids=lambda o: f"{o[0]} {o[1]}")
def test_rest_request_has_the_proto_request_fields(operation: tuple[str, str]) -> None:
    descriptor = OPERATIONS[operation].DESCRIPTOR
    inputs = _inputs(_operations()[operation])
    assert _compare(f"{operation[0]} {operation[1]}", inputs, descriptor, set()) == []
