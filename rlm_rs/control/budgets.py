"""Budgets (docs/api.md#budgets): ceilings, merging, the step policy and the snapshot.

The model (each budget's unit, default, ceiling and what zero means) is
rlm_rs/domain/budgets.py. Precedence: the built-in defaults <
DEFAULT_BUDGETS_JSON < the session's budgets_default < the execution's
budgets. The orchestrator enforces totals; the sandbox enforces per-step
limits from the policy built here. A message's budgets are read by presence
with their own types (never through protobuf's JSON, which turns int64 into
strings).

Ceilings: a budget's ceiling is the lower of its own (rlm_rs/limits.py) and,
for a per-step limit, the sandbox pool's cap on it. The control plane learns
the pool's caps from the setting the pool itself reads
(RLM_SANDBOX_POLICY_JSON, through configured_pool_policy) and, where it can
reach the pool, from the policy the pool reports (GetPoolStatus, asked at
start and then by the health sweep at most every REFRESH_SECONDS): the lower
of the two holds, so a pool configured below the control plane still never
caps a step silently. A value a caller or the operator sets above a ceiling is
refused, naming the budget and the ceiling, never lowered; only a built-in
default above an operator's lower cap is lowered to it. The per-step limits
sent with each step are therefore exactly the execution's budgets, which
the pool never has to cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from rlm_rs import codec
from rlm_rs.domain.budgets import BUDGETS, BudgetField, Budgets, Consumed, ZeroMeans, default_budgets
from rlm_rs.domain.records import ExecutionRecord
from rlm_rs.errors import RlmError
from rlm_rs.limits import MAX_BATCH_PROMPTS
from rlm_rs.sandbox.policy import POOL_STEP_CEILINGS, configured_pool_policy, default_step_limits
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy, StepLimits
from rlm_rs.v1 import common_pb2

POOL_SOURCE = "the sandbox pool's policy (RLM_SANDBOX_POLICY_JSON)"
REPORTED_SOURCE = "the sandbox pool's policy, as the pool reports it"
SERVICE_SOURCE = "the service's ceiling"
REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Ceilings:
    """The largest value each budget may take here, and where each comes from."""

    values: Mapping[str, float]
    sources: Mapping[str, str]

    @classmethod
    def of(cls, sandbox_policy_json: Mapping[str, Any] | None = None) -> Ceilings:
        """The service's ceilings lowered to the pool's caps (RLM_SANDBOX_POLICY_JSON)."""
        pool = configured_pool_policy(sandbox_policy_json)
        values: dict[str, float] = {name: field.ceiling for name, field in BUDGETS.items()}
        sources = dict.fromkeys(BUDGETS, SERVICE_SOURCE)
        for name in POOL_STEP_CEILINGS:
            capped = getattr(pool, name)
            if capped and capped < values[name]:
                values[name] = BUDGETS[name].unit(capped)
                sources[name] = POOL_SOURCE
        return cls(values, sources)

    def lowered_to(self, pool: SandboxPolicy) -> Ceilings:
        """These ceilings, each per-step one lowered to `pool`'s cap where that is lower."""
        values, sources = dict(self.values), dict(self.sources)
        for name in POOL_STEP_CEILINGS:
            capped = getattr(pool, name)
            if capped and capped < values[name]:
                values[name] = BUDGETS[name].unit(capped)
                sources[name] = REPORTED_SOURCE
        return Ceilings(values, sources)


class CeilingSource:
    """The ceilings in force: the configured ones, lowered to the policy the
    pool last reported. `current` never calls the pool; `refresh` does."""

    def __init__(self, sandbox_policy_json: Mapping[str, Any] | None = None) -> None:
        self.configured = Ceilings.of(sandbox_policy_json)
        self._current = self.configured
        self._next_refresh = 0.0

    def current(self) -> Ceilings:
        return self._current

    def refresh(self, sandbox: Any, *, force: bool = False) -> None:
        """Ask the pool for its policy (at most every REFRESH_SECONDS unless
        forced); an unreachable pool or one that reports none (in-process)
        leaves the last known ceilings."""
        now = time.monotonic()
        if not force and now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_SECONDS
        try:
            reported: SandboxPolicy = sandbox.status().policy
        except Exception:  # unreachable: the sweep asks again later
            return
        if reported.ByteSize():
            self._current = self.configured.lowered_to(reported)


STATIC_CEILINGS = Ceilings(
    {name: field.ceiling for name, field in BUDGETS.items()}, dict.fromkeys(BUDGETS, SERVICE_SOURCE)
)


