"""Bounds on what callers and steps may persist, checked before anything is written.

A runtime state override is parsed strictly (no NaN/Infinity, no integers
past Python's 4,300-digit conversion limit, nesting and size as the sandbox's
own state rules) and refused with a 4xx code. A step result's persisted parts
(the FINAL answer, each tool request's metadata, the whole step record
without its state, which is offloaded by size) are measured when the sandbox
answers; past a limit the step becomes a failed step with BUDGET_EXCEEDED
naming the limit: input state unchanged, no tool requests, no final, as if the
sandbox had refused it. Nothing here may let an over-limit value reach storage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

from rlm_rs.canonical import canonical_json
from rlm_rs.errors import RlmError
from rlm_rs.sandbox._state import check_json_value
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.settings import Settings
from rlm_rs.v1.common_pb2 import ErrorDetail

_MESSAGE_CHARS = 300


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """A caller's JSON object, or VALIDATION_ERROR (never a RecursionError or a
    NaN that would poison a record later)."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        reason = str(exc)[:_MESSAGE_CHARS] if isinstance(exc, ValueError) else "nested too deeply"
        raise RlmError("VALIDATION_ERROR", f"{what} is not valid JSON: {reason}") from None
    if not isinstance(value, dict):
        raise RlmError("VALIDATION_ERROR", f"{what} must be a JSON object")
    return value


def parse_state_override(text: str, execution: Mapping[str, Any]) -> dict[str, Any]:
    """A RunStep state override: a JSON object within the execution's
    max_state_chars and the sandbox's state rules (STATE_TOO_LARGE /
    STATE_INVALID_TYPE / VALIDATION_ERROR)."""
    max_chars = int(execution["budgets_requested"]["max_state_chars"])
    state = parse_json_object(text, "state")
    check_json_value(state, budget=[max_chars])
    size = len(canonical_json(state))
    if size > max_chars:
        raise RlmError(
            "STATE_TOO_LARGE",
            f"state is {size} chars of canonical JSON; the limit is {max_chars}",
            {"state_chars": size, "max_state_chars": max_chars},
        )
    return state


def _refuse(result: StepResult, input_state_json: str, limit: str, size: int, allowed: int) -> None:
    message = f"the step's {limit.removeprefix('max_').replace('_', ' ')} is {size}; the limit is {allowed}"
    result.success = False
    result.state_json = input_state_json
    result.ClearField("tool_requests")
    result.ClearField("final")
    result.yield_reason = ""
    result.error.CopyFrom(
        ErrorDetail(
            code="BUDGET_EXCEEDED",
            message=message,
            details_json=json.dumps({"limit": limit, "size": size, "allowed": allowed, "layer": "persist"}),
        )
    )


def bound_step_result(result: StepResult, input_state_json: str, settings: Settings) -> None:
    """In place: an over-limit result becomes a failed step (see the module docstring)."""
    if not result.success:
        return
    if result.final.is_final and len(result.final.answer) > settings.max_final_answer_chars:
        _refuse(
            result,
            input_state_json,
            "max_final_answer_chars",
            len(result.final.answer),
            settings.max_final_answer_chars,
        )
        return
    requests = result.tool_requests
    metadata = [r.metadata_json for r in requests.llm] + [r.metadata_json for r in requests.llm_batch]
    for text in metadata:
        if len(text) > settings.max_tool_metadata_chars:
            _refuse(
                result,
                input_state_json,
                "max_tool_metadata_chars",
                len(text),
                settings.max_tool_metadata_chars,
            )
            return
    size = result.ByteSize() - len(result.state_json.encode("utf-8"))
    if size > settings.max_step_record_bytes:
        _refuse(result, input_state_json, "max_step_record_bytes", size, settings.max_step_record_bytes)
