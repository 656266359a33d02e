"""The root protocol through a real control plane: prose around code, several
blocks, a ```python fence, and a reply with no code answered by a corrective
note in the next turn's prompt."""

from __future__ import annotations

from rlm_rs.sandbox._replies import NO_CODE_NOTE
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api


def _start(api: Api, question: str) -> execution_pb2.Execution:
    request = execution_pb2.StartExecutionRequest(
        session_id=api.ready_session(),
        question=question,
        options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
    )
    reply: execution_pb2.Execution = api.executions.StartExecution(request, metadata=api.auth())
    return reply


def _root_prompts(api: Api) -> list[str]:
    return [call["prompt"] for call in api.provider.calls if call["role"] == "root"]


def test_prose_and_blocks_in_one_reply_run_as_one_step(api: Api) -> None:
    reply = (
        "I will find the revenue line first.\n```python\nhit = context[0].find('Revenue grew')[0]\n```\n"
        "Then answer from what I read:\n```repl\n"
        "tool.FINAL(context[0][hit['start_char']:hit['start_char'] + 12])\n```\nDone."
    )
    api.provider.script["executions"] = [{"match": "prose", "root": [reply]}]
    execution = _start(api, "prose around code")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "Revenue grew" and execution.budgets_consumed.turns == 1


def test_a_reply_without_code_gets_a_corrective_note(api: Api) -> None:
    api.provider.script["executions"] = [
        {"match": "chatty", "root": ["Sure! I will read the report.", "```repl\ntool.FINAL('ok')\n```"]}
    ]
    execution = _start(api, "a chatty question")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and execution.answer == "ok"
    prompts = _root_prompts(api)
    assert len(prompts) == 2
    assert NO_CODE_NOTE not in prompts[0]
    assert NO_CODE_NOTE in prompts[1]
