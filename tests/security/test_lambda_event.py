"""The Lambda handler's event contract (docs/api.md#step-api): JSON in, JSON out, and the
test-only unsafe flag can never arrive through an event."""

from __future__ import annotations

import json

import pytest

from rlm_rs.sandbox.lambda_handler import request_from_event, result_to_event
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.v1.common_pb2 import ErrorDetail, Span


def test_event_becomes_a_step_request_with_tool_results_in_state() -> None:
    event = {
        "tenant_id": "t",
        "session_id": "s",
        "execution_id": "e",
        "turn_index": 2,
        "code": "print(1)",
        "state": {"work": {"n": 1}},
        "tool_results": {"llm": {"k": {"text": "hi", "meta": {}}}, "search": {}},
        "context_manifest": [{"doc_index": 0, "text_path": "/cache/d0.txt"}],
        "limits": {"max_step_seconds": 5},
        "unsafe_disable_policy_layers": True,
    }
    request = request_from_event(event)
    assert request.turn_index == 2
    assert not request.unsafe_disable_policy_layers
    assert json.loads(request.state_json)["_tool_results"]["llm"]["k"]["text"] == "hi"
    assert request.context_manifest[0].text_path == "/cache/d0.txt"
    assert request.limits.max_step_seconds == 5


def test_unknown_event_fields_are_refused() -> None:
    with pytest.raises(ValueError):
        request_from_event({"code": "x", "surprise": 1})


def test_result_is_plain_json_with_state_as_an_object() -> None:
    result = StepResult(
        success=False,
        state_json='{"a": 1}',
        span_log=[Span(doc_index=0, start_char=1, end_char=4)],
        error=ErrorDetail(code="STEP_TIMEOUT", message="m", details_json='{"s": 1}'),
    )
    out = result_to_event(result)
    json.dumps(out)
    assert out["state"] == {"a": 1}
    assert out["error"]["details"] == {"s": 1}
    assert out["span_log"][0]["end_char"] == 4
    assert out["success"] is False


def test_handler_runs_a_step_with_documents_as_fds(tmp_path: object) -> None:
    import os

    from rlm_rs.sandbox.lambda_handler import handler

    path = os.path.join(str(tmp_path), "d0.txt")
    with open(path, "w") as f:
        f.write("hello lambda")
    event = {
        "tenant_id": "t",
        "turn_index": 1,
        "code": "print(context[0][0:5])\nstate['seen'] = True",
        "state": {"work": {}},
        "context_manifest": [{"doc_index": 0, "doc_id": "d0", "text_path": path}],
    }
    out = handler(event)
    assert out["success"] is True, out["error"]
    assert out["stdout"] == "hello\n"
    assert out["state"] == {"work": {}, "seen": True}
    assert out["isolation"] == "lambda"
    assert out["span_log"] == [{"doc_index": 0, "start_char": 0, "end_char": 5, "tag": ""}]
    escaped = handler({**event, "code": "import os"})
    assert escaped["error"]["code"] == "SANDBOX_AST_REJECTED"
    missing = handler({**event, "context_manifest": [{"doc_index": 0, "text_path": "/nope"}]})
    assert missing["error"]["code"] == "S3_READ_ERROR"
