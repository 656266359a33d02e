"""max_step_seconds in-process: C-level work that no tick sees is either made
bounded by the policy layer (range membership, pow with a modulus, JSON walks)
or stopped at the next tick by the watchdog; what neither can stop (one
unbounded C operation) runs in a child the caller kills (Lambda handler, CLI)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rlm_rs.cli import main
from rlm_rs.sandbox._killable import run_step_killable
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest
from tests.unit.sandbox.conftest import Runner, state_of

# Two equal, distinct shared-reference trees of 2**40 leaves: `==` walks them in C.
DEEP_COMPARE = "a = [0]\nb = [0]\nfor i in range(40):\n    a = [a, a]\n    b = [b, b]\nsame = a == b\n"


def test_range_membership_of_any_value_is_answered_at_once(run: Runner) -> None:
    code = (
        "r = range(10**18)\n"
        "state['in'] = ['x' in r, None in r, 1.0 in r, 1.5 in r, 10**17 in r, -1 in r, True in r, (2+0j) in r]\n"
        "state['count'] = [r.count('x'), r.count(3.0), range(0, 10, 2).count(4)]\n"
        "state['index'] = [r.index(5.0), range(3, 30, 3).index(9)]\n"
        "state['other'] = [len(range(5)), list(range(2, 8, 3)), range(10)[2:4] == range(2, 4),"
        " isinstance(range(1), range), repr(range(1, 3)), list(reversed(range(3)))]\n"
    )
    started = time.monotonic()
    result = run(code, max_step_seconds=2)
    assert result.success, result.error
    assert time.monotonic() - started < 2
    assert state_of(result) == {
        "in": [False, False, True, False, True, False, True, True],
        "count": [0, 1, 1],
        "index": [5, 2],
        "other": [5, [2, 5], True, True, "range(1, 3)", [2, 1, 0]],
    }
    for code in ["range(10**18).index('x')", "range(10**18).index(0.5)"]:
        result = run(code, max_step_seconds=2)
        assert "ValueError" in result.error.message and result.duration_ms < 1000, code


def test_pow_with_a_modulus_is_bounded_by_its_cost(run: Runner) -> None:
    result = run("print(pow(3, 10**20, 10**9 + 7), pow(2, -1, 7))")
    assert result.stdout == f"{pow(3, 10**20, 10**9 + 7)} 4\n"
    started = time.monotonic()
    # 13,000 squarings of 100,000-bit numbers: tens of seconds in one C call.
    result = run("e = int('9' * 4000)\nm = (1 << 99_999) + 1\nx = pow(3, e, m)", max_step_seconds=2)
    assert "(sandbox size limit)" in result.error.message
    assert time.monotonic() - started < 1


def test_watchdog_ends_a_loop_of_long_c_operations(run: Runner) -> None:
    # ~10 ms of C per tick: the clock, read every 4096 ticks, alone would
    # notice the deadline only after ~40 s.
    code = "big = [0] * 3_000_000\nwhile True:\n    found = -1 in big"
    started = time.monotonic()
    result = run(code, max_step_seconds=0.5, max_instructions=10**9)
    assert result.error.code == "STEP_TIMEOUT"
    assert time.monotonic() - started < 3


def test_a_finished_step_is_not_failed_by_a_late_watchdog(run: Runner) -> None:
    for _ in range(20):
        result = run("x = sum(range(1000))\nstate['x'] = x", max_step_seconds=0.05)
        assert result.success or result.error.code == "STEP_TIMEOUT"
    time.sleep(0.2)  # deadlines of the steps above pass now
    result = run("state['ok'] = 1", max_step_seconds=5)
    assert result.success and state_of(result) == {"ok": 1}


def test_killable_runner_ends_one_unbounded_c_operation() -> None:
    request = StepRequest(code=DEEP_COMPARE, state_json='{"k": 1}', limits=StepLimits(max_step_seconds=0.5))
    started = time.monotonic()
    result = run_step_killable(request, grace_seconds=0.5)
    assert result.error.code == "STEP_TIMEOUT"
    assert json.loads(result.state_json) == {"k": 1}
    assert time.monotonic() - started < 3
    ok = run_step_killable(StepRequest(code="print(6 * 7)", state_json="{}"))
    assert ok.success and ok.stdout == "42\n"


def test_lambda_handler_kills_a_step_at_its_wall_clock() -> None:
    from rlm_rs.sandbox.lambda_handler import handler

    started = time.monotonic()
    out = handler({"code": DEEP_COMPARE, "state": {}, "limits": {"max_step_seconds": 0.5}})
    assert out["error"]["code"] == "STEP_TIMEOUT"
    assert time.monotonic() - started < 5


def test_cli_in_process_kills_a_step_at_its_wall_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code_file = tmp_path / "step.py"
    code_file.write_text(DEEP_COMPARE)
    started = time.monotonic()
    status = main(
        ["sandbox", "run", "--in-process", "--code", str(code_file), "--limits", '{"max_step_seconds": 0.5}']
    )
    assert status == 0
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "STEP_TIMEOUT"
    assert time.monotonic() - started < 5
