"""WatchExecution (live events, resume, errors, watcher caps), StartFollowup
(state carried over, CONFLICT while running) and the execution tree, over a
real gRPC socket with the scripted root model."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import grpc
import pytest

from rlm_rs import wire_enums
from rlm_rs.control.quotas import DEFAULT_LIMITS
from rlm_rs.domain import EventType
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import RlmRequest, ToolRequests
from tests.integration.control.conftest import REPORT, Api, error_code
from tests.integration.control.test_executions import FIND_AND_ANSWER, block, runtime, start

TWO_TURNS = [
    block("print('looking')\ntool.queue_llm('k', 'Summarise: ' + context[0][0:40])\ntool.YIELD('asked')"),
    FIND_AND_ANSWER,
]
# turn_started, root_reply, step_result, tool_requests, tool_results | turn 1 ... | status
EXPECTED_TYPES = [
    "turn_started", "root_reply", "step_result", "tool_requests", "tool_results",
    "turn_started", "root_reply", "step_result",
    "status",
]  # fmt: skip


def types(events: Iterable[execution_pb2.ExecutionEvent]) -> list[EventType]:
    """The events' types as the domain names them (the wire carries EventType numbers)."""
    return [wire_enums.EVENT_TYPE.to_domain(e.type) for e in events]


def watch(api: Api, execution_id: str, after: str = "", key: str | None = None) -> list[Any]:
    request = execution_pb2.WatchExecutionRequest(execution_id=execution_id, after_event_id=after)
    return list(api.executions.WatchExecution(request, metadata=api.auth(key), timeout=60))


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_watch_streams_an_answerer_execution_as_it_runs(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "watch", "root": TWO_TURNS}]
    slow_complete = api.provider.complete

    def complete(*args: Any, **kwargs: Any) -> Any:
        if kwargs["context"].role == "root":
            time.sleep(0.4)  # the watcher must see turn 0 while turn 1 is still to come
        return slow_complete(*args, **kwargs)

    api.provider.complete = complete  # type: ignore[method-assign]
    execution = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(session_id=api.ready_session(), question="watch it"),
        metadata=api.auth(),
    )
    stream = api.executions.WatchExecution(
        execution_pb2.WatchExecutionRequest(execution_id=execution.execution_id),
        metadata=api.auth(),
        timeout=60,
    )
    events: list[execution_pb2.ExecutionEvent] = []
    status_at_first_event = execution_pb2.EXECUTION_STATUS_UNSPECIFIED
    for event in stream:
        if not events:
            status_at_first_event = api.executions.GetExecution(
                execution_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=api.auth()
            ).status
        events.append(event)
    assert (
        status_at_first_event == execution_pb2.EXECUTION_STATUS_RUNNING
    )  # events arrive live, not after the end
    assert types(events) == EXPECTED_TYPES
    ids = [e.event_id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e.execution_id == execution.execution_id for e in events)
    assert [e.turn_index for e in events] == [0, 0, 0, 0, 0, 1, 1, 1, 2]
    data = [json.loads(e.data_json) for e in events]
    assert data[2]["success"] is True and data[2]["stdout"] == "looking\n"
    assert data[3]["llm"] == ["k"] and data[4]["statuses"] == {"k": "resolved"}
    assert data[7]["final"] == "Answer: Revenue grew 14% to $48.2M"
    assert data[-1]["status"] == "COMPLETED" and data[-1]["answer"] == "Answer: Revenue grew 14% to $48.2M"
    assert events[-1].event_id == "000002.9999"


def test_watch_resumes_after_an_event_id_with_exactly_the_rest(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "resume", "root": TWO_TURNS}]
    execution = start(api, api.ready_session(), "resume me")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    everything = watch(api, execution.execution_id)
    assert types(everything) == EXPECTED_TYPES
    for middle in (3, 5):
        rest = watch(api, execution.execution_id, after=everything[middle].event_id)
        assert [e.event_id for e in rest] == [e.event_id for e in everything[middle + 1 :]]
    assert types(watch(api, execution.execution_id, after=everything[-2].event_id)) == ["status"]
    assert watch(api, execution.execution_id, after=everything[-1].event_id) == []  # ends at once


