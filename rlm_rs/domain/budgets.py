"""The one model of an execution's budgets and of what it has consumed.

Each budget has a unit (int or float), a built-in default, a ceiling (from
rlm_rs/limits.py, which the gateway advertises) and an explicit meaning for
zero:
  DEFAULT    0 is "not set here": merging keeps the layer below's value (the
             per-step limits; the sandbox reads a zero step limit the same way)
  NOTHING    0 allows none: no turn, no second, no span, no sub-call, no child
  UNLIMITED  0 is no cap (max_cost_usd: the tenant's own bill cap)
`Budgets` and `Consumed` are the shapes stored in an execution record
(budgets_requested, budgets_consumed) and sent as the proto messages of the
same names. Every field of the Budgets message is `proto3 optional`: a
request's unset budget is absent from its dict (the layer below applies), an
explicit 0 is present and means the above. Standard library only: the
gateway and the sandbox may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypedDict, cast, get_type_hints

from rlm_rs.limits import BUDGET_CEILINGS


class Budgets(TypedDict):
    max_turns: int
    max_total_seconds: float
    max_step_seconds: float
    max_spans_total: int
    max_spans_per_step: int
    max_tool_requests_per_step: int
    max_llm_subcalls: int
    max_llm_prompt_chars: int
    max_total_llm_prompt_chars: int
    max_stdout_chars: int
    max_state_chars: int
    max_rlm_subcalls: int
    max_depth: int
    max_cost_usd: float


class Consumed(TypedDict):
    turns: int
    llm_subcalls: int
    total_seconds: float
    spans_total: int
    llm_prompt_chars_total: int
    rlm_subcalls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cache_hits: int


class ZeroMeans(StrEnum):
    DEFAULT = "default"
    NOTHING = "nothing"
    UNLIMITED = "unlimited"


@dataclass(frozen=True)
class BudgetField:
    name: str
    unit: type[int] | type[float]
    default: int | float
    ceiling: int | float
    zero: ZeroMeans
    meaning: str  # what it bounds; with ZeroMeans.NOTHING, also what 0 does


_D, _N, _U = ZeroMeans.DEFAULT, ZeroMeans.NOTHING, ZeroMeans.UNLIMITED
_FIELDS: tuple[tuple[str, int | float, ZeroMeans, str], ...] = (
    ("max_turns", 20, _N, "turns in all (0: ends MAX_TURNS_EXCEEDED before its first)"),
    ("max_total_seconds", 180.0, _N, "wall-clock seconds from the start (0: ends BUDGET_EXCEEDED at once)"),
    ("max_step_seconds", 30.0, _D, "wall-clock seconds of one step"),
    ("max_spans_total", 2_000, _N, "spans read in all (0: the first span read ends it BUDGET_EXCEEDED)"),
    ("max_spans_per_step", 200, _D, "spans one step may read"),
    ("max_tool_requests_per_step", 500, _D, "tool requests one step may queue (a batch prompt is one)"),
    ("max_llm_subcalls", 1_000, _N, "sub-model calls in all (0: sub-calls are off)"),
    ("max_llm_prompt_chars", 200_000, _D, "characters of one sub-call's prompt"),
    (
        "max_total_llm_prompt_chars",
        10_000_000,
        _N,
        "characters of all sub-call prompts (0: every one refused)",
    ),
    ("max_stdout_chars", 15_000, _D, "characters of one step's stdout"),
    ("max_state_chars", 500_000, _D, "characters of the model-owned state's canonical JSON"),
    ("max_rlm_subcalls", 10, _N, "child executions in all (0: tool.queue_rlm is off)"),
    ("max_depth", 2, _N, "levels of child executions below this one (0: no children)"),
    ("max_cost_usd", 0.0, _U, "USD of model calls, children included (0: no cap)"),
)
_UNITS = get_type_hints(Budgets)
BUDGETS: Final[MappingProxyType[str, BudgetField]] = MappingProxyType(
    {
        name: BudgetField(name, _UNITS[name], _UNITS[name](default), BUDGET_CEILINGS[name], zero, meaning)
        for name, default, zero, meaning in _FIELDS
    }
)
if set(BUDGETS) != set(_UNITS) or set(BUDGETS) != set(BUDGET_CEILINGS):
    raise ImportError("Budgets, the budget table and BUDGET_CEILINGS name different budgets")


def default_budgets() -> Budgets:
    """Every budget at its built-in default."""
    # the table's names are Budgets' keys (checked at import above)
    return cast(Budgets, {name: field.default for name, field in BUDGETS.items()})


@dataclass(frozen=True)
class ConsumedField:
    name: str
    unit: type[int] | type[float]
    meaning: str
    rolls_up: bool  # a child's consumption is added to its parent's


CONSUMED: Final[MappingProxyType[str, ConsumedField]] = MappingProxyType(
    {
        name: ConsumedField(name, unit, meaning, rolls_up)
        for name, unit, meaning, rolls_up in (
            ("turns", int, "turns committed", False),
            ("llm_subcalls", int, "sub-model calls made (cache hits included)", True),
            ("total_seconds", float, "wall-clock seconds, set when the execution ends", False),
            ("spans_total", int, "spans read", True),
            ("llm_prompt_chars_total", int, "characters of sub-call prompts", True),
            ("rlm_subcalls", int, "child executions (each child adds one)", True),
            ("input_tokens", int, "model input tokens, root and sub-calls", True),
            ("output_tokens", int, "model output tokens", True),
            ("cost_usd", float, "USD of model calls (rlm_rs/control/costs.py)", True),
            ("cache_hits", int, "sub-calls answered from the cache", True),
        )
    }
)
if set(CONSUMED) != set(get_type_hints(Consumed)):
    raise ImportError("Consumed and the consumption table name different counters")


def consumed_zero() -> Consumed:
    return cast(Consumed, {name: field.unit(0) for name, field in CONSUMED.items()})
