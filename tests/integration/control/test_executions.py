"""The Answerer loop and runtime mode over a real gRPC socket (scripted root model)."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import grpc
import pytest

from rlm_rs.v1 import citation_pb2, execution_pb2
from rlm_rs.v1.common_pb2 import Budgets, LlmRequest, ToolRequests
from tests.integration.control.conftest import REPORT, Api, error_code


def block(code: str) -> str:
    return f"```repl\n{code}\n```"


FIND_AND_ANSWER = block(
    "hit = context[0].find('Revenue grew')[0]\n"
    "sentence = context[0][hit['start_char']:hit['start_char'] + 26]\n"
    "tool.FINAL('Answer: ' + sentence)"
)


def start(
    api: Api, session_id: str, question: str, budgets: Budgets | None = None, **options: Any
) -> execution_pb2.Execution:
    request = execution_pb2.StartExecutionRequest(
        session_id=session_id,
        question=question,
        options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30, **options),
    )
    if budgets is not None:
        request.budgets.CopyFrom(budgets)
    reply: execution_pb2.Execution = api.executions.StartExecution(request, metadata=api.auth())
    return reply


def test_answerer_loop_without_subcalls_cites_what_it_read(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "revenue", "root": [FIND_AND_ANSWER]}]
    session_id = api.ready_session()
    execution = start(api, session_id, "How did revenue develop?")
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED, execution.error
    assert execution.answer == "Answer: Revenue grew 14% to $48.2M"
    assert execution.budgets_consumed.turns == 1 and execution.budgets_consumed.llm_subcalls == 0
    refs = list(execution.citations)
    assert len(refs) == 1 and (refs[0].start_char, refs[0].end_char) == (
        REPORT.index("Revenue grew"),
        REPORT.index("Revenue grew") + 26,
    )
    verified = api.citations.VerifyCitation(
        citation_pb2.VerifyCitationRequest(ref=refs[0]), metadata=api.auth()
    )
    assert verified.valid and verified.text == "Revenue grew 14% to $48.2M"
    trace_key = execution.trace_s3_uri.split("/", 3)[3]
    trace = json.loads(gzip.decompress(api.plane.storage.blobs.get(trace_key)))
    assert trace["status"] == "COMPLETED" and trace["turns"][0]["root_output_raw"] == FIND_AND_ANSWER


def test_subcalls_yield_and_cache(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "CEO",
            "root": [
                block(
                    "tool.queue_llm('who', 'Who is the chief executive? ' + context[0][0:200])\ntool.YIELD('asked')"
                ),
                block(
                    "who = state['_tool_results']['llm']['who']['text']\n"
                    "context[0].find('Ana Souza')\ntool.FINAL(who)"
                ),
            ],
        }
    ]
    api.provider.script["sub"] = [{"match": "chief executive", "text": "Ana Souza"}]
    session_id = api.ready_session()
    first = start(api, session_id, "Who is the CEO?")
    assert first.status == execution_pb2.EXECUTION_STATUS_COMPLETED and first.answer == "Ana Souza"
    assert first.budgets_consumed.llm_subcalls == 1 and first.budgets_consumed.cache_hits == 0
    subs_before = sum(1 for c in api.provider.calls if c["role"] == "sub")
    second = start(api, session_id, "Who is the CEO?")
    assert (
        second.status == execution_pb2.EXECUTION_STATUS_COMPLETED and second.budgets_consumed.cache_hits == 1
    )
    assert sum(1 for c in api.provider.calls if c["role"] == "sub") == subs_before  # served by the cache


def test_a_torn_cache_entry_is_a_miss_and_the_call_is_paid_again(api: Api) -> None:
    """A damaged cache entry (a disk or bucket fault, a hand edit) reads as a
    miss: the call is paid again, the execution neither fails (it was
    INTERNAL_ERROR) nor answers from garbage."""
    api.provider.script["executions"] = [
        {
            "match": "chair",
            "root": [
                block(
                    "tool.queue_llm('who', 'Who chairs the board? ' + context[0][0:200])\ntool.YIELD('asked')"
                ),
                block("tool.FINAL(state['_tool_results']['llm']['who']['text'])"),
            ],
        }
    ]
    api.provider.script["sub"] = [{"match": "chairs the board", "text": "Li Wei"}]
    session_id = api.ready_session()
    first = start(api, session_id, "Who is the chair?")
    assert first.status == execution_pb2.EXECUTION_STATUS_COMPLETED and first.answer == "Li Wei"
    blobs = api.plane.storage.blobs
    entries = [k for k in blobs.list("cache/tenant-a/llm/") if b"Li Wei" in blobs.get(k)]
    assert len(entries) == 1
    path = blobs.local_path(entries[0])
    assert path is not None
    path.write_bytes(b'{"response": {"te')  # a damaged entry
    subs_before = sum(1 for c in api.provider.calls if c["role"] == "sub")
    second = start(api, session_id, "Who is the chair?")
    assert second.status == execution_pb2.EXECUTION_STATUS_COMPLETED, second.error
    assert second.answer == "Li Wei" and second.budgets_consumed.cache_hits == 0
    assert sum(1 for c in api.provider.calls if c["role"] == "sub") == subs_before + 1  # paid again


def test_tool_error_and_recovery(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "fragile",
            "root": [
                block("tool.queue_llm('x', 'EXPLODE please')\ntool.YIELD()"),
                block(
                    "status = state['_tool_status']['x']\n"
                    "tool.FINAL('fallback after ' + status + ': ' + context[1][:13])"
                ),
            ],
        }
    ]
    api.provider.script["fail_sub"] = ["EXPLODE"]
    execution = start(api, api.ready_session(), "a fragile question")
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        and execution.answer == "fallback after error: Meeting notes"
    )


def test_step_error_is_recorded_and_the_loop_goes_on(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "typo",
            "root": [
                block("print(undefined_name)"),
                block("tool.FINAL('recovered from ' + state['work']['last_error'][:21])"),
            ],
        }
    ]
    execution = start(api, api.ready_session(), "a typo question")
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        and execution.answer == "recovered from SANDBOX_RUNTIME_ERROR"
    )
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution.execution_id), metadata=api.auth()
    ).steps
    assert [s.success for s in steps] == [False, True] and steps[0].error.code == "SANDBOX_RUNTIME_ERROR"


def test_prose_reply_is_rejected_and_counted_as_a_turn(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "chatty", "root": ["Sure! Let me look.", FIND_AND_ANSWER]}]
    execution = start(api, api.ready_session(), "a chatty question")
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and execution.budgets_consumed.turns == 2
    )


def test_max_turns_exceeded(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "endless", "root": [block("print(len(context))")]}]
    execution = start(api, api.ready_session(), "endless", budgets=Budgets(max_turns=3))
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_MAX_TURNS_EXCEEDED
        and execution.budgets_consumed.turns == 3
    )
    assert execution.error.code == "MAX_TURNS_EXCEEDED"


def test_budget_exceeded_when_total_time_is_spent_before_a_turn(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "slow", "root": [FIND_AND_ANSWER]}]
    execution = start(api, api.ready_session(), "slow", budgets=Budgets(max_total_seconds=0.001))
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_BUDGET_EXCEEDED
        and execution.error.code == "BUDGET_EXCEEDED"
    )
    assert execution.budgets_consumed.turns == 0


def test_budget_exceeded_when_a_turn_ends_past_the_deadline(api: Api) -> None:
    # the step spends ~1 s in a regex that times out (caught), past a 0.5 s execution deadline
    api.provider.script["executions"] = [
        {
            "match": "stuck",
            "root": [
                block(
                    "try:\n    context[0].regex(r'(a|aa)+$')\nexcept RuntimeError:\n    print('regex gave up')"
                )
            ],
        }
    ]
    execution = start(
        api, api.ready_session(["a" * 60 + "!"]), "stuck", budgets=Budgets(max_total_seconds=0.5)
    )
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_BUDGET_EXCEEDED
        and execution.error.code == "BUDGET_EXCEEDED"
    )
    assert execution.error.message == "max_total_seconds spent"
    assert execution.budgets_consumed.turns == 1


def test_failed_when_the_root_model_cannot_answer(api: Api) -> None:
    api.provider.script["executions"] = []  # the scripted provider raises a provider error
    execution = start(api, api.ready_session(), "nobody home")
    assert (
        execution.status == execution_pb2.EXECUTION_STATUS_FAILED
        and execution.error.code == "LLM_PROVIDER_ERROR"
    )


def test_subcall_budget_refusal_is_a_tool_error(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "greedy",
            "root": [
                block("tool.queue_llm('a', 'one')\ntool.queue_llm('b', 'two')\ntool.YIELD()"),
                block("tool.FINAL(state['_tool_status']['a'] + ',' + state['_tool_status']['b'])"),
            ],
        }
    ]
    execution = start(api, api.ready_session(), "greedy", budgets=Budgets(max_llm_subcalls=1))
    assert execution.answer == "resolved,error"


def test_cancel_mid_run_is_idempotent(api: Api) -> None:
    api.provider.script["executions"] = [
        {"match": "forever", "root": [block("x = 0\nfor i in range(20000):\n    x += i")]}
    ]
    session_id = api.ready_session()
    started = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(
            session_id=session_id, question="forever", budgets=Budgets(max_turns=200)
        ),
        metadata=api.auth(),
    )
    assert started.status == execution_pb2.EXECUTION_STATUS_RUNNING
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = api.executions.GetExecution(
            execution_pb2.GetExecutionRequest(execution_id=started.execution_id), metadata=api.auth()
        )
        if current.budgets_consumed.turns >= 2:
            break
        time.sleep(0.02)
    cancel = execution_pb2.CancelExecutionRequest(execution_id=started.execution_id)
    first = api.executions.CancelExecution(cancel, metadata=api.auth())
    second = api.executions.CancelExecution(cancel, metadata=api.auth())
    assert (
        first.status == second.status == execution_pb2.EXECUTION_STATUS_CANCELLED
        and first.completed_at == second.completed_at
    )
    waited = api.executions.WaitExecution(
        execution_pb2.WaitExecutionRequest(execution_id=started.execution_id, timeout_seconds=5),
        metadata=api.auth(),
    )
    assert waited.status == execution_pb2.EXECUTION_STATUS_CANCELLED and waited.budgets_consumed.turns < 200


def test_contexts_mode_returns_tagged_spans(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "passages",
            "root": [
                block(
                    "for h in context[0].find('Revenue'):\n    context[0].slice(h['start_char'], h['start_char'] + 26, tag='context')\n"
                    "context[1].slice(0, 13, tag='context:title')\ncontext[1][14:30]\ntool.FINAL('ignored')"
                )
            ],
        }
    ]
    execution = start(api, api.ready_session(), "passages", output_mode=execution_pb2.OUTPUT_MODE_CONTEXTS)
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and not execution.HasField("answer")
    items = list(execution.contexts)
    assert [(c.sequence_index, c.tag, c.text) for c in items] == [
        (0, "context", "Revenue grew 14% to $48.2M"),
        (1, "context:title", "Meeting notes"),
    ]
    assert [(r.start_char, r.end_char) for r in execution.citations] == [
        (c.ref.start_char, c.ref.end_char) for c in items
    ]


def test_return_and_redact_trace(api: Api) -> None:
    api.provider.script["executions"] = [{"match": "secret", "root": [FIND_AND_ANSWER]}]
    execution = start(api, api.ready_session(), "secret question", return_trace=True, redact_trace=True)
    trace = json.loads(execution.trace_json)
    assert trace["question"] == {"redacted": True, "chars": len("secret question")}  # inline: redacted too
    stored = json.loads(gzip.decompress(api.plane.storage.blobs.get(execution.trace_s3_uri.split("/", 3)[3])))
    assert stored == trace
    assert stored["turns"][0]["code"]["redacted"] is True


def test_execution_on_a_session_that_is_not_ready(api: Api) -> None:
    from rlm_rs.v1 import session_pb2

    api.plane.storage.blobs.put("raw/tenant-a/u1/x.txt", b"hello")
    created = api.sessions.CreateSession(
        session_pb2.CreateSessionRequest(
            docs=[
                session_pb2.DocumentInput(
                    source_name="x.txt",
                    mime_type="text/plain",
                    raw_s3_uri="s3://rlm-rs/raw/tenant-a/u1/x.txt",
                )
            ]
        ),
        metadata=api.auth(),
    )
    with pytest.raises(grpc.RpcError) as caught:
        start(api, created.session_id, "too early")
    assert (
        caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        and error_code(caught.value) == "SESSION_NOT_READY"
    )


def runtime(api: Api, session_id: str) -> str:
    created: execution_pb2.Execution = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth()
    )
    assert (
        created.status == execution_pb2.EXECUTION_STATUS_RUNNING
        and created.mode == execution_pb2.EXECUTION_MODE_RUNTIME
    )
    return created.execution_id


def step(api: Api, execution_id: str, code: str, state: str | None = None, resolve: bool = False):  # type: ignore[no-untyped-def]
    request = execution_pb2.RunStepRequest(
        execution_id=execution_id, code=code, options=execution_pb2.RunStepOptions(resolve_tools=resolve)
    )
    if state is not None:
        request.state_json = state
    return api.executions.RunStep(request, metadata=api.auth())


def test_runtime_mode_end_to_end(api: Api) -> None:
    api.provider.script["sub"] = [{"match": "Summarise", "text": "Revenue is up."}]
    execution_id = runtime(api, api.ready_session())
    first = step(
        api, execution_id, "tool.queue_llm('s', 'Summarise: ' + context[0][:100])\ntool.YIELD()", resolve=True
    )
    assert first.success and first.tool_requests.llm[0].key == "s"
    assert json.loads(first.state_json)["_tool_results"]["llm"]["s"]["text"] == "Revenue is up."
    failed = step(api, execution_id, "state['work']['x'] = 1\nundefined_name")
    assert not failed.success and failed.error.code == "SANDBOX_RUNTIME_ERROR"
    forged = step(
        api,
        execution_id,
        block(
            "print(state['_tool_status']['s'])\nstate['_tool_status']['s'] = 'forged'\n"
            "state['work']['seen'] = True"
        ),
    )
    assert forged.success and forged.stdout == "resolved\n"
    persisted = json.loads(forged.state_json)
    assert "forged" not in forged.state_json and persisted["work"] == {"seen": True}
    # the step saw the results: they left the state; the record of the step that queued them keeps them
    assert persisted["_tool_results"]["llm"] == {} and persisted["_tool_status"] == {}
    records = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=api.auth()
    ).steps
    assert json.loads(records[0].state_json)["_tool_results"]["llm"]["s"]["text"] == "Revenue is up."
    final = step(
        api,
        execution_id,
        "h = context[0].find('Lisbon')[0]\ntool.FINAL(context[0][h['start_char']:h['end_char']])",
    )
    assert final.final.is_final
    done = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    assert (
        done.status == execution_pb2.EXECUTION_STATUS_COMPLETED
        and done.answer == "Lisbon"
        and len(done.citations) >= 1
    )
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=api.auth()
    ).steps
    assert [s.success for s in steps] == [True, False, True, True]
    assert json.loads(steps[1].state_json) == json.loads(
        steps[0].state_json
    )  # the failed step changed nothing
    with pytest.raises(grpc.RpcError) as closed:
        step(api, execution_id, "x = 1")
    assert error_code(closed.value) == "VALIDATION_ERROR"  # it has ended (COMPLETED)


def test_runtime_state_override_and_large_state_offload(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    big = json.dumps({"work": {"blob": "é" * 200_000}, "_tool_status": {"x": "forged"}})
    result = step(api, execution_id, "state['work']['n'] = len(state['work']['blob'])", state=big)
    assert result.success
    persisted = json.loads(result.state_json)
    assert persisted["work"]["n"] == 200_000 and persisted["_tool_status"] == {}
    record = api.plane.storage.metadata.items.get("execution_state", f"EXEC#{execution_id}", "STATE")
    assert record is not None and record["state_json"] is None and record["state_s3_uri"].endswith(".json.gz")
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=api.auth()
    ).steps
    assert json.loads(steps[0].state_json) == persisted


def test_resolve_tools_endpoint(api: Api) -> None:
    api.provider.script["sub"] = [{"match": "capital", "text": "Lisbon"}]
    execution_id = runtime(api, api.ready_session())
    response = api.executions.ResolveTools(
        execution_pb2.ResolveToolsRequest(
            execution_id=execution_id,
            tool_requests=ToolRequests(
                llm=[LlmRequest(key="q", prompt="capital of Portugal?", max_tokens=10)]
            ),
        ),
        metadata=api.auth(),
    )
    assert (
        response.statuses["q"] == execution_pb2.TOOL_STATUS_RESOLVED
        and response.tool_results.llm["q"].text == "Lisbon"
    )
    with pytest.raises(grpc.RpcError) as caught:
        api.executions.ResolveTools(
            execution_pb2.ResolveToolsRequest(execution_id=execution_id), metadata=api.auth()
        )
    assert error_code(caught.value) == "VALIDATION_ERROR"


def test_other_tenant_cannot_touch_an_execution(api: Api) -> None:
    execution_id = runtime(api, api.ready_session())
    other, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    calls: list[tuple[Any, Any]] = [
        (api.executions.GetExecution, execution_pb2.GetExecutionRequest(execution_id=execution_id)),
        (api.executions.CancelExecution, execution_pb2.CancelExecutionRequest(execution_id=execution_id)),
        (api.executions.RunStep, execution_pb2.RunStepRequest(execution_id=execution_id, code="x=1")),
        (api.executions.ListSteps, execution_pb2.ListStepsRequest(execution_id=execution_id)),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, metadata=api.auth(other))
        assert error_code(caught.value) == "EXECUTION_NOT_FOUND"


def test_batched_subcalls_resolve_into_one_list_within_budgets(api: Api) -> None:
    api.provider.script["executions"] = [
        {
            "match": "batch",
            "root": [
                block(
                    "tool.queue_llm_batch('cities', ['city of doc0: ' + context[0][:30], 'city of doc1', 'city of x'])\n"
                    "tool.YIELD()"
                ),
                block(
                    "results = state['_tool_results']['llm_batch']['cities']['results']\n"
                    "tool.FINAL(state['_tool_status']['cities'] + ':' + ','.join(r['text'] or r['meta']['error'][:10] for r in results))"
                ),
            ],
        }
    ]
    api.provider.script["sub"] = [{"match": "doc0", "text": "Lisbon"}, {"match": "doc1", "text": "Porto"}]
    execution = start(api, api.ready_session(), "batch question", budgets=Budgets(max_llm_subcalls=2))
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    assert execution.answer == "error:Lisbon,Porto,sub-call b"  # the third prompt hit max_llm_subcalls
    assert execution.budgets_consumed.llm_subcalls == 2


def test_resolve_tools_endpoint_resolves_batches(api: Api) -> None:
    from rlm_rs.v1.common_pb2 import LlmBatchRequest

    api.provider.script["sub"] = [{"match": "one", "text": "1"}, {"match": "two", "text": "2"}]
    execution_id = runtime(api, api.ready_session())
    response = api.executions.ResolveTools(
        execution_pb2.ResolveToolsRequest(
            execution_id=execution_id,
            tool_requests=ToolRequests(
                llm_batch=[LlmBatchRequest(key="b", prompts=["one", "two"], max_tokens=5)]
            ),
        ),
        metadata=api.auth(),
    )
    assert response.statuses["b"] == execution_pb2.TOOL_STATUS_RESOLVED
    assert [r.text for r in response.tool_results.llm_batch["b"].results] == ["1", "2"]
    result = step(
        api, execution_id, "print([r['text'] for r in state['_tool_results']['llm_batch']['b']['results']])"
    )
    assert result.stdout == "['1', '2']\n"


def test_executions_tail_prints_turns_and_outcome(api: Api) -> None:
    import subprocess
    import sys

    api.provider.script["executions"] = [
        {"match": "tail", "root": [block("print('looking')"), FIND_AND_ANSWER]}
    ]
    execution = start(api, api.ready_session(), "tail question")
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "executions", "tail", execution.execution_id,
         "--grpc-target", f"127.0.0.1:{api.plane.port}", "--api-key", api.key],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "turn 0: ok" in output and "  | looking" in output
    assert "FINAL: Answer: Revenue grew" in output and output.strip().endswith(
        "COMPLETED: Answer: Revenue grew 14% to $48.2M"
    )
