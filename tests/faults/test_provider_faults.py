"""Provider faults through the real openai SDK against a local compatible server:
timeouts, HTTP 500s and malformed replies, for the root model and for
sub-calls. Each: the expected status, every turn persisted once, and the next
execution served normally."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets
from tests.integration.control.test_openai_provider import openai_stack, settings_for

QUEUE = "```repl\ntool.queue_llm('k', 'Name the city: ' + context[0][:40])\ntool.YIELD()\n```"
ANSWER = (
    "```repl\nstatus = state['_tool_status']['k']\n"
    "tool.FINAL(status + ':' + (state['_tool_results']['llm']['k']['text'] or 'none'))\n```"
)


class Behaviour:
    """What the fake provider does next; tests flip it between executions."""

    def __init__(self) -> None:
        self.root_mode = "ok"  # ok | prose
        self.sub_mode = "ok"  # ok | slow | fail

    def reply(self, messages: list[dict[str, str]]) -> str:
        if messages[0]["role"] == "system":
            if self.root_mode == "prose":
                return "I think the answer is Lisbon."  # not a ```repl block
            return QUEUE if "Turn 1 of" in messages[-1]["content"] else ANSWER
        if self.sub_mode == "slow":
            time.sleep(3)
        return "Lisbon"


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
def server(behaviour: Behaviour) -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(behaviour.reply) as running:
        yield running


def test_sub_call_timeout_is_a_tool_error_and_the_loop_goes_on(
    tmp_path: Path, server: OpenAICompatibleServer, behaviour: Behaviour
) -> None:
    settings = settings_for(tmp_path, server).model_copy(
        update={"llm_timeout_seconds": 1.0, "llm_max_retries": 0}
    )
    with openai_stack(settings) as run:
        behaviour.sub_mode = "slow"
        slow = run()
        behaviour.sub_mode = "ok"
        healthy = run()
    assert slow.status == execution_pb2.EXECUTION_STATUS_COMPLETED and slow.answer == "error:none"
    assert slow.budgets_consumed.turns == 2
    assert healthy.status == execution_pb2.EXECUTION_STATUS_COMPLETED and healthy.answer == "resolved:Lisbon"


def test_root_model_500_fails_the_execution_cleanly(tmp_path: Path, server: OpenAICompatibleServer) -> None:
    with openai_stack(settings_for(tmp_path, server)) as run:
        server.fail_status = 500
        failed = run()
        server.fail_status = None
        healthy = run()
    assert (
        failed.status == execution_pb2.EXECUTION_STATUS_FAILED and failed.error.code == "LLM_PROVIDER_ERROR"
    )
    assert "500" in failed.error.message and failed.budgets_consumed.turns == 0
    assert healthy.status == execution_pb2.EXECUTION_STATUS_COMPLETED


def test_sub_call_500_is_a_tool_error(
    tmp_path: Path, server: OpenAICompatibleServer, behaviour: Behaviour
) -> None:
    calls: list[int] = []
    original = behaviour.reply

    def failing_subs(messages: list[dict[str, str]]) -> str:
        if messages[0]["role"] != "system":
            calls.append(1)
            raise RuntimeError("boom")  # the test server answers 500
        return original(messages)

    server.reply = failing_subs
    with openai_stack(settings_for(tmp_path, server)) as run:
        execution = run()
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and execution.answer == "error:none"
    assert len(calls) == 2  # one attempt plus RLM_LLM_MAX_RETRIES=1 retry by the SDK


def test_malformed_root_replies_cost_turns_not_the_service(
    tmp_path: Path, server: OpenAICompatibleServer, behaviour: Behaviour
) -> None:
    with openai_stack(settings_for(tmp_path, server)) as run:
        behaviour.root_mode = "prose"
        malformed = run(budgets=Budgets(max_turns=3))
        behaviour.root_mode = "ok"
        healthy = run()
    assert (
        malformed.status == execution_pb2.EXECUTION_STATUS_MAX_TURNS_EXCEEDED
        and malformed.budgets_consumed.turns == 3
    )
    assert healthy.status == execution_pb2.EXECUTION_STATUS_COMPLETED and healthy.answer == "resolved:Lisbon"
