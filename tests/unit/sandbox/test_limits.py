"""Per-step limits: lines, stdout, wall clock; none can be caught by the step."""

from __future__ import annotations

import pytest

from tests.unit.sandbox.conftest import Runner, state_of


def test_line_limit_stops_an_endless_loop(run: Runner) -> None:
    result = run("while True:\n    pass", max_instructions=10_000)
    assert result.error.code == "SANDBOX_LINE_LIMIT"
    assert result.instructions_executed == 10_001


def test_line_limit_cannot_be_caught_or_outlived_by_finally(run: Runner) -> None:
    code = (
        "try:\n    while True:\n        pass\n"
        "except:\n    state['caught'] = 1\n"
        "finally:\n    state['finally'] = 1\n    print('escaped')\n"
        "state['after'] = 1\n"
    )
    result = run(code, max_instructions=1_000)
    assert result.error.code == "SANDBOX_LINE_LIMIT"
    assert result.stdout == ""
    assert state_of(result) == {}


def test_exception_handler_cannot_catch_the_limit(run: Runner) -> None:
    code = (
        "def spin():\n    while True:\n        pass\n"
        "for attempt in range(3):\n    try:\n        spin()\n    except Exception:\n"
        "        print('caught', attempt)\n"
    )
    result = run(code, max_instructions=500)
    assert result.error.code == "SANDBOX_LINE_LIMIT" and result.stdout == ""


def test_comprehensions_and_builtins_count_iterations(run: Runner) -> None:
    for code in [
        "x = [i for i in range(10**9)]",
        "x = sum(range(10**9))",
        "x = sorted(range(10**9))",
        "x = list(range(10**9))",
        "x = max(i for i in range(10**9))",
    ]:
        result = run(code, max_instructions=5_000)
        assert result.error.code == "SANDBOX_LINE_LIMIT", code


def test_wall_clock_limit_in_process(run: Runner) -> None:
    result = run("while True:\n    pass", max_step_seconds=0.2, max_instructions=10**12)
    assert result.error.code == "STEP_TIMEOUT"


def test_stdout_is_truncated(run: Runner) -> None:
    result = run("for i in range(100):\n    print('line', i)", max_stdout_chars=50)
    assert result.success
    assert len(result.stdout) == 50 and result.stdout_truncated
    assert result.stdout.startswith("line 0\nline 1\n")


def test_memory_bombs_are_refused_before_allocating(run: Runner) -> None:
    for code in ["x = 'a' * 10**10", "x = [0] * 10**10", "x = 10 ** 10**7", "x = 1 << 10**9",
                 "x = pow(7, 10**8)", "s = 'ab' * 10**6\ns *= 10**5",
                 "x = 'x'.encode() * 10**10", "x = [0] * 20_000_000",
                 "x = [0] * 9_000_000\nx += x"]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR", code
        assert "MemoryError" in result.error.message


def test_source_length_is_capped_before_parsing(run: Runner) -> None:
    result = run("x = 1\n" * 1000, max_code_chars=100)
    assert result.error.code == "SANDBOX_AST_REJECTED"


def test_compile_bombs_are_rejected_cleanly(run: Runner) -> None:
    for code in ["x = " + "(" * 200_000 + ")" * 200_000, "x = 1" + "+1" * 100_000,
                 "x = " + "-" * 100_000 + "1"]:  # fmt: skip
        result = run(code, max_code_chars=1_000_000)
        assert not result.success
        assert result.error.code == "SANDBOX_AST_REJECTED", result.error


def test_runtime_error_reports_line_and_keeps_state(run: Runner) -> None:
    result = run("state['a'] = 1\nprint('before')\nx = undefined_name", state={"old": 1})
    assert result.error.code == "SANDBOX_RUNTIME_ERROR"
    assert "NameError" in result.error.message and "(line 3)" in result.error.message
    assert result.stdout == "before\n"
    assert state_of(result) == {"old": 1}


def test_size_setting_str_methods_and_format_specs_are_bounded(run: Runner) -> None:
    for code in ["x = 'a'.ljust(10**9)", "x = '1'.zfill(10**9)", "x = 'a'.center(10**9)",
                 "x = ('\\t' * 1000).expandtabs(10**6)",
                 "s = 'a' * 10**7\nx = s.replace('a', 'aaaaaa')",
                 "x = ('x' * 10**7).join(['a'] * 100)", "x = b'a'.ljust(10**9)",
                 "x = (b'a' * 10**7).replace(b'a', b'aaaaaa')", "x = str.ljust('a', 10**9)",
                 "x = str.join('x' * 10**7, ['a'] * 100)"]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR", code
        assert "MemoryError" in result.error.message, code
    for code in ["n = 1\nx = f'{n:>1000000000}'", "n = 1.5\nx = f'{n:.999999999f}'",
                 "n = 1\nw = 10**9\nx = f'{n:>{w}}'", "x = '%1000000000d' % 1",
                 "x = '%.999999999f' % 1.5", "x = '%*d' % (10**9, 1)",
                 "x = b'%1000000000d' % 1", "x = '%s%1000000000s'\nx %= ('a', 'b')"]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_RUNTIME_ERROR", code
        assert "format width/precision" in result.error.message, code


