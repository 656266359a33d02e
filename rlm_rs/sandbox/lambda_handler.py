"""AWS Lambda handler running the same step executor: event in, StepResult out (docs/api.md#step-api).

The weaker isolation option, for users who deploy steps on Lambda instead of
the pool: inside, only the policy layers (AST policy, RestrictedPython, step
limits) hold, and each step runs in a forked child that is SIGKILLed at
max_step_seconds (rlm_rs/sandbox/_killable.py), so C-level work cannot
outrun the limit; between steps, Lambda's Firecracker microVM separates functions
but reuses a warm execution environment across invocations of the same
function, with outbound network unless the function sits in a VPC without
egress. Deploy one function per tenant, set reserved concurrency, and keep
the pool for anything multi-tenant. Documents are local paths (e.g. an EFS
mount or /tmp); this handler opens them read-only and hands the executor fds,
exactly as the pool does. It must never return anything but JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

from google.protobuf import json_format

from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.v1.common_pb2 import ErrorDetail

_FIELDS = {f.name for f in StepRequest.DESCRIPTOR.fields}


def request_from_event(event: dict[str, Any]) -> StepRequest:
    """The step input (state as a JSON object, tool_results injected into state)."""
    body = dict(event)
    state = body.pop("state", None)
    tool_results = body.pop("tool_results", None)
    if state is None:
        state = json.loads(body.pop("state_json", "") or "{}")
    if tool_results:
        state = {**state, "_tool_results": tool_results}
    body.pop("unsafe_disable_policy_layers", None)  # never from an event
    unknown = set(body) - _FIELDS
    if unknown:
        raise ValueError(f"unknown event fields: {sorted(unknown)}")
    request = json_format.ParseDict(body, StepRequest())
    request.state_json = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return request


def result_to_event(result: StepResult) -> dict[str, Any]:
    """The step output: state as a JSON object, every field present."""
    out = json_format.MessageToDict(
        result, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    out["state"] = json.loads(out.pop("state_json") or "{}")
    # proto3 JSON writes int64 as strings; the spec's JSON has numbers.
    out["instructions_executed"] = int(out.get("instructions_executed", 0))
    for span in out.get("span_log", []):
        for key in ("start_char", "end_char"):
            span[key] = int(span.get(key, 0))
    error = out.get("error") or {}
    if error.get("details_json"):
        error["details"] = json.loads(error.pop("details_json"))
    return out


def _open_documents(request: StepRequest) -> list[int]:
    fds: list[int] = []
    try:
        for doc in request.context_manifest:
            for path, required in (
                (doc.text_path, True),
                (doc.offsets_path, False),
                (doc.meta_path, False),
            ):
                if required or path:
                    fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    from rlm_rs.sandbox._killable import run_step_killable

    try:
        request = request_from_event(event)
    except (ValueError, json_format.ParseError, TypeError) as exc:
        result = StepResult(
            success=False,
            isolation="lambda",
            error=ErrorDetail(code="VALIDATION_ERROR", message=str(exc), details_json="{}"),
        )
        return result_to_event(result)
    try:
        fds = _open_documents(request)
    except OSError as exc:
        result = StepResult(
            success=False,
            state_json=request.state_json,
            turn_index=request.turn_index,
            isolation="lambda",
            error=ErrorDetail(
                code="S3_READ_ERROR",
                message=f"document not readable: {exc.strerror or exc}",
                details_json="{}",
            ),
        )
        return result_to_event(result)
    try:
        result = run_step_killable(request, fds)
    finally:
        for fd in fds:
            os.close(fd)
    result.isolation = "lambda"
    return result_to_event(result)
