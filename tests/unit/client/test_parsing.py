"""The client's pure parts: URL → transport, the SSE decoder, REST JSON → typed results
(`""` and null alike), the retry decisions, and protobuf ↔ REST JSON."""

from __future__ import annotations

import pytest

from rlm_rs.client import errors as ce
from rlm_rs.client._common import parse_target
from rlm_rs.client._http import SseDecoder
from rlm_rs.client._ops import OPS
from rlm_rs.client._retry import RetryPolicy
from rlm_rs.client.types import DocumentInput, Execution, StepResult, ToolRequests
from rlm_rs.codec import from_json, to_json
from rlm_rs.v1 import execution_pb2


@pytest.mark.parametrize(
    ("url", "kind", "address", "tls"),
    [
        ("http://127.0.0.1:8080", "http", "http://127.0.0.1:8080", False),
        ("https://rlm.example.com/api/", "http", "https://rlm.example.com/api", True),
        ("grpc://127.0.0.1:50051", "grpc", "127.0.0.1:50051", False),
        ("grpcs://rlm.internal:443", "grpc", "rlm.internal:443", True),
        ("unix:/run/rlm.sock", "grpc", "unix:/run/rlm.sock", False),
        ("unix:///run/rlm.sock", "grpc", "unix:/run/rlm.sock", False),
    ],
)
def test_the_url_picks_the_transport(url: str, kind: str, address: str, tls: bool) -> None:
    target = parse_target(url)
    assert (target.kind, target.address, target.tls) == (kind, address, tls)


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://x", "grpc://host", "grpc://host:1/path", "unix:"])
def test_an_unsupported_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_target(url)


def test_sse_decoder_reads_frames_and_skips_comments() -> None:
    decoder = SseDecoder()
    lines = [": keep-alive", "", "id: 000000.0000", "event: turn_started", 'data: {"a": 1}', "",
             "event: stream_error", "data: {}", ""]  # fmt: skip
    frames = [f for f in (decoder.feed(line) for line in lines) if f is not None]
    assert [(f.id, f.event, f.data) for f in frames] == [
        ("000000.0000", "turn_started", '{"a": 1}'),
        ("", "stream_error", "{}"),
    ]


@pytest.mark.parametrize("unset", ["", None])
def test_unset_strings_are_none_whether_empty_or_null(unset: str | None) -> None:
    execution = Execution.from_json(
        {"execution_id": "exec_1", "status": "RUNNING", "completed_at": unset, "trace_s3_uri": unset,
         "contexts_s3_uri": unset, "parent_execution_id": unset, "followup_of": unset, "answer": None,
         "error": None, "started_at": "2026-12-02T01:42:02.470882Z"}
    )  # fmt: skip
    assert execution.completed_at is None and execution.trace_s3_uri is None
    assert execution.contexts_s3_uri is None and execution.followup_of is None
    assert execution.started_at is not None and execution.started_at.tzinfo is not None
    assert not execution.finished


@pytest.mark.parametrize("final", [None, {"is_final": False, "answer": None}])
def test_a_step_that_did_not_finish_has_no_final(final: object) -> None:
    step = StepResult.from_json({"success": True, "final": final, "tool_requests": None})
    assert step.final is None and not step.is_final and not step.tool_requests


def test_a_failed_step_raises_only_when_asked() -> None:
    step = StepResult.from_json(
        {"success": False, "turn_index": 3, "error": {"code": "SANDBOX_RUNTIME_ERROR", "message": "boom"}}
    )
    with pytest.raises(ce.StepFailedError, match="step 3 failed: SANDBOX_RUNTIME_ERROR: boom"):
        step.raise_for_error()