def test_bounded_str_methods_and_format_specs_still_work(run: Runner) -> None:
    code = (
        "x = 3.14159\nw = 8\n"
        "print(f\"{x:>{w}.2f}|{'a'!r:^5}|{x!s:>6}|{x!r}|{w:,}|{'-'.join(['a', 'b'])}\")\n"
        "print(', '.join(str(i) for i in range(3)), 'ab'.replace('a', 'xyz'), '7'.zfill(3),"
        " 'a'.center(5, '*'), 'a\\tb'.expandtabs(4))\n"
        "print('%5.1f|%-3s|%d%%' % (2.25, 'x', 7), 7 % 3)"
    )
    result = run(code)
    assert result.success, result.error
    assert (
        result.stdout
        == "    3.14| 'a' |3.14159|3.14159|8|a-b\n0, 1, 2 xyzb 007 **a** a   b\n  2.2|x  |7% 1\n"
    )


def test_shared_reference_state_bomb_is_too_large_without_walking_it(run: Runner) -> None:
    result = run("a = [1] * 1000\nb = [a] * 1000\nstate['x'] = [b] * 1000", state={"k": 1})
    assert result.error.code == "STATE_TOO_LARGE"
    assert state_of(result) == {"k": 1}


def test_suspended_generator_cleanup_runs_no_step_code_after_a_stop(
    run: Runner, capfd: pytest.CaptureFixture[str]
) -> None:
    code = (
        "def rows():\n    try:\n        yield 1\n    finally:\n        print('cleanup')\n"
        "        state['late'] = True\n"
        "for row in rows():\n    state['row'] = row\n    tool.YIELD('wait')"
    )
    result = run(code)
    assert result.success and result.yield_reason == "wait"
    assert result.stdout == "" and state_of(result) == {"row": 1}
    assert "Exception ignored" not in capfd.readouterr().err


def test_oversized_reply_is_refused_before_the_reply_parser(run: Runner) -> None:
    reply = "```repl\n" + "x = 1\n" * 50_000 + "```"
    result = run(reply, require_repl_block=True, max_code_chars=1_000)
    assert result.error.code == "SANDBOX_AST_REJECTED"
    assert "the limit is 1000" in result.error.message


def test_container_methods_consuming_lazy_iterables_count_iterations(run: Runner) -> None:
    for code in ["x = []\nx.extend(iter(range(10**12)))", "s = set()\ns.update(iter(range(10**12)))",
                 "d = dict.fromkeys(range(10**12))", "x = set().union(iter(range(10**12)))",
                 "x = list.extend([], iter(range(10**12)))", "x = set().intersection(range(10**12))"]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_LINE_LIMIT", code
    # A range has a length: the size bound refuses it before any iteration.
    for code in ["x = []\nx.extend(range(10**12))", "s = set()\ns.update(range(10**12))",
                 "x = set().union(range(10**12))", "x = list.extend([], range(10**12))"]:  # fmt: skip
        result = run(code)
        assert "(sandbox size limit)" in result.error.message, code
    for code in ["x = 'a' * 10**7\ny = x.translate({97: 'b' * 100})", "x = (1).to_bytes(10**9, 'big')",
                 "x = int.to_bytes(1, 10**9, 'big')"]:  # fmt: skip
        result = run(code)
        assert "MemoryError" in result.error.message, code


def test_container_methods_still_work(run: Runner) -> None:
    code = (
        "x = [1]\nx.extend(range(2, 4))\nx.extend([4])\ns = {1}\ns.update([2], range(3, 4))\n"
        "d = {'a': 1}\nd.update({'b': 2}, c=3)\nd.update([('e', 5)])\n"
        "print(x, sorted(s), d, sorted(s.union(range(5))), dict.fromkeys('ab', 0),"
        " 'abc'.translate({97: 'A'}), (258).to_bytes(2, 'big'), int.to_bytes(1, 1, 'big'))"
    )
    result = run(code)
    assert result.success, result.error
    assert result.stdout == (
        "[1, 2, 3, 4] [1, 2, 3] {'a': 1, 'b': 2, 'c': 3, 'e': 5} [0, 1, 2, 3, 4] "
        "{'a': 0, 'b': 0} Abc b'\\x01\\x02' b'\\x01'\n"
    )


def test_star_unpacking_and_lambdas_count_toward_the_line_limit(run: Runner) -> None:
    for code in ["x = [*range(10**12)]", "x = (*range(10**12),)", "x = {*range(10**12)}",
                 "def f(*a):\n    return len(a)\nx = f(*range(10**12))",
                 "f = lambda n: f(n - 1) + f(n - 1) if n else 0\nx = f(60)"]:  # fmt: skip
        result = run(code)
        assert result.error.code == "SANDBOX_LINE_LIMIT", code


def test_star_unpacking_and_lambdas_still_work(run: Runner) -> None:
    code = (
        "print([*range(3)], (*'ab',), {*[1]}, max(*[1, 2]))\n"
        "a, *b = [1, 2, 3]\nprint(a, b, (lambda x, y=2: x * y)(3), sorted([2, 1], key=lambda v: -v))"
    )
    result = run(code)
    assert result.success, result.error
    assert result.stdout == "[0, 1, 2] ('a', 'b') {1} 2\n1 [2, 3] 6 [2, 1]\n"
