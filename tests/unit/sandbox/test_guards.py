"""Runtime guards: escapes that compile but must fail when they run."""

from __future__ import annotations

import pytest

from tests.unit.sandbox.conftest import Runner

ESCAPES = [
    ("str.format traversal", "'{0.__class__}'.format(1)", "str.format is not available"),
    ("format_map traversal", "'{x}'.format_map({'x': 1})", "str.format is not available"),
    ("unbound str.format", "str.format('{0.args}', ValueError())", "str.format is not available"),
    ("unbound str.format_map", "str.format_map('{x}', {'x': 1})", "str.format is not available"),
    ("AttributeError.obj leak", "try:\n    context.nope\nexcept AttributeError as e:\n    e.obj",
     "only .args of an exception"),
    ("exception traceback", "try:\n    1/0\nexcept Exception as e:\n    e.with_traceback",
     "only .args of an exception"),
    ("write to a DocView", "d = context[0]\nd.name = 'x'", "cannot assign"),
    ("item write to a str", "s = 'abc'\ns[0] = 'x'", "cannot assign"),
    ("print to a file object", "print('x', file=state)", "print() takes only sep and end"),
    ("doc slice with step", "context[0][::2]", "document slices take no step"),
    ("float doc index", "context[0][1.5]", "indexed by int or slice"),
    ("method of a str returning type", "x = 'a'.maketrans", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "code", "message"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escape_fails_at_run_time(run: Runner, name: str, code: str, message: str | None) -> None:
    result = run(code)
    if message is None:  # harmless: must simply work
        assert result.success, result.error
        return
    assert not result.success, name
    assert result.error.code == "SANDBOX_RUNTIME_ERROR"
    assert message in result.error.message


def test_generator_frames_are_unreachable(run: Runner) -> None:
    result = run("g = (x for x in [1])\nnext(g)\nprint(repr(g))")
    assert result.success  # a generator is usable, its internals are not (see rejection corpus)


def test_unsafe_mode_is_refused_without_permission(run: Runner) -> None:
    from rlm_rs.sandbox.executor import run_step
    from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest

    request = StepRequest(code="import os", unsafe_disable_policy_layers=True)
    refused = run_step(request)
    assert refused.error.code == "VALIDATION_ERROR"
    allowed = run_step(request, allow_unsafe=True)
    assert allowed.success  # the policy layers are off: only the OS layers would stop it


def test_class_attributes_of_safe_builtin_types(run: Runner) -> None:
    result = run(
        "print(dict.fromkeys(['a'], 0), str.maketrans('a', 'b'), float.fromhex('0x1p1'),"
        " sorted(['b', 'A'], key=str.lower), str.join('-', ['x', 'y']), str.zfill('7', 3))"
    )
    assert result.success, result.error
    assert result.stdout == "{'a': 0} {97: 98} 2.0 ['A', 'b'] x-y 007\n"
    for code in ["print(str.mro())", "print(list.mro())"]:
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR", code
        assert "mro" in result.error.message and "AttributeError" in result.error.message


def test_tool_exposes_no_way_around_its_limits(run: Runner) -> None:
    for code in ["r = tool.requests()", "tool._requests", "tool.queue_llm.__self__"]:
        result = run(code)
        assert not result.success, code
        assert not result.tool_requests.llm
