"""RunStep over a real socket answers the public RunStepResponse."""

from __future__ import annotations

from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api


def test_run_step_answers_a_run_step_response(api: Api) -> None:
    execution_id = api.runtime_execution()
    request = execution_pb2.RunStepRequest(execution_id=execution_id, code="print(context[0][0:5])")
    reply = api.executions.RunStep(request, metadata=api.auth())
    assert isinstance(reply, execution_pb2.RunStepResponse)
    assert reply.success and reply.stdout.strip() and len(reply.span_log) == 1
    assert reply.turn_index == 0 and reply.isolation
