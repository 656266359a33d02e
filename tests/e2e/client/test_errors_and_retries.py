"""Errors and retries against the real appliance, over both transports.

A wrong key is UnauthorizedError and an unknown session SessionNotFoundError, each with
the request id the server logged for that call. Tenant `slow` is limited to 1 call/s
with bursts of 2 (RATE_LIMITS_JSON): without retries a burst meets RATE_LIMITED with
retry_after_seconds; with the default policy the client waits that long and succeeds.
"""

from __future__ import annotations

import time

import pytest

from rlm_rs.client import (
    Client,
    ExecutionNotFoundError,
    NotFoundError,
    RateLimitedError,
    RetryEvent,
    RetryPolicy,
    RlmConnectionError,
    SessionNotFoundError,
    UnauthorizedError,
)
from tests.e2e.client.conftest import Appliance
from tests.e2e.conftest import free_port

UNKNOWN_SESSION = "sess_000000000000000000000000"


def test_a_wrong_key_is_unauthorized_with_the_request_id(appliance: Appliance, transport: str) -> None:
    with (
        Client(appliance.url(transport), "rlm_key_not_a_real_key") as client,
        pytest.raises(UnauthorizedError) as refused,
    ):
        client.sessions.get(UNKNOWN_SESSION)
    error = refused.value
    assert error.code == "UNAUTHORIZED" and error.message
    if transport == "http":
        assert (error.http_status, error.grpc_status) == (401, None)
    else:
        assert (error.http_status, error.grpc_status) == (None, "UNAUTHENTICATED")
    assert error.request_id.startswith("req_")
    logged = appliance.control_plane_log_line(error.request_id)
    assert (logged["code"], logged["method"]) == ("UNAUTHORIZED", "GetSession")


def test_unknown_ids_are_not_found_with_details(appliance: Appliance, transport: str) -> None:
    with Client(appliance.url(transport), appliance.api_key) as client:
        with pytest.raises(SessionNotFoundError) as refused:
            client.sessions.get(UNKNOWN_SESSION)
        assert isinstance(refused.value, NotFoundError)
        assert refused.value.code == "SESSION_NOT_FOUND"
        assert refused.value.details == {"session_id": UNKNOWN_SESSION}
        assert refused.value.http_status == (404 if transport == "http" else None)
        logged = appliance.control_plane_log_line(refused.value.request_id)
        assert logged["code"] == "SESSION_NOT_FOUND"
        with pytest.raises(ExecutionNotFoundError):
            client.executions.get("exec_000000000000000000000000")


def test_an_unreachable_server_is_a_connection_error_never_sent(transport: str) -> None:
    url = f"http://127.0.0.1:{free_port()}" if transport == "http" else f"grpc://127.0.0.1:{free_port()}"
    retries: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=2, initial_backoff_seconds=0.05, on_retry=retries.append)
    with Client(url, "rlm_key_x", retry=policy) as client, pytest.raises(RlmConnectionError) as failed:
        client.sessions.create(docs=["s3://rlm-rs/raw/acme/x/a.txt"], wait=False)
    assert failed.value.sent is False
    assert len(retries) == 1  # a create that never left is repeated, and only then


def _burst_until_limited(client: Client, session_id: str) -> RateLimitedError:
    for _ in range(10):
        try:
            client.sessions.get(session_id)
        except RateLimitedError as exc:
            return exc
    raise AssertionError("10 calls in a row were never rate limited")


def test_rate_limited_calls_wait_retry_after_and_succeed(appliance: Appliance, transport: str) -> None:
    url = appliance.url(transport)
    retries: list[RetryEvent] = []
    with Client(url, appliance.slow_key, retry=RetryPolicy(on_retry=retries.append)) as client:
        session = client.sessions.create(
            docs=appliance.slow_uris, wait=False
        )  # retried if the bucket is empty
    # Without retries the server's limit shows: RATE_LIMITED with how long to wait.
    with Client(url, appliance.slow_key, retry=RetryPolicy(max_attempts=1)) as bare:
        limited = _burst_until_limited(bare, session.session_id)
    assert limited.code == "RATE_LIMITED" and limited.request_id.startswith("req_")
    assert limited.retry_after_seconds is not None and limited.retry_after_seconds >= 1
    assert limited.http_status == (429 if transport == "http" else None)
    assert limited.grpc_status == (None if transport == "http" else "RESOURCE_EXHAUSTED")

    # With the default policy the same burst succeeds, each refusal waited out.
    retries.clear()
    started = time.monotonic()
    with Client(url, appliance.slow_key, retry=RetryPolicy(on_retry=retries.append)) as client:
        statuses = [client.sessions.get(session.session_id).status for _ in range(4)]
    elapsed = time.monotonic() - started
    assert all(status in ("CREATING", "READY") for status in statuses)
    assert retries and all(isinstance(r.error, RateLimitedError) for r in retries)
    assert all(r.call == "GetSession" and r.sleep_seconds >= 1.0 for r in retries)
    assert elapsed >= sum(r.sleep_seconds for r in retries)
