"""The control plane enforces the bounds of rlm_rs/limits.py on gRPC callers too,
the same numbers the gateway advertises: a Runtime caller's ResolveTools gets
the checks a step's tool API applies, model names and timeouts are bounded,
and a value at the bound is accepted. Over a real gRPC socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from rlm_rs import limits as lim
from rlm_rs.v1 import execution_pb2, session_pb2
from rlm_rs.v1.common_pb2 import (
    LlmBatchRequest,
    LlmRequest,
    Models,
    RlmRequest,
    SearchRequest,
    Span,
    ToolRequests,
)
from tests.integration.control.conftest import Api, control_plane, error_code


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str, str]]:
    """One control plane, a READY session and a RUNNING runtime execution."""
    with control_plane(tmp_path_factory.mktemp("limits")) as api:
        session_id = api.ready_session()
        created = api.executions.CreateRuntimeExecution(
            execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth()
        )
        yield api, session_id, created.execution_id


def refused(call: Any) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return error_code(caught.value)


def resolve(plane: tuple[Api, str, str], requests: ToolRequests, models: Models | None = None) -> Any:
    api, _, execution_id = plane
    request = execution_pb2.ResolveToolsRequest(
        execution_id=execution_id, tool_requests=requests, models=models
    )
    return api.executions.ResolveTools(request, metadata=api.auth())


LONG_KEY = "k" * (lim.MAX_TOOL_KEY_CHARS + 1)
LONG_NAME = "m" * (lim.MAX_MODEL_NAME_CHARS + 1)


@pytest.mark.parametrize(
    "requests",
    [
        ToolRequests(llm=[LlmRequest(key=LONG_KEY, prompt="p")]),
        ToolRequests(search=[SearchRequest(key=LONG_KEY, query="q")]),
        ToolRequests(llm_batch=[LlmBatchRequest(key=LONG_KEY, prompts=["p"])]),
        ToolRequests(rlm=[RlmRequest(key=LONG_KEY, question="q")]),
        ToolRequests(llm=[LlmRequest(key="k", prompt="p", max_tokens=lim.MAX_SUBCALL_MAX_TOKENS + 1)]),
        ToolRequests(llm=[LlmRequest(key="k", prompt="p", max_tokens=-1)]),
        ToolRequests(llm=[LlmRequest(key="k", prompt="p", temperature=lim.MAX_TEMPERATURE + 0.5)]),
        ToolRequests(llm=[LlmRequest(key="k", prompt="p", temperature=float("nan"))]),
        ToolRequests(llm=[LlmRequest(key="k", prompt="p", model_hint=LONG_NAME)]),
        ToolRequests(llm_batch=[LlmBatchRequest(key="k", prompts=[])]),
        ToolRequests(llm_batch=[LlmBatchRequest(key="k", prompts=["p"] * (lim.MAX_BATCH_PROMPTS + 1))]),
        ToolRequests(search=[SearchRequest(key="k", query="q" * (lim.MAX_SEARCH_QUERY_CHARS + 1))]),
        ToolRequests(search=[SearchRequest(key="k", query="q", k=lim.MAX_SEARCH_K + 1)]),
        ToolRequests(rlm=[RlmRequest(key="k", question="q" * (lim.MAX_QUESTION_CHARS + 1))]),
        ToolRequests(rlm=[RlmRequest(key="k", question="q", doc_indices=[0] * (lim.MAX_RLM_PIECES + 1))]),
        ToolRequests(
            rlm=[
                RlmRequest(
                    key="k", question="q", spans=[Span(end_char=1, tag="t" * (lim.MAX_SPAN_TAG_CHARS + 1))]
                )
            ]
        ),
        ToolRequests(
            llm=[LlmRequest(key=f"k{i}", prompt="p") for i in range(lim.MAX_TOOL_REQUESTS_PER_RESOLVE + 1)]
        ),
    ],
    ids=[
        "llm-key",
        "search-key",
        "batch-key",
        "rlm-key",
        "max-tokens",
        "negative-max-tokens",
        "temperature",
        "nan-temperature",
        "model-hint",
        "empty-batch",
        "big-batch",
        "query",
        "k",
        "rlm-question",
        "rlm-pieces",
        "span-tag",
        "too-many-requests",
    ],
)
def test_resolve_tools_refuses_what_a_step_could_not_queue(
    plane: tuple[Api, str, str], requests: ToolRequests
) -> None:
    assert refused(lambda: resolve(plane, requests)) == "VALIDATION_ERROR"


def test_resolve_tools_refuses_a_sub_model_name_past_the_bound(plane: tuple[Api, str, str]) -> None:
    requests = ToolRequests(llm=[LlmRequest(key="k", prompt="p")])
    assert refused(lambda: resolve(plane, requests, Models(sub_model=LONG_NAME))) == "VALIDATION_ERROR"


def test_resolve_tools_accepts_values_at_the_bounds(plane: tuple[Api, str, str]) -> None:
    key = "k" * lim.MAX_TOOL_KEY_CHARS
    requests = ToolRequests(
        llm=[
            LlmRequest(
                key=key,
                prompt="summarize",
                max_tokens=lim.MAX_SUBCALL_MAX_TOKENS,
                temperature=lim.MAX_TEMPERATURE,
            )
        ]
    )
    response = resolve(plane, requests)
    assert response.statuses[key] == execution_pb2.TOOL_STATUS_RESOLVED


@pytest.mark.parametrize(
    "options",
    [
        execution_pb2.ExecutionOptions(synchronous_timeout_seconds=float("nan")),
        execution_pb2.ExecutionOptions(synchronous_timeout_seconds=lim.MAX_SYNCHRONOUS_TIMEOUT_SECONDS + 1),
    ],
)
def test_a_synchronous_timeout_outside_the_bound_is_refused(
    plane: tuple[Api, str, str], options: execution_pb2.ExecutionOptions
) -> None:
    api, session_id, _ = plane
    request = execution_pb2.StartExecutionRequest(session_id=session_id, question="q", options=options)
    assert refused(lambda: api.executions.StartExecution(request, metadata=api.auth())) == "VALIDATION_ERROR"


@pytest.mark.parametrize("field", ["root_model", "sub_model"])
def test_a_model_name_past_the_bound_is_refused_before_an_execution_exists(
    plane: tuple[Api, str, str], field: str
) -> None:
    api, session_id, _ = plane
    models = Models(**{field: LONG_NAME})
    start = execution_pb2.StartExecutionRequest(session_id=session_id, question="q", models=models)
    runtime = execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id, models=models)
    assert refused(lambda: api.executions.StartExecution(start, metadata=api.auth())) == "VALIDATION_ERROR"
    assert (
        refused(lambda: api.executions.CreateRuntimeExecution(runtime, metadata=api.auth()))
        == "VALIDATION_ERROR"
    )


def test_step_code_past_the_bound_is_a_validation_error(plane: tuple[Api, str, str]) -> None:
    api, _, execution_id = plane
    code = "x = 1\n" + "#" * lim.MAX_CODE_CHARS
    request = execution_pb2.RunStepRequest(execution_id=execution_id, code=code)
    assert refused(lambda: api.executions.RunStep(request, metadata=api.auth())) == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("field", "bound"),
    [
        ("source_name", lim.MAX_SOURCE_NAME_CHARS),
        ("mime_type", lim.MAX_MIME_TYPE_CHARS),
        ("raw_s3_uri", lim.MAX_S3_URI_CHARS),
        ("raw_s3_version_id", lim.MAX_S3_VERSION_CHARS),
        ("raw_s3_etag", lim.MAX_S3_VERSION_CHARS),
    ],
)
def test_a_document_field_past_its_bound_is_refused(
    plane: tuple[Api, str, str], field: str, bound: int
) -> None:
    api, _, _ = plane
    doc = {
        "source_name": "a.txt",
        "mime_type": "text/plain",
        "raw_s3_uri": "s3://b/raw/x",
        field: "x" * (bound + 1),
    }
    request = session_pb2.CreateSessionRequest(docs=[session_pb2.DocumentInput(**doc)])
    assert refused(lambda: api.sessions.CreateSession(request, metadata=api.auth())) == "VALIDATION_ERROR"


def test_more_documents_than_a_session_holds_are_refused(plane: tuple[Api, str, str]) -> None:
    api, _, _ = plane
    doc = session_pb2.DocumentInput(source_name="a.txt", mime_type="text/plain", raw_s3_uri="s3://b/raw/x")
    request = session_pb2.CreateSessionRequest(docs=[doc] * (lim.MAX_DOCS_PER_SESSION + 1))
    assert refused(lambda: api.sessions.CreateSession(request, metadata=api.auth())) == "VALIDATION_ERROR"


def test_a_wait_past_the_bound_is_refused(plane: tuple[Api, str, str]) -> None:
    api, _, execution_id = plane
    request = execution_pb2.WaitExecutionRequest(
        execution_id=execution_id, timeout_seconds=lim.MAX_WAIT_TIMEOUT_SECONDS + 1
    )
    assert refused(lambda: api.executions.WaitExecution(request, metadata=api.auth())) == "VALIDATION_ERROR"
