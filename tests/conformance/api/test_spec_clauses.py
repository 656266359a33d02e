"""Clauses of spec v1.3 checked from its text alone, over HTTP against a
real appliance (conftest.py): the trace schema (Appendix C), tool request
shapes (§11.1, §11.2), step records and outputs (§16.3, §16.4), null for
unset values, request ids and error codes (§16.1, §22), the wall-clock
budget (Appendix A) and `state["_tool_schema"]` (Appendix D1)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from tests.conformance.api.conftest import Appliance

SPEC_ERROR_CODES = {
    "UNAUTHORIZED", "FORBIDDEN", "SESSION_NOT_FOUND", "EXECUTION_NOT_FOUND", "SESSION_NOT_READY",
    "SESSION_EXPIRED", "VALIDATION_ERROR", "RATE_LIMITED", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED",
    "STEP_TIMEOUT", "SANDBOX_AST_REJECTED", "SANDBOX_LINE_LIMIT", "STATE_INVALID_TYPE", "STATE_TOO_LARGE",
    "CHECKSUM_MISMATCH", "S3_READ_ERROR", "PARSER_ERROR", "LLM_PROVIDER_ERROR", "LAMBDA_ERROR",
    "INTERNAL_ERROR",
}  # fmt: skip
NOT_FINAL = {"is_final": False, "answer": None}


def _runtime(c: httpx.Client, app: Appliance, budgets: dict[str, Any] | None = None) -> str:
    created = c.post(f"/v1/sessions/{app.session_id}/executions/runtime", json={"budgets": budgets or {}})
    assert created.status_code == 201, created.text
    return str(created.json()["execution_id"])


def _step(c: httpx.Client, execution_id: str, code: str) -> httpx.Response:
    return c.post(f"/v1/executions/{execution_id}/steps", json={"code": code})


def _answerer_with_subcall(c: httpx.Client, app: Appliance) -> dict[str, Any]:
    body = {"question": "summarize the report", "options": {"synchronous": True, "return_trace": True}}
    done = c.post(f"/v1/sessions/{app.session_id}/executions", json=body)
    assert done.status_code == 201, done.text
    view: dict[str, Any] = done.json()
    assert view["status"] == "COMPLETED", view
    assert view["budgets_consumed"]["cost_usd"] == 0  # the offline scripted provider is free
    return view


def test_trace_follows_appendix_c(appliance: Appliance) -> None:
    with appliance.client() as c:
        trace = _answerer_with_subcall(c, appliance)["trace"]
    assert trace["version"] == "1.1"
    for name in ("tenant_id", "session_id", "execution_id", "mode", "question", "started_at",
                 "completed_at", "status", "budgets_requested", "budgets_consumed", "turns", "final"):  # fmt: skip
        assert name in trace, name
    first, last = trace["turns"]
    assert "sandbox" not in first
    assert set(first["lambda"]) >= {"success", "stdout", "span_log", "tool_requests", "final", "error",
                                    "duration_ms"}  # fmt: skip
    assert first["lambda"]["final"] == NOT_FINAL and first["lambda"]["error"] is None
    assert first["lambda"]["tool_requests"]["llm"][0]["type"] == "llm"
    resolution = first["tool_resolution"]
    assert set(resolution) == {"requests", "results", "duration_ms"}
    assert [r["key"] for r in resolution["requests"]["llm"]] == ["s"]
    assert resolution["results"] and isinstance(resolution["duration_ms"], (int, float))
    assert last["lambda"]["final"] == {"is_final": True, "answer": "a summary Annual"}
    assert last["lambda"]["span_log"] == [{"doc_index": 0, "start_char": 0, "end_char": 6, "tag": None}]
    assert trace["final"]["answer"] == "a summary Annual"


def test_step_records_show_spec_shapes(appliance: Appliance) -> None:
    with appliance.client() as c:
        view = _answerer_with_subcall(c, appliance)
        steps = c.get(f"/v1/executions/{view['execution_id']}/steps").json()["steps"]
    first, last = steps
    assert first["final"] == NOT_FINAL
    assert first["tool_requests"]["llm"] == [
        {"type": "llm", "key": "s", "prompt": "summarize the report", "model_hint": "sub",
         "max_tokens": 1024, "temperature": 0.0, "metadata": None},
    ]  # fmt: skip
    assert last["tool_requests"] == {"llm": [], "search": [], "llm_batch": [], "rlm": []}  # queued nothing
    assert last["span_log"][0]["tag"] is None
    assert "queue_llm" in first["state"]["work"]["schema"]  # Appendix D1: the step read state["_tool_schema"]


def test_runtime_step_output_and_search_request_type(appliance: Appliance) -> None:
    with appliance.client() as c:
        execution_id = _runtime(c, appliance)
        out = _step(
            c, execution_id,
            "x = context[0][0:6]\ny = context[0].slice(7, 11, tag='t')\n"
            "tool.queue_search('q', 'revenue', k=3)\ntool.queue_llm('l', 'hi')\n"
            "print(state['_tool_schema']['queue_search']['enabled'])",
        )  # fmt: skip
        assert out.status_code == 200, out.text
        step = out.json()
        assert step["success"], step
        assert step["final"] == NOT_FINAL and step["error"] is None
        assert [s["tag"] for s in step["span_log"]] == [None, "t"]
        assert step["tool_requests"]["search"][0]["type"] == "search"
        assert step["tool_requests"]["search"][0]["query"] == "revenue"
        assert step["tool_requests"]["llm"][0]["type"] == "llm"
        assert step["stdout"].strip() == "True"
        assert "_tool_schema" not in step["state"]  # shown to the code, never persisted
        assert step["state"]["_tool_status"] == {"q": "pending", "l": "pending"}  # §6.3: queued, unresolved
        resolved = c.post(
            f"/v1/executions/{execution_id}/tools/resolve",
            json={"tool_requests": {"llm": [{"key": "l", "prompt": "hi"}]}},
        ).json()
        assert resolved["statuses"] == {"l": "resolved"}
        seen = _step(c, execution_id, "print(sorted(state['_tool_status'].items()))").json()
        assert seen["stdout"].strip() == "[('l', 'resolved'), ('q', 'pending')]", seen
        listed = c.get(f"/v1/executions/{execution_id}/steps").json()["steps"][0]
        assert listed["final"] == NOT_FINAL and listed["span_log"][0]["tag"] is None
        assert listed["tool_requests"]["search"][0]["type"] == "search"


def test_unset_values_are_null(appliance: Appliance) -> None:
    with appliance.client() as c:
        execution_id = _runtime(c, appliance)
        view = c.get(f"/v1/executions/{execution_id}").json()
        assert view["status"] == "RUNNING"
        assert view["completed_at"] is None and view["trace_s3_uri"] is None
        assert view["contexts_s3_uri"] is None
        done = _answerer_with_subcall(c, appliance)
        assert done["contexts_s3_uri"] is None and done["completed_at"] and done["trace_s3_uri"]


def test_request_ids_take_the_req_form(appliance: Appliance) -> None:
    with appliance.client() as c:
        missing = c.get("/v1/executions/exec_000000000000000000000000")
    assert missing.status_code == 404
    request_id = missing.json()["error"]["request_id"]
    assert re.fullmatch(r"req_[0-9a-f]{32}", request_id), request_id
    assert missing.headers["x-request-id"] == request_id
    anonymous = httpx.get(f"{appliance.base_url}/v1/sessions/sess_x")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["request_id"].startswith("req_")


def test_a_step_on_an_ended_runtime_execution_answers_a_spec_code(appliance: Appliance) -> None:
    with appliance.client() as c:
        finished = _runtime(c, appliance)
        assert _step(c, finished, "tool.FINAL('done')").json()["final"] == {
            "is_final": True,
            "answer": "done",
        }
        after = _step(c, finished, "print(1)")
        resolve = c.post(
            f"/v1/executions/{finished}/tools/resolve",
            json={"tool_requests": {"llm": [{"key": "k", "prompt": "hi"}]}},
        )
        capped = _runtime(c, appliance, {"max_turns": 1})
        assert _step(c, capped, "print(1)").status_code == 200
        over = [_step(c, capped, "print(2)") for _ in range(2)]
    for refused in (after, resolve):
        error = refused.json()["error"]
        assert refused.status_code == 422 and error["code"] == "VALIDATION_ERROR", refused.text
        assert error["details"]["status"] == "COMPLETED"
    assert [r.status_code for r in over] == [400, 400]
    assert [r.json()["error"]["code"] for r in over] == ["MAX_TURNS_EXCEEDED"] * 2  # the same answer again
    for response in (after, resolve, *over):
        assert response.json()["error"]["code"] in SPEC_ERROR_CODES


def test_max_total_seconds_ends_budget_exceeded_in_both_modes(appliance: Appliance) -> None:
    """Appendix A: running out of total time is BUDGET_EXCEEDED, whether the
    deadline passes between calls or during a step."""
    with appliance.client() as c:
        during = _runtime(c, appliance, {"max_total_seconds": 0.25})
        slow = _step(c, during, "n = 0\nfor i in range(600000):\n    n += 1\nprint(n)")
        assert slow.status_code == 200 and slow.json()["success"], slow.text
        ended = c.get(f"/v1/executions/{during}").json()
        between = _runtime(c, appliance, {"max_total_seconds": 0.2})
        time.sleep(0.4)
        late = _step(c, between, "print(1)")
        ended_between = c.get(f"/v1/executions/{between}").json()
    assert slow.json()["duration_ms"] > 250, "the step must outlast the budget for this check"
    assert ended["status"] == "BUDGET_EXCEEDED" and ended["error"]["code"] == "BUDGET_EXCEEDED", ended
    assert late.status_code == 400 and late.json()["error"]["code"] == "BUDGET_EXCEEDED"
    assert ended_between["status"] == "BUDGET_EXCEEDED"
