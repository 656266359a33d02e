"""With tracing on, an Answerer execution emits the control plane's spans:
the RPC (a child of the caller's span), the root-model call, the sandbox step
and the sub-call."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rlm_rs import tracing
from rlm_rs.settings import Settings
from rlm_rs.v1 import execution_pb2, execution_pb2_grpc
from tests.integration.control.conftest import Api


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    assert tracing.configure_tracing("control-test", Settings(), exporter=memory)
    yield memory
    tracing.shutdown_tracing()


def test_execution_spans(api: Api, exporter: InMemorySpanExporter) -> None:
    api.provider.script["executions"] = [{"match": "traced", "root": [
        "```repl\ntool.queue_llm('k', 'say hi')\ntool.YIELD()\n```",
        "```repl\ntool.FINAL(state['_tool_results']['llm']['k']['text'])\n```",
    ]}]  # fmt: skip
    session_id = api.ready_session()
    channel = grpc.intercept_channel(api.channel, tracing.ClientTracingInterceptor())
    with tracing.span("caller"):
        execution = execution_pb2_grpc.ExecutionServiceStub(channel).StartExecution(
            execution_pb2.StartExecutionRequest(
                session_id=session_id, question="traced question",
                options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
            ),
            metadata=api.auth(),
        )  # fmt: skip
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    tracing.force_flush()
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("llm.root") == 2 and names.count("sandbox.step") == 2 and names.count("llm.sub") == 1
    caller = next(s for s in spans if s.name == "caller")
    server = next(s for s in spans if s.name == "grpc.server /rlm_rs.v1.ExecutionService/StartExecution")
    assert server.context.trace_id == caller.context.trace_id
    step = next(s for s in spans if s.name == "sandbox.step")
    assert (step.attributes or {})["execution_id"] == execution.execution_id
