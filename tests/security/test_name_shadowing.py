"""Ordinary names a step may bind (id, type, code, input, open, ...): binding
one never reaches a builtin, a module or an escape.

The AST policy lets a step bind the unavailable names (rlm_rs/sandbox/_ast_policy.py
UNAVAILABLE_NAMES) and still refuses reading one the step never binds; the
wall behind it is the step's builtins, where none of these names exists, so
a read that runs before the binding is a NameError. The refused names (the
escape hatches and the stop signal's names) stay refused in every position,
and the error lists them. Each attack runs in-process (the policy layers
alone) and through the hardened pool.
"""

from __future__ import annotations

import json

import pytest

from rlm_rs.sandbox._ast_policy import REFUSED_NAMES, UNAVAILABLE_NAMES
from rlm_rs.sandbox._restricted import Guards
from rlm_rs.sandbox._runtime import StepRuntime
from rlm_rs.sandbox.client import InProcessSandbox, PoolSandbox
from rlm_rs.sandbox.policy import default_policy
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest, StepResult


def _run(code: str, sandbox: InProcessSandbox | PoolSandbox | None = None) -> StepResult:
    request = StepRequest(
        tenant_id="t", session_id="s", execution_id="e", code=code, state_json="{}",
        limits=StepLimits(max_step_seconds=5.0),
    )  # fmt: skip
    return (sandbox or InProcessSandbox()).run_step(request)


@pytest.mark.parametrize("name", sorted(UNAVAILABLE_NAMES))
def test_an_unavailable_name_may_be_bound_and_used(name: str) -> None:
    result = _run(f"{name} = 'mine'\nprint({name})\nfor {name} in [1]:\n    pass\nprint({name} + 1)")
    assert result.success, result.error
    assert result.stdout == "mine\n2\n"


def test_the_issue_s_line_splits_into_ordinary_names() -> None:
    result = _run(
        'id, date, user, text = "7 | 2024-01-02 | ana | hi".split(" | ")\n'
        "def show(code, type, input):\n    return f'{code}/{type}/{input}'\n"
        "print(show(id, date, user), text)"
    )
    assert result.success, result.error
    assert result.stdout == "7/2024-01-02/ana hi\n"


@pytest.mark.parametrize("name", sorted(UNAVAILABLE_NAMES))
def test_a_read_before_the_binding_reaches_no_builtin(name: str) -> None:
    """The AST layer lets it through (the step binds the name somewhere);
    the builtins wall answers NameError."""
    result = _run(f"if len(context) < 0:\n    {name} = 1\nprint({name})")
    assert result.error.code == "SANDBOX_RUNTIME_ERROR", result.error
    assert f"NameError: name '{name}' is not defined" in result.error.message


def test_no_unavailable_or_refused_name_is_a_step_builtin() -> None:
    guards = Guards(StepRuntime(max_instructions=10, max_seconds=1, max_stdout_chars=10, max_spans=1))
    builtins = guards.globals(default_policy().builtins_allowlist)["__builtins__"]
    assert not (UNAVAILABLE_NAMES | REFUSED_NAMES) & set(builtins)
    # a narrower or hostile allowlist cannot add one either
    hostile = guards.builtins(sorted(UNAVAILABLE_NAMES | REFUSED_NAMES))
    assert hostile == {}


@pytest.mark.parametrize(
    ("technique", "code"),
    [
        ("unbind then call", "open = 1\ndel open\nprint(open('/etc/passwd').read())"),
        ("conditional binding", "if False:\n    type = 0\nprint(type(context).mro())"),
        ("parameter default", "def f(open=None):\n    return open\nf()('/etc/passwd')"),
        ("comprehension scope", "[input for input in [1]]\nprint(input())"),
        ("function name then rebinding", "def id(x):\n    return x\ndel id\nprint(id(context))"),
        ("except-as unbinds", "try:\n    1 / 0\nexcept ZeroDivisionError as code:\n    pass\nprint(code)"),
    ],
)
def test_shadowing_reaches_no_builtin_or_file(technique: str, code: str) -> None:
    result = _run(code)
    assert not result.success, technique
    assert result.error.code == "SANDBOX_RUNTIME_ERROR", (technique, result.error)
    assert "NameError" in result.error.message or "TypeError" in result.error.message, result.error
    assert "root:" not in result.stdout


def test_a_shadowed_name_holds_only_the_step_s_own_values() -> None:
    result = _run("type = context\nid = tool\nprint(type._docs)")
    assert result.error.code == "SANDBOX_AST_REJECTED"
    assert json.loads(result.error.details_json)["layer"] == "restrictedpython"


def test_shadowing_exception_does_not_make_the_stop_catchable() -> None:
    """Bare `except:` means `except Exception:`; binding Exception changes what
    it catches, never to the stop signal (a BaseException no step can name)."""
    result = _run("Exception = ValueError\nwhile True:\n    try:\n        pass\n    except:\n        pass")
    assert result.error.code == "SANDBOX_LINE_LIMIT", result.error


@pytest.mark.parametrize("name", sorted(REFUSED_NAMES - {"__builtins__", "__build_class__", "__import__"}))
@pytest.mark.parametrize("form", ["{name} = 1", "def f({name}):\n    pass", "for {name} in []:\n    pass"])
def test_refused_names_stay_refused_and_the_error_lists_them(name: str, form: str) -> None:
    result = _run("print('ran')\n" + form.format(name=name))
    assert result.error.code == "SANDBOX_AST_REJECTED", result.error
    assert json.loads(result.error.details_json)["layer"] == "ast_policy"
    listed = result.error.message.split("the refused names are: ", 1)[1].split(", ")
    assert set(listed) == REFUSED_NAMES
    assert result.stdout == "" and result.instructions_executed == 0


@pytest.mark.root
@pytest.mark.parametrize(
    "code",
    ["if False:\n    open = 0\nprint(open('/etc/passwd').read())", "open = 1\ndel open\nopen('/etc/passwd')"],
)
def test_the_hardened_pool_answers_name_error_too(hardened_pool: PoolSandbox, code: str) -> None:
    result = _run(code, hardened_pool)
    assert result.isolation == "pool"
    assert result.error.code == "SANDBOX_RUNTIME_ERROR" and "NameError" in result.error.message
    assert "root:" not in result.stdout