def test_watch_of_a_foreign_or_unknown_execution_is_not_found(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    other, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    foreign = rpc_error(lambda: watch(api, execution_id, key=other))
    missing = rpc_error(lambda: watch(api, "exec_000000000000000000000000"))
    for error in (foreign, missing):
        assert error.code() == grpc.StatusCode.NOT_FOUND and error_code(error) == "EXECUTION_NOT_FOUND"
    assert (
        foreign.details()
        == rpc_error(lambda: watch(api, "exec_000000000000000000000000", key=other)).details()
    )


@pytest.mark.parametrize("after", ["abc", "1.2", "000001.00001", "000001-0001", "000001.0001 "])
def test_watch_rejects_a_malformed_after_event_id(api: Api, after: str) -> None:
    execution_id = runtime(api, api.ready_session())
    error = rpc_error(lambda: watch(api, execution_id, after=after))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == "VALIDATION_ERROR"


def test_watch_of_a_runtime_execution_streams_steps_until_it_is_cancelled(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    events: list[Any] = []
    stream = api.executions.WatchExecution(
        execution_pb2.WatchExecutionRequest(execution_id=execution_id), metadata=api.auth(), timeout=60
    )
    reader = threading.Thread(target=lambda: events.extend(stream))
    reader.start()
    api.executions.RunStep(
        execution_pb2.RunStepRequest(execution_id=execution_id, code="print('hello')"), metadata=api.auth()
    )
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    reader.join(30)
    assert not reader.is_alive()
    assert types(events) == ["step_result", "status"]
    assert json.loads(events[0].data_json)["stdout"] == "hello\n"
    assert json.loads(events[1].data_json)["status"] == "CANCELLED"


def test_live_watchers_are_capped_per_tenant_and_released(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    streams = []
    for _ in range(DEFAULT_LIMITS.long_calls or 0):
        stream = api.executions.WatchExecution(
            execution_pb2.WatchExecutionRequest(execution_id=execution_id), metadata=api.auth(), timeout=60
        )
        stream.initial_metadata()  # accepted: the server holds a slot for it
        streams.append(stream)
    refused = rpc_error(lambda: watch(api, execution_id))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code(refused) == "RATE_LIMITED"
    # another tenant still gets its own slots
    other, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    assert error_code(rpc_error(lambda: watch(api, execution_id, key=other))) == "EXECUTION_NOT_FOUND"
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    for stream in streams:
        assert types(stream) == ["status"]
    # every slot came back: a new watcher is served
    deadline = time.monotonic() + 5
    while True:
        try:
            assert types(watch(api, execution_id)) == ["status"]
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "watch slots were not released"
            time.sleep(0.05)


REMEMBER = block(
    "hit = context[0].find('Ana Souza')[0]\n"
    "state['work']['ceo'] = context[0][hit['start_char']:hit['end_char']]\n"
    "tool.FINAL('noted')"
)
RECALL = block(
    "print('from before:', state['work']['ceo'])\ntool.FINAL('The CEO is ' + state['work']['ceo'])"
)


def followup(api: Api, execution_id: str, question: str, **options: Any) -> execution_pb2.Execution:
    reply: execution_pb2.Execution = api.executions.StartFollowup(
        execution_pb2.StartFollowupRequest(
            execution_id=execution_id,
            question=question,
            options=execution_pb2.ExecutionOptions(**options),
        ),
        metadata=api.auth(),
    )
    return reply


def test_followup_starts_from_the_finished_executions_work(api: Api) -> None:
    api.provider.script["executions"] = [
        {"match": "remember", "root": [REMEMBER]},
        {"match": "recall", "root": [RECALL]},
    ]
    first = start(api, api.ready_session(), "remember the CEO")
    assert first.status == execution_pb2.EXECUTION_STATUS_COMPLETED and first.answer == "noted"
    second = followup(
        api, first.execution_id, "recall the CEO", synchronous=True, synchronous_timeout_seconds=30
    )
    assert second.status == execution_pb2.EXECUTION_STATUS_COMPLETED, second.error
    assert second.answer == "The CEO is Ana Souza"
    assert second.followup_of == first.execution_id and second.session_id == first.session_id
    assert second.execution_id != first.execution_id
    got = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=second.execution_id), metadata=api.auth()
    )
    assert got.followup_of == first.execution_id and got.mode == execution_pb2.EXECUTION_MODE_ANSWERER
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=second.execution_id), metadata=api.auth()
    ).steps
    assert steps[0].stdout == "from before: Ana Souza\n"  # the follow-up's first step read state["work"]
    # the source is untouched
    source = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=first.execution_id), metadata=api.auth()
    )
    assert source.answer == "noted" and source.followup_of == ""


