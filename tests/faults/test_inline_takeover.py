"""Inline calls across failures: a control plane SIGKILLed while a step waits
on an inline call, and a worker SIGKILLed while it waits."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from rlm_rs.providers.base import CallContext, Completion
from rlm_rs.sandbox.client import temporary_pool
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import control_plane
from tests.integration.control.test_executions import block
from tests.integration.control.test_takeover import _kill_mid_run

INLINE_TURN = "```repl\na = llm_query('first: name the city')\nb = llm_query('second: its country')\ntool.FINAL(a + ' ' + b)\n```"


def test_a_step_waiting_inline_is_replayed_after_sigkill_without_paying_twice(tmp_path: Path) -> None:
    """The first owner is SIGKILLed while its step waits on the second call;
    the second owner replays the step: the first (temperature 0) call comes
    from the cache, so the provider answers it once."""
    stalled = threading.Event()

    def reply(messages: list[dict[str, str]]) -> str:
        user = messages[-1]["content"]
        if messages[0]["role"] == "system":
            return INLINE_TURN
        if user.startswith("first"):
            return "Lisbon"
        if not stalled.is_set():  # the first owner waits here and is killed
            stalled.set()
            time.sleep(4)
        return "Portugal"

    waited, storage, execution_id, sub_calls = _kill_mid_run(tmp_path, reply, stalled)
    assert waited.status == execution_pb2.EXECUTION_STATUS_COMPLETED and waited.answer == "Lisbon Portugal", (
        waited.error
    )
    prompts = [call["messages"][-1]["content"] for call in sub_calls]
    assert prompts.count("first: name the city") == 1  # served from the cache on replay: paid once
    assert prompts.count("second: its country") == 2  # the killed wait never got its answer
    assert waited.budgets_consumed.turns == 1 and waited.budgets_consumed.cache_hits == 1
    record = storage.metadata.get_execution("t", execution_id)
    assert record["lease_owner"]


def test_a_worker_killed_while_waiting_loses_nothing_committed(tmp_path: Path) -> None:
    """A hardened worker SIGKILLed during its inline call: the step fails
    (LAMBDA_ERROR), the state committed before it is intact, the pool serves
    the next turn."""
    with temporary_pool() as pool, control_plane(tmp_path, pool) as api:
        plain = api.provider.complete

        def kill_workers(model: str, messages: list[dict[str, str]], **kw: object) -> Completion:
            context = kw["context"]
            assert isinstance(context, CallContext)
            if context.role == "sub" and "kill" in messages[-1]["content"]:
                zygote = psutil.Process(pool.server_pid).children()[0]
                for worker in zygote.children():
                    worker.kill()
                time.sleep(0.2)
            return plain(model, messages, **kw)  # type: ignore[arg-type]

        api.provider.complete = kill_workers  # type: ignore[method-assign]
        api.provider.script["executions"] = [
            {
                "match": "[kill]",
                "root": [
                    block("state['work']['kept'] = 'turn 0'\nprint('saved')"),
                    block("state['work']['lost'] = llm_query('kill me')\nprint('never')"),
                    block("tool.FINAL(state['work']['kept'] + ' / ' + str(state['work'].get('lost')))"),
                ],
            }
        ]
        started = api.executions.StartExecution(
            execution_pb2.StartExecutionRequest(
                session_id=api.ready_session(),
                question="[kill] q",
                options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=60),
            ),
            metadata=api.auth(),
        )
        assert started.status == execution_pb2.EXECUTION_STATUS_COMPLETED, started.error
        assert started.answer == "turn 0 / None"  # the killed step's write never landed
        steps = api.executions.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=started.execution_id), metadata=api.auth()
        ).steps
        assert [s.success for s in steps] == [True, False, True]
        assert steps[1].error.code == "LAMBDA_ERROR" and "SIGKILL" in steps[1].error.message
        assert json.loads(steps[1].state_json)["work"]["kept"] == "turn 0"
