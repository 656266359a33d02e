"""Budgets (docs/api.md#budgets): defaults, merging, the step policy and the snapshot.

Precedence: SPEC defaults < DEFAULT_BUDGETS_JSON < the session's
budgets_default < the execution's budgets. The orchestrator enforces totals;
the sandbox enforces per-step limits from the policy built here.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format

from rlm_rs.errors import RlmError
from rlm_rs.limits import BUDGET_CEILINGS
from rlm_rs.sandbox.policy import default_policy
from rlm_rs.v1.common_pb2 import Budgets
from rlm_rs.v1.sandbox_pb2 import SandboxPolicy

SPEC_DEFAULTS: dict[str, Any] = {
    "max_turns": 20,
    "max_total_seconds": 180.0,
    "max_step_seconds": 30.0,
    "max_spans_total": 2000,
    "max_spans_per_step": 200,
    "max_tool_requests_per_step": 25,
    "max_llm_subcalls": 50,
    "max_llm_prompt_chars": 200_000,
    "max_total_llm_prompt_chars": 2_000_000,
    "max_stdout_chars": 15_000,
    "max_state_chars": 500_000,
    "max_rlm_subcalls": 10,
    "max_depth": 2,
    "max_cost_usd": 0.0,
}

# Each budget's ceiling is in rlm_rs/limits.py (the gateway advertises the same numbers).
_CEILINGS = BUDGET_CEILINGS


def budgets_to_dict(budgets: Budgets | None) -> dict[str, Any]:
    if budgets is None:
        return {}
    return json_format.MessageToDict(budgets, preserving_proto_field_name=True)


def budgets_from_dict(values: dict[str, Any]) -> Budgets:
    return json_format.ParseDict(values, Budgets())


def merge_budgets(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; every value validated against its ceiling."""
    merged = dict(SPEC_DEFAULTS)
    for layer in layers:
        for name, value in (layer or {}).items():
            if name not in SPEC_DEFAULTS:
                raise RlmError("VALIDATION_ERROR", f"unknown budget {name!r}")
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):  # NaN passes every comparison below and poisons the record for good
                raise RlmError("VALIDATION_ERROR", f"budget {name} must be a finite number >= 0")
            if value > _CEILINGS[name]:
                raise RlmError(
                    "VALIDATION_ERROR",
                    f"budget {name} is above its ceiling {_CEILINGS[name]}",
                    {"budget": name, "ceiling": _CEILINGS[name]},
                )
            merged[name] = type(SPEC_DEFAULTS[name])(value)
    return merged


def step_policy(budgets: dict[str, Any], *, enable_search: bool) -> SandboxPolicy:
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


def consumed_zero() -> dict[str, Any]:
    return {
        "turns": 0,
        "llm_subcalls": 0,
        "total_seconds": 0.0,
        "spans_total": 0,
        "llm_prompt_chars_total": 0,
        "rlm_subcalls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "cache_hits": 0,
    }


def snapshot(budgets: dict[str, Any], consumed: dict[str, Any]) -> dict[str, Any]:
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


def deadline_epoch(execution: dict[str, Any]) -> float:
    """When the execution's max_total_seconds runs out (epoch seconds)."""
    return float(execution["started_epoch"]) + float(execution["budgets_requested"]["max_total_seconds"])
