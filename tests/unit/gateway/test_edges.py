"""Gateway behaviour at the HTTP edge over real HTTP: envelopes, codes, request
ids, size limit, error translation from gRPC status + ErrorInfo."""

from __future__ import annotations

import json
import socket

import httpx

from tests.unit.gateway.conftest import StandInExecutions


def assert_envelope(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"code", "message", "request_id", "details"}
    assert err["code"] == code
    assert err["request_id"] == resp.headers["x-request-id"]
    assert "Traceback" not in resp.text
    return dict(err)


def test_unknown_route_is_not_found(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/nope"), 404, "NOT_FOUND")


def test_wrong_method_is_method_not_allowed(client: httpx.Client) -> None:
    resp = client.put("/v1/spans/get", json={})
    assert_envelope(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["allow"]


def test_malformed_json_is_validation_error(client: httpx.Client) -> None:
    resp = client.post("/v1/spans/get", content=b"{not json", headers={"content-type": "application/json"})
    err = assert_envelope(resp, 422, "VALIDATION_ERROR")
    assert err["message"] == "malformed JSON body"


def test_schema_violation_is_validation_error_with_locations(client: httpx.Client) -> None:
    resp = client.post("/v1/spans/get", json={"session_id": "s", "start_char": -1})
    err = assert_envelope(resp, 422, "VALIDATION_ERROR")
    locs = {tuple(e["loc"]) for e in err["details"]["errors"]}  # type: ignore[index]
    assert ("body", "doc_id") in locs and ("body", "start_char") in locs


def test_int_beyond_the_wire_is_refused_not_crashed(client: httpx.Client) -> None:
    body = {"session_id": "s", "doc_id": "d", "start_char": 2**70, "end_char": 1}
    assert_envelope(client.post("/v1/spans/get", json=body), 422, "VALIDATION_ERROR")


def test_oversized_body_by_content_length(client: httpx.Client) -> None:
    resp = client.post("/v1/spans/get", content=b"x" * 5000)
    err = assert_envelope(resp, 413, "PAYLOAD_TOO_LARGE")
    assert err["details"] == {"max_request_bytes": 4096}


def test_oversized_chunked_body(gateway_url: str) -> None:
    host, port = gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = (
            "POST /v1/spans/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 3000
        sock.sendall(head.encode())
        for _ in range(2):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 413")


def test_request_id_generated_and_echoed(client: httpx.Client) -> None:
    generated = client.get("/v1/nope").headers["x-request-id"]
    assert len(generated) >= 16
    given = client.get("/v1/nope", headers={"x-request-id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    assert given.json()["error"]["request_id"] == "req-123"
    unsafe = client.get("/v1/nope", headers={"x-request-id": "bad id\twith space"})
    assert unsafe.headers["x-request-id"] != "bad id\twith space"


def test_success_translates_proto_to_spec_json(
    client: httpx.Client, stand_in: tuple[str, StandInExecutions]
) -> None:
    resp = client.get(
        "/v1/executions/ex1",
        headers={"authorization": "Bearer rlm_key_abc", "x-request-id": "rid-1"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["execution_id"] == "ex1" and body["answer"] == "42"
    assert body["citations"][0]["start_char"] == 2**40  # int64 stays a JSON integer
    assert body["budgets_consumed"]["turns"] == 3
    assert "tenant_id" not in body and "question" not in body
    seen = stand_in[1].seen[-1]
    assert seen["authorization"] == "Bearer rlm_key_abc"
    assert seen["x-request-id"] == "rid-1"


def test_state_crosses_as_json_object(client: httpx.Client) -> None:
    resp = client.post("/v1/executions/e/steps", json={"code": "print(1)", "state": {"a": [1]}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == {"a": [1]}
    assert body["tool_requests"]["llm"][0]["metadata"] == {"n": 1}
    assert "state_json" not in json.dumps(body)


def test_spec_code_from_error_info(client: httpx.Client) -> None:
    err = assert_envelope(client.get("/v1/executions/missing"), 404, "EXECUTION_NOT_FOUND")
    assert err["details"] == {"execution_id": "missing"}


def test_rate_limited_has_retry_after(client: httpx.Client) -> None:
    resp = client.get("/v1/executions/rate")
    assert_envelope(resp, 429, "RATE_LIMITED")
    assert resp.headers["retry-after"] == "3"


def test_rate_limited_retry_after_from_retry_info(client: httpx.Client) -> None:
    resp = client.get("/v1/executions/retryinfo")
    err = assert_envelope(resp, 429, "RATE_LIMITED")
    assert resp.headers["retry-after"] == "4"
    assert err["details"] == {"retry_after_seconds": 4.0}


def test_error_details_keep_their_json_types(client: httpx.Client) -> None:
    err = assert_envelope(client.get("/v1/executions/typed"), 422, "VALIDATION_ERROR")
    assert err["details"] == {"limit": 10, "range": [1, 10]}  # not "10" and "[1, 10]"


def test_status_without_error_info_uses_table_fallback(client: httpx.Client) -> None:
    assert_envelope(client.get("/v1/executions/noinfo"), 403, "FORBIDDEN")


def test_internal_error_text_never_reaches_caller(client: httpx.Client) -> None:
    resp = client.get("/v1/executions/boom")
    err = assert_envelope(resp, 500, "INTERNAL_ERROR")
    assert "secret" not in resp.text and err["message"] == "internal error"


def test_unimplemented_rpc_is_enveloped(client: httpx.Client) -> None:
    # The stand-in has no SessionService: the gRPC server answers UNIMPLEMENTED.
    resp = client.get("/v1/sessions/s1")
    assert_envelope(resp, 405, "METHOD_NOT_ALLOWED")


def test_non_ascii_authorization_is_unauthorized(client: httpx.Client) -> None:
    resp = client.get("/v1/executions/x", headers={b"authorization": "Bearer \u00e9t\u00e9".encode()})
    assert_envelope(resp, 401, "UNAUTHORIZED")


def test_control_plane_down(orphan_gateway_url: str) -> None:
    with httpx.Client(base_url=orphan_gateway_url, timeout=10) as c:
        assert c.get("/health/live").json() == {"status": "ok"}
        ready = c.get("/health/ready")
        err = assert_envelope(ready, 503, "SERVICE_UNAVAILABLE")
        assert err["details"]["components"]["control_plane"] == "UNREACHABLE"  # type: ignore[index]
        assert_envelope(c.get("/v1/executions/x"), 503, "SERVICE_UNAVAILABLE")


def test_requests_are_counted_per_route_and_status(client: httpx.Client) -> None:
    from prometheus_client import REGISTRY

    labels = {"method": "GET /v1/executions/{execution_id}", "code": "404"}
    before = REGISTRY.get_sample_value("rlm_api_requests_total", labels) or 0.0
    client.get("/v1/executions/missing")
    # the middleware counts once the response is sent: allow it a moment to land
    import time

    deadline = time.monotonic() + 2
    while (
        REGISTRY.get_sample_value("rlm_api_requests_total", labels) != before + 1
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert REGISTRY.get_sample_value("rlm_api_requests_total", labels) == before + 1


def test_unknown_query_parameter_is_validation_error(client: httpx.Client) -> None:
    # found by schemathesis: GET /v1/executions?<anything> listed everything
    response = client.get("/v1/executions/exec_1", params={"sesion_id": "x"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR" and "sesion_id" in str(body["error"])
