"""Step state: JSON values only, within a size limit, reserved keys protected.

State is a JSON object. Allowed values: dict with str keys, list (tuples are
accepted and become lists, as json does), str, int, finite float, bool, None.
Anything else -> STATE_INVALID_TYPE with the path; canonical JSON longer than
max_state_chars -> STATE_TOO_LARGE. Keys starting with "_" are owned by the
orchestrator: the step may read them, but its changes are discarded.
"""

from __future__ import annotations

import math
from typing import Any

from rlm_rs.canonical import canonical_json
from rlm_rs.errors import RlmError

_MAX_DEPTH = 64
# Python refuses str() of ints past 4,300 digits; 14,000 bits is ~4,214 digits
_MAX_INT_BITS = 14_000


def check_json_value(
    value: Any, path: str = "state", depth: int = 0, budget: list[int] | None = None
) -> None:
    """Raise STATE_INVALID_TYPE unless `value` is plain JSON. `budget` (one
    int in a list) is the number of values still allowed: every JSON value
    costs at least one character, so a state with more values than
    max_state_chars is too large, and this walk stops there instead of
    visiting a shared-reference bomb (`c = [[[1] * 1000] * 1000] * 1000`)."""
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise RlmError(
                "STATE_TOO_LARGE",
                "state holds more values than max_state_chars allows",
                {"path": path},
            )
    if depth > _MAX_DEPTH:
        raise RlmError("STATE_INVALID_TYPE", f"{path}: nested deeper than {_MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind in (str, bool):
        return
    if kind is int:
        if value.bit_length() > _MAX_INT_BITS:  # str() of it would raise ValueError
            raise RlmError(
                "STATE_INVALID_TYPE",
                f"{path}: an integer over {_MAX_INT_BITS} bits (about 4,200 digits) is not JSON here",
                {"path": path},
            )
        return
    if kind is float:
        if not math.isfinite(value):
            raise RlmError("STATE_INVALID_TYPE", f"{path}: NaN/Infinity is not JSON", {"path": path})
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise RlmError(
                    "STATE_INVALID_TYPE",
                    f"{path}: key {key!r} is not a string",
                    {"path": path},
                )
            check_json_value(item, f"{path}[{key!r}]", depth + 1, budget)
        return
    if kind in (list, tuple):
        for index, item in enumerate(value):
            check_json_value(item, f"{path}[{index}]", depth + 1, budget)
        return
    raise RlmError(
        "STATE_INVALID_TYPE",
        f"{path}: a {kind.__name__} is not a JSON value",
        {"path": path, "type": kind.__name__},
    )


def merge_reserved(code_state: Any, input_state: dict[str, Any]) -> dict[str, Any]:
    """The step's state with every reserved ("_") key restored from the input."""
    if type(code_state) is not dict:
        raise RlmError("STATE_INVALID_TYPE", "state must stay a JSON object (dict)", {"path": "state"})
    merged = {k: v for k, v in code_state.items() if not (type(k) is str and k.startswith("_"))}
    merged.update({k: v for k, v in input_state.items() if k.startswith("_")})
    return merged


def finish_state(code_state: Any, input_state: dict[str, Any], max_state_chars: int) -> str:
    """Validated canonical JSON of the state a step leaves behind."""
    merged = merge_reserved(code_state, input_state)
    check_json_value(merged, budget=[max_state_chars])
    text = canonical_json(merged)
    if len(text) > max_state_chars:
        raise RlmError(
            "STATE_TOO_LARGE",
            f"state is {len(text)} chars of canonical JSON; the limit is {max_state_chars}",
            {"state_chars": len(text), "max_state_chars": max_state_chars},
        )
    return text
