"""Root replies: the ```repl/```python blocks anywhere in the reply, in order."""

from __future__ import annotations

import json

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.sandbox._replies import NO_CODE_NOTE, code_from_submission, extract_repl_block
from tests.unit.sandbox.conftest import Runner


def test_single_block_is_accepted() -> None:
    assert extract_repl_block("```repl\nx = 1\nprint(x)\n```\n") == "x = 1\nprint(x)"


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("Here is my code:\n```repl\nx = 1\n```", "x = 1"),
        ("```repl\nx = 1\n```\nThat should work.", "x = 1"),
        ("```python\nx = 1\n```", "x = 1"),
        ("Step one.\n```Python\nx = 1\n```\nStep two.\n```repl\ny = x\n```\nDone.", "x = 1\ny = x"),
        ("```py\nx = 1\n```", "x = 1"),
        ("  ```repl  \nx = 1\n  ```  ", "x = 1"),
        ("```text\nnot code\n```\n```repl\nx = 1\n```", "x = 1"),
        ("```\nbare fence\n```\n```json\n{}\n```\n```python\nx = 1\n```", "x = 1"),
    ],
)
def test_prose_and_several_blocks_are_accepted(reply: str, code: str) -> None:
    assert extract_repl_block(reply) == code


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ("x = 1", "no ```repl block"),
        ("I think the answer is Lisbon.", "no ```repl block"),
        ("```text\nx = 1\n```", "no ```repl block"),
        ("```repl\nx = 1", "not closed"),
        ("```repl\nx = 1\n```\n```python\ny = 2", "not closed"),
    ],
)
def test_a_reply_without_a_whole_code_block_is_rejected(reply: str, fragment: str) -> None:
    with pytest.raises(RlmError) as caught:
        extract_repl_block(reply)
    assert caught.value.code == "SANDBOX_AST_REJECTED"
    assert caught.value.details["reason"] == "reply_format"
    assert fragment in caught.value.message


def test_runtime_mode_accepts_bare_code_or_a_block() -> None:
    assert code_from_submission("x = 1", require_block=False) == "x = 1"
    assert code_from_submission("```repl\nx = 1\n```", require_block=False) == "x = 1"


def test_blocks_run_in_order_as_one_step(run: Runner) -> None:
    reply = "First:\n```repl\nx = 2\n```\nthen\n```python\nprint(x * 21)\n```\nThat is all."
    result = run(reply, require_repl_block=True)
    assert result.success and result.stdout == "42\n"


def test_a_reply_without_code_runs_nothing_and_says_why(run: Runner) -> None:
    result = run("Sure! I will look at the documents.", require_repl_block=True, state={"keep": 1})
    assert result.error.code == "SANDBOX_AST_REJECTED"
    assert result.error.message == NO_CODE_NOTE
    assert json.loads(result.error.details_json)["reason"] == "reply_format"
    assert result.stdout == "" and result.instructions_executed == 0
    assert json.loads(result.state_json) == {"keep": 1}


def test_prose_around_a_long_step_is_allowed(run: Runner) -> None:
    prose = "Reasoning. " * 1_000  # 11,000 chars of prose around the code
    result = run(f"{prose}\n```repl\nprint('ran')\n```\n{prose}", require_repl_block=True)
    assert result.success and result.stdout == "ran\n"
