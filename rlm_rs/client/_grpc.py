"""The gRPC transport: the control plane's services (`rlm_rs.v1`) through the generated stubs.

Requests are built from the same REST-shaped JSON as the HTTP transport
(`rlm_rs.codec.from_json`) and replies turned back into it (`codec.to_json`), so
one parser serves both. A failed call becomes the `RlmApiError` of the
google.rpc.Status details it carries (rlm_rs/error_details.py: ErrorInfo's
reason = the error code, ErrorDetail's details as JSON, RetryInfo's delay as
details.retry_after_seconds), with the request id from the trailing metadata. A call that got no
answer at all (UNAVAILABLE, a deadline, without ErrorInfo) is an
`RlmConnectionError`. It never retries (`_retry.py` does) and never logs the key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from rlm_rs import error_details
from rlm_rs.client._common import UPLOAD_CHUNK_BYTES, UPLOAD_TIMEOUT
from rlm_rs.client._ops import Op
from rlm_rs.client.errors import RlmClientError, RlmConnectionError, api_error
from rlm_rs.codec import from_json, to_json
from rlm_rs.errors import code_for_grpc_status
from rlm_rs.v1 import citation_pb2_grpc, execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc

REQUEST_ID_KEY = "x-request-id"
# grpc-core's message for a call that found no connection (it never left this process).
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed", "Connection refused")
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Reconnect quickly after a server restart (a channel in backoff fails calls at once).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _metadata(api_key: str, request_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"), (REQUEST_ID_KEY, request_id))


def _server_request_id(trailing: Sequence[Any] | None) -> str:
    for key, value in trailing or ():
        if key == REQUEST_ID_KEY:
            return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    return ""


def _request(op: Op, params: Mapping[str, Any], request_id: str) -> Any:
    """The request message of `params`; a value the message cannot hold (a
    status or mode that is not one of the enum's names) is VALIDATION_ERROR,
    as the HTTP transport gets it from the gateway, and nothing is sent."""
    try:
        return from_json(op.request(), params)
    except (ValueError, TypeError) as exc:
        raise api_error(
            "VALIDATION_ERROR", str(exc), request_id=request_id, grpc_status="INVALID_ARGUMENT"
        ) from None


def error_from_rpc(exc: grpc.RpcError, request_id: str) -> RlmClientError:
    """The client error for a failed call (`exc` is a grpc.Call as well)."""
    call: Any = exc
    code: grpc.StatusCode = call.code()
    message = call.details() or ""
    trailing = call.trailing_metadata()
    found = error_details.read(trailing)
    request_id = _server_request_id(trailing) or request_id
    if found.code is not None:
        return api_error(found.code, message or found.code, details=found.details(),
                         request_id=request_id, grpc_status=code.name)  # fmt: skip
    if code == grpc.StatusCode.UNAVAILABLE:
        sent = not any(marker in message for marker in _NOT_CONNECTED)
        return RlmConnectionError(f"gRPC UNAVAILABLE: {message}", sent=sent)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return RlmConnectionError(f"gRPC {code.name}: {message}", sent=True)
    spec_code = code_for_grpc_status(code)
    return api_error(spec_code, message or spec_code, request_id=request_id, grpc_status=code.name)


def _credentials(tls: bool, root_certificates: bytes | None) -> grpc.ChannelCredentials | None:
    return grpc.ssl_channel_credentials(root_certificates=root_certificates) if tls else None


def _watch_request(execution_id: str, after: str) -> execution_pb2.WatchExecutionRequest:
    return execution_pb2.WatchExecutionRequest(execution_id=execution_id, after_event_id=after)


def _chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        for start in range(0, len(piece), UPLOAD_CHUNK_BYTES):
            yield piece[start : start + UPLOAD_CHUNK_BYTES]


def _upload_messages(
    file_name: str, content_type: str, pieces: Iterator[bytes]
) -> Iterator[session_pb2.UploadRequest]:
    """The Upload stream: a naming chunk, the data, and the `last` mark."""
    yield session_pb2.UploadRequest(file_name=file_name, content_type=content_type)
    for data in _chunked(pieces):
        yield session_pb2.UploadRequest(data=data)
    yield session_pb2.UploadRequest(last=True)


async def _async_upload_messages(
    file_name: str, content_type: str, pieces: AsyncIterator[bytes]
) -> AsyncIterator[session_pb2.UploadRequest]:
    yield session_pb2.UploadRequest(file_name=file_name, content_type=content_type)
    async for piece in pieces:
        for data in _chunked(iter([piece])):
            yield session_pb2.UploadRequest(data=data)
    yield session_pb2.UploadRequest(last=True)


class _Stubs:
    def __init__(self, channel: Any):
        self.sessions = session_pb2_grpc.SessionServiceStub(channel)
        self.executions = execution_pb2_grpc.ExecutionServiceStub(channel)
        self.citations = citation_pb2_grpc.CitationServiceStub(channel)

    def method(self, op: Op) -> Any:
        return getattr(getattr(self, op.service), op.name)


class GrpcTransport:
    """Sync gRPC transport over one channel (calls are multiplexed on it)."""

    kind = "grpc"

    def __init__(
        self, target: str, api_key: str, *, tls: bool = False, root_certificates: bytes | None = None
    ):
        self.target = target
        self._api_key = api_key
        credentials = _credentials(tls, root_certificates)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        self._stubs = _Stubs(self._channel)

    def call(self, op: Op, params: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        request = _request(op, params, request_id)
        try:
            reply = self._stubs.method(op)(
                request, metadata=_metadata(self._api_key, request_id), timeout=op.deadline(params)
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        return to_json(reply)

    def upload(
        self, file_name: str, content_type: str, pieces: Iterator[bytes], request_id: str
    ) -> dict[str, Any]:
        """The client-streaming Upload: the pieces in UPLOAD_CHUNK_BYTES messages."""
        try:
            reply = self._stubs.sessions.Upload(
                _upload_messages(file_name, content_type, pieces),
                metadata=_metadata(self._api_key, request_id),
                timeout=UPLOAD_TIMEOUT,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        return to_json(reply)

    def watch(self, execution_id: str, after: str, request_id: str) -> Generator[dict[str, Any], None, None]:
        call = self._stubs.executions.WatchExecution(
            _watch_request(execution_id, after), metadata=_metadata(self._api_key, request_id)
        )
        try:
            for message in call:
                yield to_json(message)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        finally:
            call.cancel()

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcTransport:
    """Async gRPC transport; the grpc.aio channel is opened in the running event loop on first use."""

    kind = "grpc"

    def __init__(
        self, target: str, api_key: str, *, tls: bool = False, root_certificates: bytes | None = None
    ):
        self.target = target
        self._api_key = api_key
        self._credentials = _credentials(tls, root_certificates)
        self._channel: grpc.aio.Channel | None = None
        self._stubs: _Stubs | None = None

    def _open(self) -> _Stubs:
        if self._stubs is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=CHANNEL_OPTIONS
                )
            self._stubs = _Stubs(self._channel)
        return self._stubs

    async def call(self, op: Op, params: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        request = _request(op, params, request_id)
        try:
            reply = await self._open().method(op)(
                request, metadata=_metadata(self._api_key, request_id), timeout=op.deadline(params)
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        return to_json(reply)

    async def upload(
        self, file_name: str, content_type: str, pieces: AsyncIterator[bytes], request_id: str
    ) -> dict[str, Any]:
        try:
            reply = await self._open().sessions.Upload(
                _async_upload_messages(file_name, content_type, pieces),
                metadata=_metadata(self._api_key, request_id),
                timeout=UPLOAD_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        return to_json(reply)

    async def watch(
        self, execution_id: str, after: str, request_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        call = self._open().executions.WatchExecution(
            _watch_request(execution_id, after), metadata=_metadata(self._api_key, request_id)
        )
        try:
            async for message in call:
                yield to_json(message)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, request_id) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel, self._stubs = None, None
