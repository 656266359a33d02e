"""Root replies: exactly one ```repl block, nothing outside it."""

from __future__ import annotations

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.sandbox._replies import code_from_submission, extract_repl_block
from tests.unit.sandbox.conftest import Runner


def test_single_block_is_accepted() -> None:
    assert extract_repl_block("```repl\nx = 1\nprint(x)\n```\n") == "x = 1\nprint(x)"


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ("Here is my code:\n```repl\nx = 1\n```", "text before"),
        ("```repl\nx = 1\n```\nThat should work.", "not closed"),
        ("```repl\nx = 1\n```\n```repl\ny = 2\n```", "second fence"),
        ("```python\nx = 1\n```", "exactly one ```repl"),
        ("x = 1", "exactly one ```repl"),
        ("```repl\nx = 1", "not closed"),
    ],
)
def test_prose_or_a_second_block_is_rejected(reply: str, fragment: str) -> None:
    with pytest.raises(RlmError) as caught:
        extract_repl_block(reply)
    assert caught.value.code == "SANDBOX_AST_REJECTED"
    assert fragment in caught.value.message


def test_runtime_mode_accepts_bare_code_or_a_block() -> None:
    assert code_from_submission("x = 1", require_block=False) == "x = 1"
    assert code_from_submission("```repl\nx = 1\n```", require_block=False) == "x = 1"


def test_answerer_reply_is_rejected_before_execution(run: Runner) -> None:
    result = run("Sure!\n```repl\nprint('ran')\n```", require_repl_block=True)
    assert result.error.code == "SANDBOX_AST_REJECTED"
    assert result.stdout == ""
    ok = run("```repl\nprint('ran')\n```", require_repl_block=True)
    assert ok.success and ok.stdout == "ran\n"
