"""Every gRPC method that takes an id: a second tenant's key gets the same
not-found answer for another tenant's real id as for an id that never existed
(no existence oracle through codes or messages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from rlm_rs.v1 import citation_pb2, execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import LlmRequest, SpanRef, ToolRequests
from tests.integration.control.conftest import Api, error_code


def _calls(api: Api, session_id: str, execution_id: str, doc_id: str) -> dict[str, Callable[[str, str], Any]]:
    """name -> call(session_or_execution_id, metadata key) for every id-taking method."""
    e, s, c = api.executions, api.sessions, api.citations
    return {
        "GetSession": lambda sid, key: s.GetSession(session_pb2.GetSessionRequest(session_id=sid), metadata=api.auth(key)),
        "DeleteSession": lambda sid, key: s.DeleteSession(session_pb2.DeleteSessionRequest(session_id=sid), metadata=api.auth(key)),
        "StartExecution": lambda sid, key: e.StartExecution(execution_pb2.StartExecutionRequest(session_id=sid, question="q"), metadata=api.auth(key)),
        "CreateRuntimeExecution": lambda sid, key: e.CreateRuntimeExecution(execution_pb2.CreateRuntimeExecutionRequest(session_id=sid), metadata=api.auth(key)),
        "GetSpan": lambda sid, key: c.GetSpan(citation_pb2.GetSpanRequest(session_id=sid, doc_id=doc_id, start_char=0, end_char=5), metadata=api.auth(key)),
        "VerifyCitation": lambda sid, key: c.VerifyCitation(citation_pb2.VerifyCitationRequest(ref=SpanRef(session_id=sid, doc_id=doc_id, end_char=5)), metadata=api.auth(key)),
        "GetExecution": lambda eid, key: e.GetExecution(execution_pb2.GetExecutionRequest(execution_id=eid), metadata=api.auth(key)),
        "WaitExecution": lambda eid, key: e.WaitExecution(execution_pb2.WaitExecutionRequest(execution_id=eid, timeout_seconds=0.1), metadata=api.auth(key)),
        "CancelExecution": lambda eid, key: e.CancelExecution(execution_pb2.CancelExecutionRequest(execution_id=eid), metadata=api.auth(key)),
        "ListSteps": lambda eid, key: e.ListSteps(execution_pb2.ListStepsRequest(execution_id=eid), metadata=api.auth(key)),
        "RunStep": lambda eid, key: e.RunStep(execution_pb2.RunStepRequest(execution_id=eid, code="x = 1"), metadata=api.auth(key)),
        "ResolveTools": lambda eid, key: e.ResolveTools(execution_pb2.ResolveToolsRequest(
            execution_id=eid, tool_requests=ToolRequests(llm=[LlmRequest(key="k", prompt="p")])), metadata=api.auth(key)),
        "WatchExecution": lambda eid, key: list(e.WatchExecution(execution_pb2.WatchExecutionRequest(execution_id=eid), metadata=api.auth(key), timeout=10)),
        "StartFollowup": lambda eid, key: e.StartFollowup(execution_pb2.StartFollowupRequest(execution_id=eid, question="q"), metadata=api.auth(key)),
        "ListExecutions": lambda sid, key: e.ListExecutions(execution_pb2.ListExecutionsRequest(session_id=sid), metadata=api.auth(key)),
    }  # fmt: skip


SESSION_METHODS = (
    "GetSession",
    "DeleteSession",
    "StartExecution",
    "CreateRuntimeExecution",
    "GetSpan",
    "VerifyCitation",
    "ListExecutions",
)


def _outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), error_code(caught.value), caught.value.details()


def test_every_id_taking_method_hides_other_tenants(api: Api) -> None:
    session_id = api.ready_session()
    execution = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth()
    )
    doc_id = (
        api.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth())
        .docs[0]
        .doc_id
    )
    other, _ = api.plane.storage.metadata.create_api_key("tenant-b")
    calls = _calls(api, session_id, execution.execution_id, doc_id)
    assert len(calls) == 15
    for name, call in calls.items():
        real_id = session_id if name in SESSION_METHODS else execution.execution_id
        fake_id = (
            "sess_000000000000000000000000" if name in SESSION_METHODS else "exec_000000000000000000000000"
        )
        foreign = _outcome(lambda: call(real_id, other))  # noqa: B023
        missing = _outcome(lambda: call(fake_id, other))  # noqa: B023
        assert foreign == missing, name
        assert foreign[0] == grpc.StatusCode.NOT_FOUND and foreign[1] in (
            "SESSION_NOT_FOUND",
            "EXECUTION_NOT_FOUND",
        ), name
    # and the owner still has everything, untouched
    owner = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution.execution_id), metadata=api.auth()
    )
    assert owner.status == execution_pb2.EXECUTION_STATUS_RUNNING and owner.budgets_consumed.turns == 0
    assert (
        api.sessions.GetSession(
            session_pb2.GetSessionRequest(session_id=session_id), metadata=api.auth()
        ).status
        == session_pb2.SESSION_STATUS_READY
    )
