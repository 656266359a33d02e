"""Budgets (docs/api.md#budgets): merging, the step policy and the snapshot.

The model (each budget's unit, default, ceiling and what zero means) is
rlm_rs/domain/budgets.py. Precedence: the built-in defaults <
DEFAULT_BUDGETS_JSON < the session's budgets_default < the execution's
budgets. The orchestrator enforces totals; the sandbox enforces per-step
limits from the policy built here. A message's budgets are read by presence
with their own types (never through protobuf's JSON, which turns int64 into
strings).
"""

from __future__ import annotations

import math
from typing import Any, cast

from google.protobuf import json_format

from rlm_rs.domain.budgets import BUDGETS, BudgetField, Budgets, Consumed, ZeroMeans, default_budgets
from rlm_rs.domain.records import ExecutionRecord
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.policy import default_policy
from rlm_rs.v1 import common_pb2
from rlm_rs.v1.sandbox_pb2 import SandboxPolicy


def budgets_to_dict(budgets: common_pb2.Budgets | None) -> dict[str, Any]:
    """The budgets a message sets (explicit zeros included), as ints and floats."""
    if budgets is None:
        return {}
    return {name: getattr(budgets, name) for name in BUDGETS if budgets.HasField(name)}  # type: ignore[arg-type]


def budgets_from_dict(values: Any) -> common_pb2.Budgets:
    return json_format.ParseDict(dict(values), common_pb2.Budgets())


def _checked(field: BudgetField, value: Any) -> int | float:
    if (
        not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0
    ):  # NaN passes every comparison below and poisons the record for good
        raise RlmError("VALIDATION_ERROR", f"budget {field.name} must be a finite number >= 0")
    if value > field.ceiling:
        raise RlmError(
            "VALIDATION_ERROR",
            f"budget {field.name} is above its ceiling {field.ceiling}",
            {"budget": field.name, "ceiling": field.ceiling},
        )
    return field.unit(value)


def merge_budgets(*layers: Any) -> Budgets:
    """Later layers win; every value validated against its ceiling. A zero
    for a budget whose zero means DEFAULT is "not set here"."""
    merged: dict[str, Any] = {**default_budgets()}
    for layer in layers:
        for name, value in (layer or {}).items():
            field = BUDGETS.get(name)
            if field is None:
                raise RlmError("VALIDATION_ERROR", f"unknown budget {name!r}")
            checked = _checked(field, value)
            if checked == 0 and field.zero is ZeroMeans.DEFAULT:
                continue
            merged[name] = checked
    return cast(Budgets, merged)


def step_policy(budgets: Budgets, *, enable_search: bool) -> SandboxPolicy:
    policy = default_policy()
    policy.max_step_seconds = float(budgets["max_step_seconds"])
    policy.max_spans_per_step = int(budgets["max_spans_per_step"])
    policy.max_tool_requests_per_step = int(budgets["max_tool_requests_per_step"])
    policy.max_stdout_chars = int(budgets["max_stdout_chars"])
    policy.max_state_chars = int(budgets["max_state_chars"])
    policy.max_llm_prompt_chars = int(budgets["max_llm_prompt_chars"])
    policy.enable_search = enable_search
    policy.enable_llm = int(budgets["max_llm_subcalls"]) > 0
    policy.enable_rlm = int(budgets["max_rlm_subcalls"]) > 0 and int(budgets["max_depth"]) > 0
    return policy


def snapshot(budgets: Budgets, consumed: Consumed) -> dict[str, Any]:
    """state._budgets: what is left."""
    return {
        "turns_remaining": max(int(budgets["max_turns"]) - int(consumed["turns"]), 0),
        "seconds_remaining": round(
            max(float(budgets["max_total_seconds"]) - float(consumed["total_seconds"]), 0.0), 3
        ),
        "llm_subcalls_remaining": max(int(budgets["max_llm_subcalls"]) - int(consumed["llm_subcalls"]), 0),
        "llm_prompt_chars_remaining": max(
            int(budgets["max_total_llm_prompt_chars"]) - int(consumed["llm_prompt_chars_total"]), 0
        ),
        "spans_remaining": max(int(budgets["max_spans_total"]) - int(consumed["spans_total"]), 0),
        "max_llm_prompt_chars": int(budgets["max_llm_prompt_chars"]),
    }


def deadline_epoch(execution: ExecutionRecord) -> float:
    """When the execution's max_total_seconds runs out (epoch seconds)."""
    return float(execution["started_epoch"]) + float(execution["budgets_requested"]["max_total_seconds"])
