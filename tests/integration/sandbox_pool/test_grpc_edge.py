"""The pool's gRPC edge (docs/sandbox-pool.md, "The gRPC edge"): RunStep is
one request and a stream back; a step with no inline call is one message; an
inline call's reply comes through ReplyInline under the step's token, exactly
once, to the call due; a caller that goes away ends the step and its worker."""

from __future__ import annotations

import time

import grpc
import pytest

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import (
    InlineReply,
    ReplyInlineRequest,
    StepLimits,
    StepRequest,
)

LIMITS = StepLimits(max_step_seconds=5.0, max_step_wait_seconds=20.0, enable_llm=True)
ASKS = "print(llm_query('ping'))"


def _busy_until(pool: PoolSandbox, busy: int, seconds: float) -> int:
    give_up = time.monotonic() + seconds
    while (now := pool.status().busy_workers) != busy and time.monotonic() < give_up:
        time.sleep(0.05)
    return now


def test_a_step_without_inline_calls_is_one_message(pool: PoolSandbox) -> None:
    outputs = list(pool._stub.RunStep(StepRequest(code="print(1)", state_json="{}"), timeout=30))
    assert [o.WhichOneof("kind") for o in outputs] == ["result"]
    assert outputs[0].result.success and outputs[0].result.stdout == "1\n"
    assert not outputs[0].step_token


def test_the_reply_is_taken_once_for_the_call_due_only(pool: PoolSandbox) -> None:
    stream = pool._stub.RunStep(StepRequest(code=ASKS, state_json="{}", limits=LIMITS), timeout=30)
    first = next(stream)
    assert first.call.llm.prompt == "ping" and len(first.step_token) == 16
    token, call_id = first.step_token, first.call.call_id
    reply = pool._stub.ReplyInline
    with pytest.raises(grpc.RpcError) as unknown:  # another step's token: none waits under it
        reply(ReplyInlineRequest(step_token=b"x" * 16, reply=InlineReply(call_id=call_id, texts=["no"])))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as wrong:  # a call the step never made
        reply(ReplyInlineRequest(step_token=token, reply=InlineReply(call_id=call_id + 1, texts=["no"])))
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reply(ReplyInlineRequest(step_token=token, reply=InlineReply(call_id=call_id, texts=["pong"])))
    with pytest.raises(grpc.RpcError) as twice:  # answered already: never delivered twice
        reply(ReplyInlineRequest(step_token=token, reply=InlineReply(call_id=call_id, texts=["again"])))
    assert twice.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    (last,) = list(stream)
    assert last.result.success, last.result.error
    assert last.result.stdout == "pong\n"


def test_a_caller_that_goes_away_ends_the_step_and_its_worker(pool: PoolSandbox) -> None:
    stream = pool._stub.RunStep(StepRequest(code=ASKS, state_json="{}", limits=LIMITS), timeout=30)
    first = next(stream)
    assert first.HasField("call")
    assert _busy_until(pool, 1, 5.0) == 1  # the worker waits on its call
    stream.cancel()
    started = time.monotonic()
    assert _busy_until(pool, 0, 5.0) == 0  # not the 20 s wait ceiling: hung up at once
    assert time.monotonic() - started < 5.0
    with pytest.raises(grpc.RpcError) as late:
        pool._stub.ReplyInline(
            ReplyInlineRequest(step_token=first.step_token, reply=InlineReply(call_id=1, texts=["late"]))
        )
    assert late.value.code() == grpc.StatusCode.NOT_FOUND
    after = pool.run_step(StepRequest(code="print(2)", state_json="{}"))
    assert after.success and after.stdout == "2\n"


def test_two_waiting_steps_each_take_only_the_reply_under_their_own_token(pool: PoolSandbox) -> None:
    """Both steps wait on their call 1 at once: the tokens differ, and a reply
    reaches exactly the step whose stream carried the token."""
    first = pool._stub.RunStep(StepRequest(code=ASKS, state_json="{}", limits=LIMITS), timeout=30)
    second = pool._stub.RunStep(StepRequest(code=ASKS, state_json="{}", limits=LIMITS), timeout=30)
    call_a, call_b = next(first), next(second)
    assert call_a.step_token != call_b.step_token
    assert call_a.call.call_id == call_b.call.call_id == 1
    for call, text in ((call_b, "for b"), (call_a, "for a")):
        pool._stub.ReplyInline(
            ReplyInlineRequest(step_token=call.step_token, reply=InlineReply(call_id=1, texts=[text]))
        )
    assert [o.result.stdout for o in first] == ["for a\n"]
    assert [o.result.stdout for o in second] == ["for b\n"]
