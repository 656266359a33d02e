"""Attacks through the step's `re` and `json` (rlm_rs/sandbox/_step_re.py,
_step_json.py): catastrophic backtracking, huge results, and walks from the
returned objects to a module, a file or the host. Each runs through the
in-process executor (the policy layers alone: nothing but the wrappers and
the guards can stop it there) and names the wall that stopped it."""

from __future__ import annotations

import inspect
import time

import pytest

from rlm_rs.sandbox._runtime import StepRuntime
from rlm_rs.sandbox._step_json import StepJson
from rlm_rs.sandbox._step_re import StepRe
from rlm_rs.sandbox.client import InProcessSandbox, PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest, StepResult

EVIL = r"(a|aa)+$"  # exponential even for the `regex` engine (measured: minutes at 40 chars)
SUBJECT = "'a' * 40 + 'b'"


def _run(code: str, sandbox: InProcessSandbox | PoolSandbox | None = None, **limits: float) -> StepResult:
    request = StepRequest(
        tenant_id="t", session_id="s", execution_id="e", code=code, state_json="{}",
        limits=StepLimits(max_step_seconds=limits.get("seconds", 10.0),
                             max_regex_seconds=limits.get("regex_seconds", 0.2)),
    )  # fmt: skip
    return (sandbox or InProcessSandbox()).run_step(request)


@pytest.mark.parametrize(
    "call",
    [
        f"re.search(r'{EVIL}', {SUBJECT})",
        f"re.findall(r'{EVIL}', {SUBJECT})",
        f"re.sub(r'{EVIL}', 'x', {SUBJECT})",
        f"re.split(r'{EVIL}', {SUBJECT})",
        f"[m for m in re.compile(r'{EVIL}').finditer({SUBJECT})]",
        f"re.fullmatch(r'{EVIL}', {SUBJECT})",
    ],
)
def test_catastrophic_backtracking_is_cut_by_the_regex_timeout(call: str) -> None:
    """Wall: the engine's timeout (max_regex_seconds); the step catches the
    RuntimeError and goes on, so the timeout, not the step deadline, stopped it."""
    began = time.monotonic()
    result = _run(
        f"try:\n    {call}\nexcept RuntimeError as exc:\n    print('stopped:', exc)\nprint('after')"
    )
    elapsed = time.monotonic() - began
    assert result.success, result.error
    assert result.stdout == "stopped: regex timed out after 0.2 s\nafter\n"
    assert elapsed < 5.0  # the engine checks its clock coarsely (measured up to ~4x under load)


def test_a_regex_past_the_step_deadline_ends_the_step() -> None:
    code = f"while True:\n    try:\n        re.search(r'{EVIL}', {SUBJECT})\n    except RuntimeError:\n        pass"
    result = _run(code, seconds=1.0, regex_seconds=0.3)
    assert result.error.code == "STEP_TIMEOUT", result.error


@pytest.mark.parametrize(
    ("code", "wall"),
    [
        ("re.sub('', 'x' * 10000, 'a' * 100000)", "the result of sub"),
        ("re.sub('a', lambda m: 'x' * 1000000, 'a' * 100)", "the result of sub"),
        ("re.sub('(a+)', r'\\1' * 5000, 'a' * 20000)", "the expanded template"),
        ("re.split('(a)' * 1, 'a' * 11000000)", "the split result"),
        ("re.findall('', 'a' * 11000000)", "the findall result"),
        ("a = []\nfor i in range(40):\n    a = [a, a]\njson.dumps(a)", "the JSON text"),
        ("json.dumps(['x' * 6000000, 'y' * 6000000])", "the JSON text"),
        ("json.dumps(['é' * 2000000], ensure_ascii=True)", "the JSON text"),
        ("json.dumps([0] * 3000000, indent=16)", "the JSON text"),
    ],
)
def test_huge_results_are_refused_before_they_are_built(code: str, wall: str) -> None:
    """Wall: the wrappers' size checks (MemoryError, sandbox size limit); a
    scan over 11M matches may meet its regex timeout or the line budget
    (one tick per match) first."""
    result = _run(code, seconds=20.0)
    assert not result.success
    if "findall" in code or "split" in code:
        assert (
            result.error.code == "SANDBOX_LINE_LIMIT"
            or "regex timed out" in result.error.message
            or ("MemoryError" in result.error.message and wall in result.error.message)
        ), result.error
        return
    assert result.error.code == "SANDBOX_RUNTIME_ERROR", result.error
    assert "MemoryError" in result.error.message and wall in result.error.message
    assert "(sandbox size limit)" in result.error.message


