"""The gateway's connection to the control plane: a small pool of gRPC channels.

Channels are opened once per process (inside the serving event loop) and
reused by every request, round-robin; gRPC multiplexes calls over each
(gateway/calls.py makes the calls, gateway/errors.py maps their failures).
This module must never import control-plane internals: it speaks to the
control plane through the generated stubs only.
"""

from __future__ import annotations

import itertools

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlm_rs.tracing import AioClientTracingInterceptor
from rlm_rs.v1 import citation_pb2_grpc, execution_pb2_grpc, session_pb2_grpc


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
