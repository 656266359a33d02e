"""The gateway's connection to the control plane: a small pool of gRPC channels.

Channels are opened once per process (inside the serving event loop) and
reused by every request, round-robin; gRPC multiplexes calls over each. Errors
arriving as gRPC status are turned into `RlmError` with the spec code carried
in google.rpc.ErrorInfo. This module must never import control-plane internals:
it speaks to the control plane through the generated stubs only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlm_rs.errors import ERROR_DOMAIN, ERRORS, RlmError, code_for_grpc_status
from rlm_rs.tracing import AioClientTracingInterceptor
from rlm_rs.v1 import citation_pb2_grpc, execution_pb2_grpc, session_pb2_grpc

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class Stubs:
    """The stubs of one channel."""

    def __init__(self, channel: grpc.aio.Channel):
        self.channel = channel
        self.sessions = session_pb2_grpc.SessionServiceStub(channel)
        self.executions = execution_pb2_grpc.ExecutionServiceStub(channel)
        self.citations = citation_pb2_grpc.CitationServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


class ChannelPool:
    """`size` channels to `target`, handed out round-robin."""

    def __init__(self, target: str, size: int = 2):
        self.target = target
        self._size = max(1, size)
        self._stubs: list[Stubs] = []
        self._cycle: itertools.cycle[Stubs] | None = None

    def open(self) -> None:
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Distinct channels get distinct TCP connections.
            ("grpc.use_local_subchannel_pool", 1),
            # Reconnect fast after a control-plane restart: a channel in
            # backoff fails calls at once, so keep the backoff short.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        self._stubs = [
            Stubs(
                grpc.aio.insecure_channel(
                    self.target, options=options, interceptors=[AioClientTracingInterceptor()]
                )
            )
            for _ in range(self._size)
        ]
        self._cycle = itertools.cycle(self._stubs)

    async def close(self) -> None:
        for stubs in self._stubs:
            await stubs.channel.close()
        self._stubs = []
        self._cycle = None

    def all(self) -> list[Stubs]:
        if self._cycle is None:
            self.open()
        return list(self._stubs)

    def get(self) -> Stubs:
        if self._cycle is None:
            self.open()
        assert self._cycle is not None
        return next(self._cycle)


def never_sent(exc: grpc.aio.AioRpcError, state_before: grpc.ChannelConnectivity) -> bool:
    """A call that failed because its channel had no connection: it never left
    the gateway, so retrying it cannot run anything twice."""
    return (
        exc.code() == grpc.StatusCode.UNAVAILABLE
        and state_before != grpc.ChannelConnectivity.READY
        and _error_info(exc) is None
    )


def error_from_rpc(exc: grpc.aio.AioRpcError) -> RlmError:
    """The spec error a failed call carried (ErrorInfo), or the table's fallback."""
    code = exc.code()
    info = _error_info(exc)
    if info is not None and info.reason in ERRORS:
        details: dict[str, Any] = dict(info.metadata)
        message = exc.details() or info.reason
        return RlmError(info.reason, message, details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # The control plane itself is unreachable (no ErrorInfo): not a caller error.
        return RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RlmError("SERVICE_UNAVAILABLE", "the control plane did not answer in time")
    spec_code = code_for_grpc_status(code)
    message = exc.details() or spec_code
    if spec_code == "INTERNAL_ERROR":
        message = "internal error"  # never pass an unexplained failure's text on
    return RlmError(spec_code, message)


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    metadata = exc.trailing_metadata() or ()
    for key, value in metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed detail is simply absent
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                if not info.domain or info.domain == ERROR_DOMAIN:
                    return info
    return None


def retry_after_seconds(err: RlmError) -> int | None:
    """Seconds for a Retry-After header (RATE_LIMITED), rounded up, at least 1."""
    raw = err.details.get("retry_after_seconds")
    if raw is None:
        return 1 if err.code == "RATE_LIMITED" else None
    try:
        return max(1, math.ceil(float(raw)))
    except (TypeError, ValueError):
        return 1


async def check_health(stubs: Stubs, services: list[str], timeout: float) -> dict[str, str]:
    """grpc.health.v1 status of each service name ("" = the whole server)."""
    out: dict[str, str] = {}
    for service in services:
        try:
            reply = await stubs.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            out[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                out[service] = "UNKNOWN"
            else:
                out[service] = "UNREACHABLE"
    return out