def test_followup_without_synchronous_runs_in_the_background(api: Api) -> None:
    api.provider.script["executions"] = [
        {"match": "remember", "root": [REMEMBER]},
        {"match": "recall", "root": [RECALL]},
    ]
    first = start(api, api.ready_session(), "remember the CEO")
    second = followup(api, first.execution_id, "recall the CEO")
    assert (
        second.status == execution_pb2.EXECUTION_STATUS_RUNNING and second.followup_of == first.execution_id
    )
    events = watch(api, second.execution_id)
    assert json.loads(events[-1].data_json)["answer"] == "The CEO is Ana Souza"


def test_followup_of_a_running_execution_is_conflict(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    error = rpc_error(lambda: followup(api, execution_id, "anything more?"))
    assert error.code() == grpc.StatusCode.ABORTED and error_code(error) == "CONFLICT"


@pytest.mark.parametrize("question", ["", "   ", "x" * 20_001])
def test_followup_question_is_validated(api: Api, question: str) -> None:
    execution_id = runtime(api, api.ready_session())
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    error = rpc_error(lambda: followup(api, execution_id, question))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == "VALIDATION_ERROR"


def test_resolve_tools_returns_child_results_and_the_execution_tree(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "revenue", "root": [FIND_AND_ANSWER]}]
    execution_id = runtime(api, api.ready_session())
    response = api.executions.ResolveTools(
        execution_pb2.ResolveToolsRequest(
            execution_id=execution_id,
            tool_requests=ToolRequests(rlm=[RlmRequest(key="child", question="how did revenue develop?")]),
        ),
        metadata=api.auth(),
    )
    assert response.statuses["child"] == execution_pb2.TOOL_STATUS_RESOLVED
    result = response.tool_results.rlm["child"]
    assert result.text == "Answer: Revenue grew 14% to $48.2M"
    [ref] = result.citations
    start_char = REPORT.index("Revenue grew")
    assert (ref.doc_index, ref.start_char, ref.end_char) == (0, start_char, start_char + 26)
    meta = json.loads(result.meta_json)
    assert meta["status"] == "COMPLETED" and meta["depth"] == 1
    parent = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    [child] = parent.children
    assert child.execution_id == meta["execution_id"] and child.parent_execution_id == execution_id
    assert (
        child.depth == 1
        and child.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        and child.answer == result.text
    )
    assert list(child.citations) == [ref]


def tail(api: Api, execution_id: str, *extra: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "executions", "tail", execution_id,
         "--grpc-target", f"127.0.0.1:{api.plane.port}", "--api-key", api.key, *extra],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip


def test_executions_tail_prints_each_turn_and_resumes_after_an_event(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "tail", "root": TWO_TURNS}]
    execution = start(api, api.ready_session(), "tail it")
    assert tail(api, execution.execution_id) == [
        "turn 0: ok; spans 1; tools 1",
        "  | looking",
        "turn 1: ok; spans 2; tools 0",
        "  FINAL: Answer: Revenue grew 14% to $48.2M",
        "COMPLETED: Answer: Revenue grew 14% to $48.2M",
    ]
    events = watch(api, execution.execution_id)
    second_turn = next(
        e.event_id for e in events if e.type == execution_pb2.EVENT_TYPE_TURN_STARTED and e.turn_index == 1
    )
    assert tail(api, execution.execution_id, "--after", second_turn) == [
        "turn 1: ok; spans 2; tools 0",
        "  FINAL: Answer: Revenue grew 14% to $48.2M",
        "COMPLETED: Answer: Revenue grew 14% to $48.2M",
    ]


def test_executions_tail_prints_turns_while_the_execution_runs(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "tail", "root": TWO_TURNS}]
    gate = threading.Event()
    complete = api.provider.complete

    def gated(*args: Any, **kwargs: Any) -> Any:
        if kwargs["context"].role == "root" and kwargs["context"].turn_index == 1:
            assert gate.wait(30)  # turn 1 waits until tail has printed turn 0
        return complete(*args, **kwargs)

    api.provider.complete = gated  # type: ignore[method-assign]
    execution = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(session_id=api.ready_session(), question="tail live"),
        metadata=api.auth(),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlm_rs.cli", "executions", "tail", execution.execution_id,
         "--grpc-target", f"127.0.0.1:{api.plane.port}", "--api-key", api.key],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "turn 0: ok; spans 1; tools 1\n"
        assert (
            api.executions.GetExecution(
                execution_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=api.auth()
            ).status
            == execution_pb2.EXECUTION_STATUS_RUNNING
        )
        gate.set()
        rest = proc.stdout.read().splitlines()
        assert proc.wait(30) == 0
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
    assert rest[-1] == "COMPLETED: Answer: Revenue grew 14% to $48.2M"
