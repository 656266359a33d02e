"""A refused call carries its error in-band as a google.rpc.Status over a real
socket: ErrorInfo (the error code), ErrorDetail (details as JSON, typed),
RetryInfo for RATE_LIMITED and BadRequest for VALIDATION_ERROR; and the
Python client's gRPC transport reads them (rlm_rs/error_details.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rlm_rs.client._grpc import error_from_rpc
from rlm_rs.client.errors import RateLimitedError, RlmApiError
from rlm_rs.control.server import start_control_plane
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.v1 import session_pb2
from rlm_rs.v1.common_pb2 import ErrorDetail
from tests.integration.control.conftest import Api


@pytest.fixture
def one_session(tmp_path: Path) -> Iterator[Api]:
    """A control plane whose tenants may hold one live session."""
    settings = Settings(
        RLM_DATA_DIR=tmp_path / "data",
        API_KEY_PEPPER="pepper",
        LLM_PROVIDER="scripted",
        RLM_QUOTAS_JSON=json.dumps({"default": {"live_sessions": 1}}),
    )
    storage = open_storage(settings)
    provider = ScriptedProvider({"executions": [], "sub": [], "default_sub": "?"})
    plane = start_control_plane(
        settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox(), provider=provider
    )
    key, _ = storage.metadata.create_api_key("tenant-a", name="tests")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    yield Api(plane, provider, settings, key, channel)
    channel.close()
    plane.stop(0.5)


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _details(error: grpc.RpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, object] = {}
    for packed in status.details:
        for message in (
            error_details_pb2.ErrorInfo(), ErrorDetail(), error_details_pb2.RetryInfo(),
            error_details_pb2.BadRequest(),
        ):  # fmt: skip
            if packed.Is(message.DESCRIPTOR):
                packed.Unpack(message)
                found[type(message).__name__] = message
    return found


def test_a_validation_error_names_its_field_in_bad_request(api: Api) -> None:
    request = session_pb2.CreateSessionRequest(ttl_minutes=0)
    error = _refused(lambda: api.sessions.CreateSession(request, metadata=api.auth()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _details(error)
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "VALIDATION_ERROR"
    bad = found["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    [violation] = bad.field_violations
    assert (violation.field, violation.description) == ("docs", "docs must list at least one document")


def test_rate_limited_carries_retry_info_and_typed_details(one_session: Api) -> None:
    one_session.ready_session()
    error = _refused(one_session.ready_session)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    found = _details(error)
    retry = found["RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    detail = found["ErrorDetail"]
    assert isinstance(detail, ErrorDetail) and detail.code == "RATE_LIMITED"
    details = json.loads(detail.details_json)
    assert details["quota"] == "live_sessions" and details["limit"] == 1  # an int, not "1"
    assert retry.retry_delay.seconds == details["retry_after_seconds"] >= 1
    # the client's gRPC transport: the error's class, typed details, the delay it waits
    client_error = error_from_rpc(error, "rid")
    assert isinstance(client_error, RateLimitedError) and isinstance(client_error, RlmApiError)
    assert client_error.details["limit"] == 1
    assert client_error.retry_after_seconds == retry.retry_delay.seconds
