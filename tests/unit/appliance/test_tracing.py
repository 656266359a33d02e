"""rlm_rs.tracing: off by default; when on, one trace across client and server over real gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_rs import tracing
from rlm_rs.settings import Settings


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    assert tracing.configure_tracing("test", Settings(), exporter=memory)
    yield memory
    tracing.shutdown_tracing()


@pytest.fixture
def server_target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[tracing.ServerTracingInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_off_by_default() -> None:
    assert tracing.configure_tracing("test", Settings()) is False
    with tracing.span("work", turn_index=1) as current:
        assert not current.is_recording()


def test_one_trace_across_a_real_grpc_call(exporter: InMemorySpanExporter, server_target: str) -> None:
    with grpc.insecure_channel(server_target) as raw:
        channel = grpc.intercept_channel(raw, tracing.ClientTracingInterceptor())
        with tracing.span("request", tenant_id="t1", prompt=["not", "an", "attribute"]):
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    tracing.force_flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    request = spans["request"]
    client = spans["grpc.client /grpc.health.v1.Health/Check"]
    server = spans["grpc.server /grpc.health.v1.Health/Check"]
    assert {request.context.trace_id, client.context.trace_id, server.context.trace_id} == {
        request.context.trace_id
    }
    assert client.parent is not None and client.parent.span_id == request.context.span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert dict(request.attributes or {}) == {"tenant_id": "t1"}  # non-scalar values are dropped
    assert request.resource.attributes["service.name"] == "rlm-rs-test"


def test_aio_client_propagates_too(exporter: InMemorySpanExporter, server_target: str) -> None:
    async def call() -> int:
        async with grpc.aio.insecure_channel(
            server_target, interceptors=[tracing.AioClientTracingInterceptor()]
        ) as channel:
            with tracing.span("gateway request"):
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            return int(reply.status)

    assert asyncio.run(call()) == health_pb2.HealthCheckResponse.SERVING
    tracing.force_flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["grpc.server /grpc.health.v1.Health/Check"]
    assert server.context.trace_id == spans["gateway request"].context.trace_id


def test_a_server_span_without_caller_context_is_a_root(
    exporter: InMemorySpanExporter, server_target: str
) -> None:
    with grpc.insecure_channel(server_target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    tracing.force_flush()
    (server,) = exporter.get_finished_spans()
    assert server.parent is None