def budgets_to_dict(budgets: common_pb2.Budgets | None) -> dict[str, Any]:
    """The budgets a message sets (explicit zeros included), as ints and floats."""
    if budgets is None:
        return {}
    return {name: getattr(budgets, name) for name in BUDGETS if budgets.HasField(name)}  # type: ignore[arg-type]


def budgets_from_dict(values: Any) -> common_pb2.Budgets:
    return codec.parse(common_pb2.Budgets, dict(values))


def _checked(field: BudgetField, value: Any, ceilings: Ceilings) -> int | float:
    if (
        not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0
    ):  # NaN passes every comparison below and poisons the record for good
        raise RlmError("VALIDATION_ERROR", f"budget {field.name} must be a finite number >= 0")
    ceiling = ceilings.values[field.name]
    if value > ceiling:
        ceiling = field.unit(ceiling)
        raise RlmError(
            "VALIDATION_ERROR",
            f"budget {field.name} is {value}, above its ceiling {ceiling} ({ceilings.sources[field.name]})",
            {"budget": field.name, "ceiling": ceiling},
        )
    return field.unit(value)


def merge_budgets(*layers: Any, ceilings: Ceilings = STATIC_CEILINGS) -> Budgets:
    """Later layers win; every value validated against its ceiling. A zero
    for a budget whose zero means DEFAULT is "not set here". A built-in
    default above a lower ceiling (an operator's pool cap) becomes the
    ceiling; a value a layer sets above it is refused."""
    defaults: Mapping[str, float] = cast(Mapping[str, float], default_budgets())
    merged: dict[str, Any] = {
        name: BUDGETS[name].unit(min(value, ceilings.values[name])) for name, value in defaults.items()
    }
    for layer in layers:
        for name, value in (layer or {}).items():
            field = BUDGETS.get(name)
            if field is None:
                raise RlmError("VALIDATION_ERROR", f"unknown budget {name!r}")
            checked = _checked(field, value, ceilings)
            if checked == 0 and field.zero is ZeroMeans.DEFAULT:
                continue
            merged[name] = checked
    return cast(Budgets, merged)


def step_limits(budgets: Budgets, *, enable_search: bool) -> StepLimits:
    """The StepLimits a step of this execution runs under: its per-step
    budgets and grants; the rest unset (the pool's defaults)."""
    return StepLimits(
        max_step_seconds=float(budgets["max_step_seconds"]),
        max_spans_per_step=int(budgets["max_spans_per_step"]),
        max_tool_requests_per_step=int(budgets["max_tool_requests_per_step"]),
        max_stdout_chars=int(budgets["max_stdout_chars"]),
        max_state_chars=int(budgets["max_state_chars"]),
        max_llm_prompt_chars=int(budgets["max_llm_prompt_chars"]),
        max_step_wait_seconds=default_step_limits().max_step_wait_seconds,
        enable_search=enable_search,
        enable_llm=int(budgets["max_llm_subcalls"]) > 0,
        enable_rlm=int(budgets["max_rlm_subcalls"]) > 0 and int(budgets["max_depth"]) > 0,
    )


# the per-step limits a step runs under, shown with what is left
STEP_LIMITS = (
    "max_step_seconds", "max_tool_requests_per_step", "max_llm_prompt_chars", "max_spans_per_step",
    "max_stdout_chars", "max_state_chars",
)  # fmt: skip


def snapshot(
    budgets: Budgets, consumed: Consumed, *, started_epoch: float, now: float | None = None
) -> dict[str, Any]:
    """state._budgets and the root prompt's budget line: what is left (the
    seconds counted from `started_epoch` to `now`), and the effective
    per-step limits the next step runs under."""
    elapsed = max((time.time() if now is None else now) - float(started_epoch), 0.0)
    left = {
        "turns_remaining": max(int(budgets["max_turns"]) - int(consumed["turns"]), 0),
        "seconds_remaining": round(max(float(budgets["max_total_seconds"]) - elapsed, 0.0), 3),
        "llm_subcalls_remaining": max(int(budgets["max_llm_subcalls"]) - int(consumed["llm_subcalls"]), 0),
        "llm_prompt_chars_remaining": max(
            int(budgets["max_total_llm_prompt_chars"]) - int(consumed["llm_prompt_chars_total"]), 0
        ),
        "spans_remaining": max(int(budgets["max_spans_total"]) - int(consumed["spans_total"]), 0),
        "max_llm_batch_prompts": MAX_BATCH_PROMPTS,
    }
    budget_values = cast(Mapping[str, float], budgets)
    left.update({name: budget_values[name] for name in STEP_LIMITS})
    return left


def deadline_epoch(execution: ExecutionRecord) -> float:
    """When the execution's max_total_seconds runs out (epoch seconds)."""
    return float(execution["started_epoch"]) + float(execution["budgets_requested"]["max_total_seconds"])
