"""Inline calls through a real hardened pool: waits are off the step's clock
(the zygote's SIGKILL deadline pauses), bounded by max_step_wait_seconds, and
a refused call ends the step."""

from __future__ import annotations

import json
import time

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import (
    InlineCall,
    InlineReply,
    StepLimits,
    StepRequest,
    StepResult,
)


def run(pool: PoolSandbox, code: str, inline: object, **limits: float) -> StepResult:
    policy = StepLimits(max_step_seconds=1.0, enable_llm=True, enable_rlm=True, **limits)  # type: ignore[arg-type]
    return pool.run_step(StepRequest(code=code, state_json="{}", limits=policy), inline=inline)  # type: ignore[arg-type]


def slow(seconds: float) -> object:
    def answer(call: InlineCall, timeout: float) -> InlineReply:
        time.sleep(seconds)
        if call.HasField("llm_batch"):
            return InlineReply(texts=[p[::-1] for p in call.llm_batch.prompts])
        return InlineReply(texts=[call.llm.prompt.upper()])

    return answer


def test_waiting_is_not_compute_time(pool: PoolSandbox) -> None:
    """Two 0.8 s waits in a step allowed 1 s: the zygote's clock paused."""
    code = "a = llm_query('x')\nb = llm_query_batched(['ab', 'cd'])\nprint(a, b)"
    started = time.monotonic()
    result = run(pool, code, slow(0.8))
    assert result.success, result.error
    assert result.stdout == "X ['ba', 'dc']\n" and time.monotonic() - started >= 1.6


def test_compute_after_waits_still_stops_at_max_step_seconds(pool: PoolSandbox) -> None:
    result = run(pool, "llm_query('x')\nwhile True:\n    pass", slow(0.3))
    assert not result.success and result.error.code in ("STEP_TIMEOUT", "SANDBOX_LINE_LIMIT"), result.error


def test_waits_past_the_ceiling_end_the_step(pool: PoolSandbox) -> None:
    result = run(pool, "for i in range(5):\n    llm_query('x')", slow(0.4), max_step_wait_seconds=1.0)
    assert not result.success and result.error.code == "STEP_TIMEOUT"
    assert json.loads(result.error.details_json)["max_step_wait_seconds"] == 1.0


def test_a_refused_call_ends_the_step_uncatchably(pool: PoolSandbox) -> None:
    def refuse(call: InlineCall, timeout: float) -> InlineReply:
        return InlineReply(error_code="CONFLICT", error="the execution is no longer running")

    code = "try:\n    llm_query('x')\nexcept Exception:\n    print('caught')\nprint('went on')"
    result = run(pool, code, refuse)
    assert not result.success and result.error.code == "CONFLICT" and result.stdout == ""


def test_a_failed_call_comes_back_as_error_text(pool: PoolSandbox) -> None:
    def half(call: InlineCall, timeout: float) -> InlineReply:
        return InlineReply(texts=["ok", ""], errors=["", "sub-call budget spent"])

    result = run(pool, "print(llm_query_batched(['a', 'b']))", half)
    assert result.success and result.stdout == "['ok', 'Error: sub-call budget spent']\n"
