"""Fixtures for the gateway unit tests: the real app served by uvicorn on a free
loopback port, in front of a small real gRPC server (a stand-in control plane
whose replies each test picks by id) or of nothing at all."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.app import create_app
from rlm_rs import error_details
from rlm_rs.errors import RlmError
from rlm_rs.settings import Settings
from rlm_rs.v1 import common_pb2, execution_pb2, execution_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def abort_with(context: grpc.ServicerContext, code: str, message: str, **meta: str) -> None:
    from rlm_rs.errors import ERRORS

    spec = ERRORS[code]
    info = error_details_pb2.ErrorInfo(reason=code, domain="rlm-rs", metadata=meta)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=getattr(code_pb2, spec.grpc_status_name), message=message, details=[detail]
    )
    context.abort_with_status(rpc_status.to_status(status))


class StandInExecutions(execution_pb2_grpc.ExecutionServiceServicer):
    """Replies chosen by the execution id; remembers the metadata it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str | bytes]] = []

    def GetExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.seen.append({k: v for k, v in context.invocation_metadata()})
        eid = request.execution_id
        if eid == "rate":
            abort_with(context, "RATE_LIMITED", "slow down", retry_after_seconds="2.5")
        if eid == "missing":
            abort_with(context, "EXECUTION_NOT_FOUND", "no such execution", execution_id=eid)
        if eid == "boom":
            context.abort(grpc.StatusCode.INTERNAL, "Traceback (most recent call last): secret")
        if eid == "noinfo":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
        if eid == "typed":  # the control plane's own status: ErrorDetail's JSON details
            error = RlmError("VALIDATION_ERROR", "ttl_minutes must be 1..10", {"limit": 10, "range": [1, 10]})
            context.abort_with_status(rpc_status.to_status(error_details.to_status(error)))
        if eid == "retryinfo":  # the delay in RetryInfo alone, none in the details
            info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="rlm-rs")
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=4))
            packed = [any_pb2.Any(), any_pb2.Any()]
            packed[0].Pack(info)
            packed[1].Pack(retry)
            status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow", details=packed)
            context.abort_with_status(rpc_status.to_status(status))
        return execution_pb2.Execution(
            execution_id=eid,
            mode=execution_pb2.EXECUTION_MODE_ANSWERER,
            status=execution_pb2.EXECUTION_STATUS_COMPLETED,
            output_mode=execution_pb2.OUTPUT_MODE_ANSWER,
            answer="42",
            citations=[
                common_pb2.SpanRef(
                    session_id="s", doc_id="d", start_char=2**40, end_char=2**40 + 3,
                    checksum="sha256:00",
                )
            ],
            budgets_consumed=common_pb2.BudgetsConsumed(turns=3, llm_subcalls=1),
        )  # fmt: skip

    def RunStep(self, request: Any, context: grpc.ServicerContext) -> Any:
        return common_step(request)

    def WatchExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Streams chosen by the id. missing: refused before the stream;
        unmarked: one event without the started mark (as when the mark is lost
        with an at-once end); empty: no mark, no event; midway: one event, then
        the control plane fails; slow: one event after a pause; else two events."""
        eid = request.execution_id
        if eid == "missing":
            abort_with(context, "EXECUTION_NOT_FOUND", "no such execution", execution_id=eid)
        if eid == "empty":
            return
        if eid != "unmarked":
            context.send_initial_metadata((("x-rlm-watch", "1"),))
        if eid == "slow":
            time.sleep(0.5)
        yield execution_pb2.ExecutionEvent(
            event_id="000000.0000", execution_id=eid, type=execution_pb2.EVENT_TYPE_TURN_STARTED, turn_index=0,
            at="2026-01-01T00:00:00Z", data_json='{"budgets": {}}',
        )  # fmt: skip
        if eid == "midway":
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        if eid not in ("slow", "unmarked"):
            yield execution_pb2.ExecutionEvent(
                event_id="000001.9999", execution_id=eid, type=execution_pb2.EVENT_TYPE_STATUS, turn_index=1,
                at="2026-01-01T00:00:01Z", data_json='{"status": "COMPLETED"}',
            )  # fmt: skip


def common_step(request: Any) -> Any:
    from rlm_rs.sandbox.v1 import sandbox_pb2

    return sandbox_pb2.StepResult(
        success=True,
        stdout=request.code,
        state_json=request.state_json if request.HasField("state_json") else "{}",
        tool_requests=common_pb2.ToolRequests(
            llm=[common_pb2.LlmRequest(key="k", prompt="p", metadata_json='{"n":1}')]
        ),
        final=common_pb2.Final(is_final=False),
    )


@pytest.fixture(scope="session")
def stand_in() -> Iterator[tuple[str, StandInExecutions]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = StandInExecutions()  # type: ignore[abstract]  # answers only the calls the gateway tests make
    execution_pb2_grpc.add_ExecutionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


class Served:
    def __init__(self, target: str, max_bytes: int):
        settings = Settings(RLM_MAX_REQUEST_BYTES=max_bytes)
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings, target), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def gateway_url(stand_in: tuple[str, StandInExecutions]) -> Iterator[str]:
    with Served(stand_in[0], max_bytes=4096) as url:
        yield url


@pytest.fixture(scope="session")
def orphan_gateway_url() -> Iterator[str]:
    """A gateway whose control plane is not there (nothing listens)."""
    with Served(f"127.0.0.1:{free_port()}", max_bytes=4096) as url:
        yield url


@pytest.fixture()
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=10) as c:
        yield c
