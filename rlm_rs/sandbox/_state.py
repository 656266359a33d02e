"""Step state: JSON values only, within a size limit, reserved keys protected.

State is a JSON object. Allowed values: dict with str keys, list (tuples are
accepted and become lists, as json does), str, int, finite float, bool, None.
Anything else -> STATE_INVALID_TYPE with the path; canonical JSON longer than
max_state_chars -> STATE_TOO_LARGE; the limit applies to the model-owned keys
(the reserved ones, tool results included, are bounded by the control plane).
Keys starting with "_" are owned by the orchestrator: the step may read them,
but its changes are discarded.
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
    int in a list) is the number of characters of canonical JSON allowed;
    past it, STATE_TOO_LARGE. Each container is walked once however often it
    is referenced, with its JSON length and nesting height memoised per
    object, so a shared-reference bomb (`c = [[[1] * 1000] * 1000] * 1000`,
    `a = [a, a]` sixty times, `['a' * 10**7] * 1000`) is refused after a walk
    of its distinct objects, never serialised or visited per reference."""
    _Walk(budget[0] if budget is not None else None).size(value, path, depth)


class _Walk:
    """One JSON check: lower bounds of canonical JSON length, memoised per container."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.limit = budget
        self.memo: dict[int, tuple[int, int]] = {}  # id -> (json chars, nesting height)
        self.on_path: set[int] = set()

    def size(self, value: Any, path: str, depth: int) -> tuple[int, int]:
        kind = type(value)
        if kind not in (dict, list, tuple):
            return self._scalar(value, kind, path), 0
        known = self.memo.get(id(value))
        if known is not None:
            if depth + known[1] > _MAX_DEPTH:
                raise RlmError("STATE_INVALID_TYPE", f"{path}: nested deeper than {_MAX_DEPTH} levels")
            return self._charge(known[0], path), known[1]
        if depth > _MAX_DEPTH or id(value) in self.on_path:
            raise RlmError("STATE_INVALID_TYPE", f"{path}: nested deeper than {_MAX_DEPTH} levels")
        self.on_path.add(id(value))
        total, height = 2 + max(len(value) - 1, 0), 0
        self._charge(total, path)
        # The walk recurses through `size` alone (one frame a level).
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise RlmError(
                        "STATE_INVALID_TYPE", f"{path}: key {key!r} is not a string", {"path": path}
                    )
                key_size = self._charge(len(key) + 3, path)
                item_size, item_height = self.size(item, f"{path}[{key!r}]", depth + 1)
                total += key_size + item_size
                height = max(height, item_height + 1)
        else:
            for index, item in enumerate(value):
                item_size, item_height = self.size(item, f"{path}[{index}]", depth + 1)
                total += item_size
                height = max(height, item_height + 1)
        self.on_path.discard(id(value))
        self.memo[id(value)] = (total, height)
        return total, height

    def _scalar(self, value: Any, kind: type, path: str) -> int:
        """The JSON length of a value that is not a container; raises unless it is JSON."""
        if value is None or kind is bool:
            return 4
        if kind is str:
            return self._charge(len(value) + 2, path)
        if kind is int:
            bits = abs(value).bit_length()
            if bits > _MAX_INT_BITS:  # canonical JSON could not even write it
                raise RlmError(
                    "STATE_INVALID_TYPE",
                    f"{path}: an integer of more than {_MAX_INT_BITS} bits is not JSON here",
                    {"path": path, "max_int_bits": _MAX_INT_BITS},
                )
            return self._charge(len(str(value)) if bits < 60 else bits * 3 // 10, path)
        if kind is float:
            if not math.isfinite(value):
                raise RlmError("STATE_INVALID_TYPE", f"{path}: NaN/Infinity is not JSON", {"path": path})
            return 3
        raise RlmError(
            "STATE_INVALID_TYPE",
            f"{path}: a {kind.__name__} is not a JSON value",
            {"path": path, "type": kind.__name__},
        )

    def _charge(self, chars: int, path: str) -> int:
        if self.budget is not None:
            self.budget -= chars
            if self.budget < 0:
                root = path.split("[", 1)[0]
                raise RlmError(
                    "STATE_TOO_LARGE",
                    f"{root} would be more than {self.limit} chars of JSON",
                    {"path": path, "limit": self.limit},
                )
        return chars


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
    owned = {k: v for k, v in merged.items() if not k.startswith("_")}  # the reserved keys are bounded
    check_json_value(owned, budget=[max_state_chars])  # by the control plane, not by this limit
    owned_chars = len(canonical_json(owned))
    if owned_chars > max_state_chars:
        raise RlmError(
            "STATE_TOO_LARGE",
            f"state is {owned_chars} chars of canonical JSON; the limit is {max_state_chars}",
            {"state_chars": owned_chars, "max_state_chars": max_state_chars},
        )
    return canonical_json(merged)
