"""Hostile-input fuzzing (hypothesis) of the three parsers in front of every step:
the root-reply parser, the AST policy + RestrictedPython compile, and the JSON
state validator. Each must answer with a spec error or a result, never crash,
and never run code it rejected. CI runs a short budget; set
RLM_FUZZ_EXAMPLES (e.g. 20000) for a longer run."""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_rs.errors import RlmError
from rlm_rs.sandbox._ast_policy import parse_and_check
from rlm_rs.sandbox._replies import extract_repl_block
from rlm_rs.sandbox._restricted import compile_step
from rlm_rs.sandbox._state import check_json_value, finish_state
from rlm_rs.sandbox.executor import run_step
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest

EXAMPLES = int(os.environ.get("RLM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

PY_TOKENS = st.sampled_from([
    "x", "y", "_", "__class__", "__import__", "(", ")", "[", "]", "{", "}", ":", ",", ".", "=", "+", "*",
    "**", "lambda", "def", "class", "import", "from", "os", "try", "except", "finally", "for", "in",
    "while", "yield", "await", "async", "global", "nonlocal", "print", "state", "context", "tool",
    "'s'", "f'{x}'", "1", "10**9", "\n", "    ", "#", "\\", "gi_frame", "format", "getattr", "eval",
])  # fmt: skip
CODE = st.one_of(st.text(max_size=300), st.lists(PY_TOKENS, max_size=60).map(" ".join))


REPLY_LINES = st.sampled_from(
    ["```repl", "```python", "```py", "```", "```text", "  ```  ", "x = 1", "print(x)", "prose", ""]
)
REPLY = st.one_of(st.text(max_size=500), st.lists(REPLY_LINES, max_size=20).map("\n".join))


@FUZZ
@given(REPLY)
def test_reply_parser_accepts_or_rejects_cleanly(reply: str) -> None:
    try:
        code = extract_repl_block(reply)
    except RlmError as error:
        assert error.code == "SANDBOX_AST_REJECTED"
        return
    assert "```" in reply
    assert not any(line.strip() == "```" for line in code.split("\n"))


@FUZZ
@given(CODE)
def test_ast_policy_and_compile_never_crash(code: str) -> None:
    try:
        compile_step(parse_and_check(code, 100_000))
    except RlmError as error:
        assert error.code == "SANDBOX_AST_REJECTED"
        assert error.details.get("layer") in ("ast_policy", "restrictedpython")


@FUZZ
@given(CODE)
def test_a_rejected_step_runs_nothing(code: str) -> None:
    result = run_step(StepRequest(code="print('ran')\n" + code, state_json='{"k": 1}'))
    if not result.success and result.error.code == "SANDBOX_AST_REJECTED":
        assert result.stdout == "" and result.instructions_executed == 0
        assert json.loads(result.state_json) == {"k": 1}
    else:
        assert result.error.code in (
            "",
            "SANDBOX_RUNTIME_ERROR",
            "SANDBOX_LINE_LIMIT",
            "BUDGET_EXCEEDED",
            "STATE_INVALID_TYPE",
            "STATE_TOO_LARGE",
            "STEP_TIMEOUT",
        ), result.error


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=5) | st.sets(st.integers(), max_size=3),
    lambda children: st.lists(children, max_size=4) | st.tuples(children)
    | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=4),
    max_leaves=30,
)  # fmt: skip


@FUZZ
@given(JSONISH)
def test_state_validator_accepts_exactly_json(value: object) -> None:
    state = {"work": value}
    try:
        check_json_value(state)
    except RlmError as error:
        assert error.code == "STATE_INVALID_TYPE"
        return
    text = finish_state(state, {}, 10_000_000)
    assert json.loads(text) == json.loads(json.dumps(state, allow_nan=False))


def test_code_that_parses_but_does_not_compile_is_rejected() -> None:
    # found by this fuzzer: ast.parse accepts these, compile() raises SyntaxError
    for code in ("yield 1", "await x", "return 5", "x = 1\nbreak"):
        result = run_step(StepRequest(code=code))
        assert result.error.code == "SANDBOX_AST_REJECTED", (code, result.error)
        assert json.loads(result.error.details_json)["layer"] in ("ast_policy", "restrictedpython")
