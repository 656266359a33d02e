"""The public RunStep answers RunStepResponse, a message of its own: each of its
fields has a counterpart of the same number and type in the sandbox's
internal StepResult, and `public_step` copies exactly those."""

from __future__ import annotations

from rlm_rs.control.services import public_step
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import ErrorDetail, Final, Span


def test_every_public_field_has_its_internal_counterpart() -> None:
    internal = StepResult.DESCRIPTOR.fields_by_name
    for field in execution_pb2.RunStepResponse.DESCRIPTOR.fields:
        twin = internal[field.name]
        assert (twin.number, twin.type, twin.is_repeated) == (field.number, field.type, field.is_repeated)
    method = execution_pb2.DESCRIPTOR.services_by_name["ExecutionService"].methods_by_name["RunStep"]
    assert method.output_type.full_name == "rlm_rs.v1.RunStepResponse"


def test_public_step_copies_the_result() -> None:
    result = StepResult(
        success=False, stdout="x", state_json='{"a":1}', span_log=[Span(doc_index=1, end_char=2)],
        final=Final(is_final=True, answer="42"), error=ErrorDetail(code="STEP_TIMEOUT", message="m"),
        turn_index=3, duration_ms=1.5, instructions_executed=7, yield_reason="", isolation="pool",
    )  # fmt: skip
    public = public_step(result)
    assert isinstance(public, execution_pb2.RunStepResponse)
    assert public.SerializeToString(deterministic=True) == result.SerializeToString(deterministic=True)
    assert not public.HasField("tool_requests")