def test_json_input_is_bounded() -> None:
    result = _run("json.loads('[' * 11000000)", seconds=20.0)
    assert "ValueError: json.loads takes at most 10,000,000 chars" in result.error.message
    deep = _run("json.loads('[' * 100000 + ']' * 100000)")
    assert "ValueError: json.loads: the value is nested too deeply" in deep.error.message


def _instances() -> dict[str, tuple[str, object]]:
    runtime = StepRuntime(max_instructions=1000, max_seconds=5, max_stdout_chars=10, max_spans=1)
    step_re = StepRe(runtime, 1.0)
    return {
        "re": ("re", step_re),
        "pattern": ("re.compile('(a)')", step_re.compile("(a)")),
        "match": ("re.search('(a)', 'a')", step_re.search("(a)", "a")),
        "json": ("json", StepJson(runtime)),
    }


@pytest.mark.parametrize("label", ["re", "pattern", "match", "json"])
def test_no_attribute_of_a_returned_object_reaches_a_module_or_function_internals(label: str) -> None:
    """Every public attribute is a plain value or a method bound to the
    wrapper itself; step code reads each one, and the attributes of a bound
    method (`__self__`, `__func__`, `__globals__`) are refused at compile time."""
    expression, instance = _instances()[label]
    names = sorted(name for name in dir(instance) if not name.startswith("_"))
    assert names
    for name in names:
        value = getattr(instance, name)
        if inspect.ismethod(value):
            assert value.__self__ is instance, name
        else:
            assert type(value) in (int, str, dict, tuple, type(None)), (name, type(value))
    code = f"obj = {expression}\nseen = []\n"
    code += "".join(f"seen.append(repr(obj.{name})[:60])\n" for name in names)
    code += "print(seen)"
    result = _run(code)
    assert result.success, result.error
    assert "<module" not in result.stdout and "function" not in result.stdout
    for dunder in ("__self__", "__func__", "__globals__", "__class__", "__dict__"):
        walked = _run(f"obj = {expression}\nprint(obj.{names[0]}.{dunder})")
        assert walked.error.code == "SANDBOX_AST_REJECTED"


@pytest.mark.parametrize(
    "code",
    [
        "re._rt", "re.compile('a')._compiled", "re.search('a', 'a')._match", "json._rt",
        "re.finditer('a', 'a')._it",
    ],
)  # fmt: skip
def test_underscore_slots_are_refused_by_restrictedpython(code: str) -> None:
    result = _run(f"print({code})")
    assert result.error.code == "SANDBOX_AST_REJECTED", result.error


@pytest.mark.parametrize(
    "attribute",
    ["re.sys", "re.regex", "re.os", "json.codecs", "json.decoder", "json.encoder", "json.load",
     "json.dump", "re.search('a', 'a').re", "re.compile('a').scanner", "re.search('a', 'a').regs",
     "re.error", "re.template", "re.purge"],
)  # fmt: skip
def test_no_module_or_file_path_is_exposed(attribute: str) -> None:
    result = _run(f"print({attribute})")
    assert result.error.code == "SANDBOX_RUNTIME_ERROR", result.error
    assert "AttributeError" in result.error.message


def test_the_wrappers_are_not_the_stdlib_modules() -> None:
    runtime = StepRuntime(max_instructions=10, max_seconds=1, max_stdout_chars=10, max_spans=1)
    for wrapper in (StepRe(runtime, 1.0), StepJson(runtime)):
        assert not hasattr(wrapper, "__dict__")  # slots only: nothing to add or walk


@pytest.mark.root
def test_the_hardened_pool_runs_re_and_json(hardened_pool: PoolSandbox) -> None:
    """Pre-imported in the zygote: no lazy import under seccomp."""
    code = (
        "print(re.findall(r'(\\w)=(\\d)', 'a=1 b=2'), json.dumps(json.loads('{\"k\": [1]}'), indent=1))\n"
        f"try:\n    re.search(r'{EVIL}', {SUBJECT})\nexcept RuntimeError as exc:\n    print(exc)"
    )
    result = _run(code, hardened_pool)
    assert result.isolation == "pool"
    assert result.success, result.error
    assert result.stdout == "[('a', '1'), ('b', '2')] {\n \"k\": [\n  1\n ]\n}\nregex timed out after 0.2 s\n"
