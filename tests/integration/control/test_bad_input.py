"""Every bad input gets a 4xx error in the spec's envelope, never a 500, and
nothing over a size limit reaches storage: the cases a red team and the gRPC
fuzzer (tests/fuzz/test_fuzz_grpc.py) found, each over a real gRPC socket."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from rlm_rs.control import services
from rlm_rs.control.executions.events import EVENT_DATA_CHARS
from rlm_rs.domain import EventType
from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import Budgets, RlmRequest, SpanRef, ToolRequests
from tests.integration.control.conftest import Api, error_code


def _step(api: Api, execution_id: str, code: str, state: str | None = None) -> Any:
    request = execution_pb2.RunStepRequest(execution_id=execution_id, code=code)
    if state is not None:
        request.state_json = state
    return api.executions.RunStep(request, metadata=api.auth())


def _code_of(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    return error_code(caught.value)


@pytest.mark.parametrize("token", ["²", "1" * 5_000, "-1", "abc", "٣"])
def test_a_page_token_this_service_never_issued_is_a_validation_error(api: Api, token: str) -> None:
    request = session_pb2.ListSessionsRequest(page_token=token)
    assert _code_of(lambda: api.sessions.ListSessions(request, metadata=api.auth())) == "VALIDATION_ERROR"


def test_a_page_token_it_issued_pages(api: Api) -> None:
    for _ in range(3):
        api.ready_session()
    first = api.sessions.ListSessions(session_pb2.ListSessionsRequest(page_size=2), metadata=api.auth())
    assert len(first.sessions) == 2 and first.next_page_token  # opaque
    second = api.sessions.ListSessions(
        session_pb2.ListSessionsRequest(page_size=2, page_token=first.next_page_token), metadata=api.auth()
    )
    assert len(second.sessions) == 1 and second.next_page_token == ""


@pytest.mark.parametrize(
    "budgets",
    [
        Budgets(max_total_seconds=float("nan")),
        Budgets(max_step_seconds=float("inf")),
        Budgets(max_cost_usd=-1.0),
        Budgets(max_turns=-1),
        Budgets(max_turns=2**31 - 1),  # above its ceiling
    ],
)
def test_bad_child_budgets_are_a_tool_error_and_the_parent_stays_readable(api: Api, budgets: Budgets) -> None:
    execution_id = api.runtime_execution()
    response = api.executions.ResolveTools(
        execution_pb2.ResolveToolsRequest(
            execution_id=execution_id,
            tool_requests=ToolRequests(rlm=[RlmRequest(key="kid", question="q", budgets=budgets)]),
        ),
        metadata=api.auth(),
    )
    assert response.statuses["kid"] == execution_pb2.TOOL_STATUS_ERROR
    assert "VALIDATION_ERROR" in json.loads(response.tool_results.rlm["kid"].meta_json)["error"]
    parent = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    assert parent.status == execution_pb2.EXECUTION_STATUS_RUNNING and list(parent.children) == []
    assert _step(api, execution_id, "print('still fine')").success


def test_nan_in_a_budgets_message_is_a_validation_error(api: Api) -> None:
    session_id = api.ready_session()
    request = execution_pb2.CreateRuntimeExecutionRequest(
        session_id=session_id, budgets=Budgets(max_total_seconds=float("nan"))
    )
    code = _code_of(lambda: api.executions.CreateRuntimeExecution(request, metadata=api.auth()))
    assert code == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "VALIDATION_ERROR"),  # RecursionError in json
        ('{"a":' * 100 + "1" + "}" * 100, "STATE_INVALID_TYPE"),  # deeper than the sandbox allows
        ('{"work": {"n": NaN}}', "VALIDATION_ERROR"),
        ('{"work": {"n": ' + "1" * 5_000 + "}}", "VALIDATION_ERROR"),  # past 4,300 digits
        ('{"work": {"n": ' + "1" * 4_250 + "}}", "STATE_INVALID_TYPE"),  # parses, but not JSON here
        ('{"work": "' + "x" * 600_000 + '"}', "STATE_TOO_LARGE"),
        ("[1]", "VALIDATION_ERROR"),
    ],
)
def test_a_bad_state_override_is_refused_before_the_step(api: Api, state: str, expected: str) -> None:
    execution_id = api.runtime_execution()
    assert _code_of(lambda: _step(api, execution_id, "print(1)", state)) == expected
    assert api.plane.storage.metadata.get_execution("tenant-a", execution_id)["next_turn"] == 0


def test_an_integer_past_the_str_limit_in_state_is_state_invalid_type(api: Api) -> None:
    execution_id = api.runtime_execution()
    result = _step(api, execution_id, "state['work']['n'] = 10 ** 5000")
    assert not result.success and result.error.code == "STATE_INVALID_TYPE", result.error
    final = _step(api, execution_id, "tool.FINAL(10 ** 5000)")
    assert not final.success and final.error.code == "STATE_INVALID_TYPE", final.error


def _steps(api: Api, execution_id: str) -> list[Any]:
    return list(
        api.executions.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=api.auth()
        ).steps
    )


def test_a_final_answer_past_the_limit_fails_the_step_and_is_not_stored(api: Api) -> None:
    execution_id = api.runtime_execution()
    result = _step(api, execution_id, "state['work']['x'] = 1\ntool.FINAL('a' * 250000)")
    assert not result.success and result.error.code == "BUDGET_EXCEEDED"
    assert json.loads(result.error.details_json)["limit"] == "max_final_answer_chars"
    assert not result.final.is_final and json.loads(result.state_json)["work"] == {}
    record = api.plane.storage.metadata.get_execution("tenant-a", execution_id)
    assert record["status"] == "RUNNING" and record["answer"] is None
    (step,) = _steps(api, execution_id)
    assert not step.final.is_final and step.error.code == "BUDGET_EXCEEDED"


def test_tool_metadata_past_the_limit_fails_the_step(api: Api) -> None:
    # Two walls: the sandbox refuses metadata past its own 16,000 chars when the
    # request is queued; the control plane's RLM_MAX_TOOL_METADATA_CHARS (set
    # lower here) refuses what the sandbox let through, before anything is stored.
    execution_id = api.runtime_execution()
    code = "tool.queue_llm('k', 'a prompt', metadata={'m': 'x' * 40000})\ntool.YIELD()"
    result = _step(api, execution_id, code)
    assert not result.success and result.error.code == "STATE_TOO_LARGE"
    assert json.loads(result.error.details_json)["limit"] == 16_000
    api.plane.engine.settings.max_tool_metadata_chars = 1_000
    result = _step(api, execution_id, code.replace("40000", "5000"))
    assert not result.success and json.loads(result.error.details_json)["limit"] == "max_tool_metadata_chars"
    steps = _steps(api, execution_id)
    assert [len(step.tool_requests.llm) for step in steps] == [0, 0]
    assert steps[-1].error.code == "BUDGET_EXCEEDED"


def test_a_step_record_past_the_limit_fails_the_step(api: Api) -> None:
    api.plane.engine.settings.max_step_record_bytes = 100_000
    execution_id = api.runtime_execution()
    code = "for i in range(5):\n    tool.queue_llm('k' + str(i), 'p' * 30000)\ntool.YIELD()"
    result = _step(api, execution_id, code)
    assert not result.success and json.loads(result.error.details_json)["limit"] == "max_step_record_bytes"
    (step,) = _steps(api, execution_id)
    assert step.ByteSize() < 100_000 and len(step.tool_requests.llm) == 0


def test_an_event_past_its_size_limit_keeps_only_its_size(api: Api) -> None:
    execution_id = api.runtime_execution()
    record = api.plane.engine.get("tenant-a", execution_id)
    api.plane.engine.events.emit(record, 0, EventType.TOOL_REQUESTS, {"llm": ["k" * 250] * 500})
    (event,) = api.plane.engine.events.after(execution_id)
    data = json.loads(event["data_json"])
    assert data["truncated"] is True and data["chars"] > EVENT_DATA_CHARS
    assert len(event["data_json"]) < 100


def test_verify_citation_returns_at_most_the_span_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "MAX_SPAN_CHARS", 50, raising=False)
    session_id = api.ready_session()
    session = api.sessions.GetSession(
        session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth()
    )
    doc = session.docs[0]
    span = api.citations.GetSpan(
        citation_pb2.GetSpanRequest(session_id=session_id, doc_id=doc.doc_id, start_char=0, end_char=40),
        metadata=api.auth(),
    )
    assert len(span.text) == 40
    ref = SpanRef()
    ref.CopyFrom(span.ref)
    ref.end_char = doc.char_length  # past the limit, wrong checksum
    invalid = api.citations.VerifyCitation(citation_pb2.VerifyCitationRequest(ref=ref), metadata=api.auth())
    assert not invalid.valid and invalid.text == ""
    small = api.citations.VerifyCitation(
        citation_pb2.VerifyCitationRequest(ref=span.ref), metadata=api.auth()
    )
    assert small.valid and small.text == span.text


def test_list_steps_pages_by_count_and_by_bytes(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    execution_id = api.runtime_execution()
    for n in range(3):
        assert _step(api, execution_id, f"print({n})").success

    def page(size: int = 0, token: str = "") -> Any:
        return api.executions.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=execution_id, page_size=size, page_token=token),
            metadata=api.auth(),
        )

    first = page(2)
    assert [s.turn_index for s in first.steps] == [0, 1] and first.next_page_token == "2"
    last = page(2, first.next_page_token)
    assert [s.turn_index for s in last.steps] == [2] and last.next_page_token == ""
    monkeypatch.setattr(services, "LIST_STEPS_BYTES", 1, raising=False)  # one step per page, however big
    turns, token = [], ""
    while True:
        got = page(0, token)
        assert len(got.steps) == 1
        turns.append(got.steps[0].turn_index)
        token = got.next_page_token
        if not token:
            break
    assert turns == [0, 1, 2]
    for bad in ("²", "1" * 12, "-1"):
        assert _code_of(lambda bad=bad: page(0, bad)) == "VALIDATION_ERROR"
    assert _code_of(lambda: page(-1)) == "VALIDATION_ERROR"
