"""The `openai` provider through the real openai SDK against a local
OpenAI-compatible HTTP server, inside the real Answerer loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.control.server import start_control_plane
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.base import CallContext, ProviderError
from rlm_rs.providers.openai_provider import OpenAIProvider
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.v1 import execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc

ROOT_REPLY = "```repl\ntool.queue_llm('k', 'Name the city: ' + context[0][:40])\ntool.YIELD()\n```"
FINAL_REPLY = "```repl\ntool.FINAL(state['_tool_results']['llm']['k']['text'])\n```"


def reply(messages: list[dict[str, str]]) -> str:
    user = messages[-1]["content"]
    if messages[0]["role"] == "system":
        return ROOT_REPLY if "Turn 1 of" in user else FINAL_REPLY
    return "Lisbon" if "Name the city" in user else "?"


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(reply) as running:
        yield running


def settings_for(tmp_path: Path, server: OpenAICompatibleServer) -> Settings:
    return Settings(
        RLM_DATA_DIR=tmp_path / "d",
        LLM_PROVIDER="openai",
        OPENAI_BASE_URL=server.base_url,
        OPENAI_API_KEY="sk-test",
        RLM_LLM_MAX_RETRIES=1,
        RLM_LLM_TIMEOUT_SECONDS=5,
    )


@contextlib.contextmanager
def openai_stack(settings: Settings) -> Iterator[Callable[..., execution_pb2.Execution]]:
    """A control plane using the `openai` provider, a READY one-document session,
    and `run(**request_fields)` that starts a synchronous execution on it."""
    import grpc

    storage = open_storage(settings)
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox())
    key, _ = storage.metadata.create_api_key("t")
    storage.blobs.put("raw/t/u1/a.txt", b"The office in Lisbon grew fastest this year.")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    auth = (("authorization", f"Bearer {key}"),)
    try:
        document = session_pb2.DocumentInput(
            source_name="a.txt", mime_type="text/plain", raw_s3_uri="s3://rlm-rs/raw/t/u1/a.txt"
        )
        session = session_pb2_grpc.SessionServiceStub(channel).CreateSession(
            session_pb2.CreateSessionRequest(docs=[document]), metadata=auth
        )
        IngestionWorker(storage, settings).run_once()
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)

        def run(**fields: Any) -> execution_pb2.Execution:
            request = execution_pb2.StartExecutionRequest(
                session_id=session.session_id,
                question="Which city?",
                options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
                **fields,
            )
            reply: execution_pb2.Execution = stub.StartExecution(request, metadata=auth)
            return reply

        yield run
    finally:
        channel.close()
        plane.stop(1)


def test_answerer_loop_through_the_openai_sdk(tmp_path: Path, server: OpenAICompatibleServer) -> None:
    with openai_stack(settings_for(tmp_path, server)) as run:
        execution = run()
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED and execution.answer == "Lisbon"
    consumed = execution.budgets_consumed
    assert consumed.llm_subcalls == 1 and consumed.input_tokens > 0 and consumed.output_tokens > 0
    models = [r["model"] for r in server.requests]
    assert models == ["gpt-4o", "gpt-4o-mini", "gpt-4o"]  # root, sub, root (settings defaults)


def test_provider_errors_are_typed(tmp_path: Path, server: OpenAICompatibleServer) -> None:
    provider = OpenAIProvider(settings_for(tmp_path, server))
    server.fail_status = 500
    with pytest.raises(ProviderError) as failed:
        provider.complete(
            "m",
            [{"role": "user", "content": "x"}],
            max_tokens=5,
            temperature=0,
            context=CallContext(role="sub"),
        )
    assert failed.value.status == 500 and failed.value.retryable
    assert len(server.requests) == 2  # the SDK retried once (RLM_LLM_MAX_RETRIES=1)
    server.fail_status = 400
    with pytest.raises(ProviderError) as bad:
        provider.complete(
            "m",
            [{"role": "user", "content": "x"}],
            max_tokens=5,
            temperature=0,
            context=CallContext(role="sub"),
        )
    assert bad.value.status == 400 and not bad.value.retryable


def test_tokens_and_cost_are_accounted_and_bounded(tmp_path: Path, server: OpenAICompatibleServer) -> None:
    from rlm_rs.v1.common_pb2 import Budgets

    settings = settings_for(tmp_path, server).model_copy(
        update={"price_table_json": {"gpt-4o": {"input_per_1m": 1_000_000.0, "output_per_1m": 0.0}}}
    )  # a dollar per input token: the first root call spends the whole budget
    with openai_stack(settings) as run:
        unbounded = run(budgets=Budgets(max_cost_usd=0))  # 0 = no cost limit
        bounded = run(budgets=Budgets(max_cost_usd=1.0))
    assert unbounded.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    consumed = unbounded.budgets_consumed
    assert consumed.input_tokens > 0 and consumed.output_tokens > 0
    root_input = sum(len(str(m["content"]).split()) for m in server.requests[0]["messages"])
    assert consumed.cost_usd >= root_input  # a dollar per root input token, plus the sub-call at list price
    assert (
        bounded.status == execution_pb2.EXECUTION_STATUS_BUDGET_EXCEEDED
        and bounded.error.message == "max_cost_usd spent"
    )
    assert bounded.budgets_consumed.turns == 1 and bounded.budgets_consumed.llm_subcalls == 0