def test_tool_requests_round_trip_to_the_resolve_body() -> None:
    data = {
        "llm": [
            {
                "key": "a",
                "prompt": "p",
                "model_hint": "sub",
                "max_tokens": 10,
                "temperature": 0,
                "metadata": None,
            }
        ],
        "search": [{"key": "s", "query": "q", "k": 5, "filters": {"doc_ids": ["d"]}}],
        "llm_batch": [{"key": "b", "prompts": ["x", "y"]}],
        "rlm": [{"key": "r", "question": "why", "doc_indices": [1], "spans": [], "budgets": None}],
    }
    requests = ToolRequests.from_json(data)
    assert requests.keys == ["a", "s", "b", "r"]
    assert requests.to_json() == {
        "llm": [{"key": "a", "prompt": "p", "model_hint": "sub", "max_tokens": 10}],
        "search": [{"key": "s", "query": "q", "k": 5, "filters": {"doc_ids": ["d"]}}],
        "llm_batch": [{"key": "b", "prompts": ["x", "y"]}],
        "rlm": [{"key": "r", "question": "why", "doc_indices": [1]}],
    }


def test_a_uri_becomes_a_document_named_after_the_file() -> None:
    doc = DocumentInput.coerce("s3://rlm-rs/raw/acme/69ed393580ff0795/keepers.docx")
    assert doc.source_name == "keepers.docx"
    assert doc.mime_type == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def test_proto_json_fields_become_json_values_both_ways() -> None:
    request = from_json(
        execution_pb2.RunStepRequest(),
        {"execution_id": "exec_1", "code": "x", "state": {"work": {"n": 2**40}}},
    )
    assert isinstance(request, execution_pb2.RunStepRequest)
    assert request.state_json == '{"work":{"n":1099511627776}}'
    event = execution_pb2.ExecutionEvent(
        event_id="000000.0000", type=execution_pb2.EVENT_TYPE_STATUS, data_json='{"status":"COMPLETED"}'
    )
    assert to_json(event)["data"] == {"status": "COMPLETED"} and to_json(event)["type"] == "status"


def test_every_rest_route_names_its_path_fields_in_the_request_message() -> None:
    for op in OPS.values():
        fields = set(op.request.DESCRIPTOR.fields_by_name)
        assert set(op.path_fields()) | set(op.query) <= fields, op.name


@pytest.mark.parametrize(
    ("error", "idempotent", "retried"),
    [
        (ce.RateLimitedError("RATE_LIMITED", "m"), False, True),
        (ce.ServiceUnavailableError("SERVICE_UNAVAILABLE", "m"), True, True),
        (ce.ServiceUnavailableError("SERVICE_UNAVAILABLE", "m"), False, False),
        (ce.RlmConnectionError("refused", sent=False), False, True),
        (ce.RlmConnectionError("reset", sent=True), False, False),
        (ce.RlmConnectionError("reset", sent=True), True, True),
        (ce.InternalError("INTERNAL_ERROR", "m"), True, False),
        (ce.SessionNotFoundError("SESSION_NOT_FOUND", "m"), True, False),
    ],
)
def test_what_is_retried(error: BaseException, idempotent: bool, retried: bool) -> None:
    assert RetryPolicy().should_retry(error, idempotent) is retried


def test_the_wait_is_the_servers_retry_after() -> None:
    error = ce.RateLimitedError("RATE_LIMITED", "m", details={"retry_after_seconds": "2"})
    assert 2.0 <= RetryPolicy().delay(1, error) <= 2.1
    assert RetryPolicy(initial_backoff_seconds=1.0).delay(3, None) <= 4.0


def test_a_status_the_wire_enum_lacks_is_a_validation_error_before_any_call() -> None:
    """The gRPC transport builds enums from the REST strings: an unknown one
    is VALIDATION_ERROR, as the gateway answers it over HTTP; unset is every status."""
    from rlm_rs.client._grpc import _request

    with pytest.raises(ce.RlmApiError) as refused:
        _request(OPS["ListSessions"], {"status": "ready", "page_size": 0}, "req_1")
    assert refused.value.code == "VALIDATION_ERROR" and refused.value.request_id == "req_1"
    listed = _request(OPS["ListExecutions"], {"status": "CANCELLED", "session_id": ""}, "req_2")
    assert listed.status == execution_pb2.EXECUTION_STATUS_CANCELLED
    assert _request(OPS["ListSessions"], {"status": None}, "req_3").status == 0
