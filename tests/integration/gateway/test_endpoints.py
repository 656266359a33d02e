"""Every REST endpoint (docs/api.md#rest-api) over real HTTP: gateway process -> control plane process."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx

from tests.integration.gateway.conftest import DOC_TEXT, Stack


def envelope(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"code", "message", "request_id", "details"}
    assert err["code"] == code
    assert err["request_id"] == resp.headers["x-request-id"]
    return dict(err)


def test_session_get_shows_readiness_and_docs(stack: Stack) -> None:
    with stack.client() as c:
        body = c.get(f"/v1/sessions/{stack.session_id}").json()
    assert body["status"] == "READY"
    assert body["readiness"]["ready"] is True
    doc = body["docs"][0]
    assert doc["doc_id"] == stack.doc_id and doc["doc_index"] == 0
    for field in ("ingest_status", "text_s3_uri", "meta_s3_uri", "offsets_s3_uri"):
        assert doc[field]


def test_auth_is_passed_through(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as anon:
        envelope(anon.get(f"/v1/sessions/{stack.session_id}"), 401, "UNAUTHORIZED")
    with stack.client("rlm_key_not_a_real_key") as bad:
        envelope(bad.get(f"/v1/sessions/{stack.session_id}"), 401, "UNAUTHORIZED")
    with stack.client(stack.other_key) as other:
        resp = other.get(f"/v1/sessions/{stack.session_id}")
        assert resp.status_code in (403, 404), resp.text
        assert resp.json()["error"]["code"] in ("FORBIDDEN", "SESSION_NOT_FOUND")


def test_span_get_and_citation_verify(stack: Stack) -> None:
    with stack.client() as c:
        span = c.post(
            "/v1/spans/get",
            json={"session_id": stack.session_id, "doc_id": stack.doc_id,
                  "start_char": 20, "end_char": 54},
        )  # fmt: skip
        assert span.status_code == 200, span.text
        body = span.json()
        assert body["text"] == DOC_TEXT[20:54]
        digest = hashlib.sha256(DOC_TEXT[20:54].encode()).hexdigest()
        assert body["ref"]["checksum"] == f"sha256:{digest}"
        verified = c.post("/v1/citations/verify", json={"ref": body["ref"]}).json()
        assert verified["valid"] is True and verified["text"] == DOC_TEXT[20:54]
        assert verified["source_name"] == "report.txt"
        assert verified["char_range"] == {"start_char": 20, "end_char": 54}
        forged = {**body["ref"], "checksum": "sha256:" + "0" * 64}
        resp = c.post("/v1/citations/verify", json={"ref": forged})
        if resp.status_code == 200:
            assert resp.json()["valid"] is False
        else:
            envelope(resp, 400, "CHECKSUM_MISMATCH")


def test_runtime_steps_tools_and_step_list(stack: Stack) -> None:
    with stack.client() as c:
        created = c.post(f"/v1/sessions/{stack.session_id}/executions/runtime", json={})
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "RUNNING"
        eid = created.json()["execution_id"]
        code = (
            "t = context[0][0:19]\n"
            "state['work']['seen'] = t\n"
            "tool.queue_llm('k1', 'summarize ' + t)\n"
            "print(t)\n"
        )
        step = c.post(f"/v1/executions/{eid}/steps", json={"code": code})
        assert step.status_code == 200, step.text
        out = step.json()
        assert out["success"] is True, out
        assert out["stdout"].strip() == DOC_TEXT[0:19]
        assert out["state"]["work"]["seen"] == DOC_TEXT[0:19]
        assert out["span_log"][0] == {"doc_index": 0, "start_char": 0, "end_char": 19, "tag": None}
        llm = out["tool_requests"]["llm"]
        assert llm[0]["key"] == "k1"

        resolved = c.post(
            f"/v1/executions/{eid}/tools/resolve",
            json={"tool_requests": {"llm": [{"key": "k1", "prompt": llm[0]["prompt"]}]}},
        )
        assert resolved.status_code == 200, resolved.text
        res = resolved.json()
        assert res["tool_results"]["llm"]["k1"]["text"] == "a summary"
        assert res["statuses"]["k1"] == "resolved"

        bad = c.post(f"/v1/executions/{eid}/steps", json={"code": "import os"})
        if bad.status_code == 200:
            assert bad.json()["error"]["code"] == "SANDBOX_AST_REJECTED"
        else:
            envelope(bad, 400, "SANDBOX_AST_REJECTED")

        steps = c.get(f"/v1/executions/{eid}/steps").json()["steps"]
        assert steps[0]["turn_index"] == 0 and steps[0]["success"] is True
        assert steps[0]["state"]["work"]["seen"] == DOC_TEXT[0:19]
        assert steps[0]["checksum"].startswith("sha256:")
        assert set(steps[0]["summary"]) == {"byte_length", "char_length"}

        cancelled = c.post(f"/v1/executions/{eid}/cancel").json()
        again = c.post(f"/v1/executions/{eid}/cancel").json()
        assert cancelled["execution_id"] == eid and cancelled["status"] == "CANCELLED"
        assert again == cancelled  # idempotent


def test_answerer_start_wait_get(stack: Stack) -> None:
    with stack.client() as c:
        started = c.post(
            f"/v1/sessions/{stack.session_id}/executions",
            json={"question": "What happened to revenue?"},
        )
        assert started.status_code == 201, started.text
        eid = started.json()["execution_id"]
        waited = c.post(f"/v1/executions/{eid}/wait", json={"timeout_seconds": 20})
        assert waited.status_code == 200, waited.text
        got = c.get(f"/v1/executions/{eid}").json()
    assert got["status"] == "COMPLETED", got
    assert got["answer"] == "Revenue grew 12% to $4.5M in 2024."
    assert got["output_mode"] == "ANSWER"
    assert got["citations"] and got["citations"][0]["doc_id"] == stack.doc_id
    assert got["budgets_consumed"]["turns"] == 1
    assert {"turns", "llm_subcalls", "total_seconds"} <= set(got["budgets_consumed"])


def test_not_found_codes(stack: Stack) -> None:
    with stack.client() as c:
        envelope(c.get("/v1/sessions/sess_nope"), 404, "SESSION_NOT_FOUND")
        envelope(c.get("/v1/executions/exec_nope"), 404, "EXECUTION_NOT_FOUND")
        envelope(c.get("/v1/nothing/here"), 404, "NOT_FOUND")


def test_oversized_body_is_refused(stack: Stack) -> None:
    with stack.client() as c:
        resp = c.post("/v1/executions/x/steps", json={"code": "x" * 300_000})
    envelope(resp, 413, "PAYLOAD_TOO_LARGE")


def test_rate_limited_tenant_gets_429_with_retry_after(stack: Stack) -> None:
    with stack.client(stack.limited_key) as c:
        codes = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            resp = c.get("/v1/executions/exec_nope")
            codes.append(resp.status_code)
            if resp.status_code == 429:
                envelope(resp, 429, "RATE_LIMITED")
                assert int(resp.headers["retry-after"]) >= 1
                break
    assert codes[-1] == 429, codes


def test_delete_session(stack: Stack) -> None:
    with stack.client() as c:
        created = c.post(
            "/v1/sessions",
            json={"docs": [{"source_name": "x.txt", "mime_type": "text/plain",
                            "raw_s3_uri": stack.raw_uri}]},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        sid = created.json()["session_id"]
        not_ready = c.post(f"/v1/sessions/{sid}/executions", json={"question": "revenue?"})
        envelope(not_ready, 409, "SESSION_NOT_READY")
        deleted = c.delete(f"/v1/sessions/{sid}")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["status"] == "DELETING"


def test_health(stack: Stack) -> None:
    assert httpx.get(f"{stack.base_url}/health/live").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.base_url}/health/ready").json()
    assert ready["status"] == "ok" and ready["components"]["control_plane"] == "SERVING"
