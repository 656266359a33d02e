"""The step's input state is the same canonical JSON whether it is spliced
from the carried text or encoded from the state (turn.with_budgets)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_rs.canonical import canonical_json
from rlm_rs.control.executions.turn import with_budgets

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# the orchestrator's keys, and keys a step's code may add (some sort before `_budgets`)
_keys = st.sampled_from(["work", "_tool_results", "_tool_status", "_history", "A", "0", "_a", "é", "~"])


@settings(max_examples=300, deadline=None)
@given(state=st.dictionaries(_keys, _json, max_size=5), left=st.dictionaries(st.text(), st.integers()))
def test_spliced_input_state_is_canonical(state: dict[str, Any], left: dict[str, Any]) -> None:
    expected = canonical_json({**state, "_budgets": left})
    assert with_budgets(state, canonical_json(state), left) == expected
    assert with_budgets(state, None, left) == expected


def test_the_usual_state_is_spliced_not_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_rs.control.executions import turn

    encoded: list[Any] = []

    def counting(value: Any) -> str:
        encoded.append(value)
        return canonical_json(value)

    monkeypatch.setattr(turn, "canonical_json", counting)
    state = {"work": {"n": 1}, "_tool_status": {}}
    spliced = turn.with_budgets(state, canonical_json(state), {"turns_remaining": 3})
    assert spliced == '{"_budgets":{"turns_remaining":3},"_tool_status":{},"work":{"n":1}}'
    assert encoded == [{"turns_remaining": 3}]  # only the small snapshot, never the state
