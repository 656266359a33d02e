"""Fairness between tenants on one control plane: a heavy tenant that floods
long calls (waits, watches, synchronous starts), executions or sessions is
refused RATE_LIMITED at its own caps, while a light tenant's calls are served
at once and the reserved RPC threads stay free. Plus the log context and the
internal-error log line of every call. Real gRPC server, real storage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from rlm_rs.control import _rpc
from rlm_rs.control.admission import Admission, RateLimiter
from rlm_rs.control.quotas import Quotas, QuotaTable
from rlm_rs.control.server import start_control_plane
from rlm_rs.errors import RlmError
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.v1 import execution_pb2, session_pb2
from tests.integration.control.conftest import Api

THREADS, RESERVED, LONG_PER_TENANT = 8, 2, 4  # 6 long-call slots in all
PROMPT = 2.0  # seconds: a short call takes milliseconds; stuck behind the waits, 20 s
QUOTAS = {"default": {"long_calls": LONG_PER_TENANT, "running_executions": 3, "live_sessions": 3}}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Api]:
    """A control plane with 8 RPC threads, 2 of them reserved for short calls."""
    settings = Settings(
        RLM_DATA_DIR=tmp_path / "data",
        API_KEY_PEPPER="pepper",
        LLM_PROVIDER="scripted",
        RLM_RPC_THREADS=THREADS,
        RLM_RPC_RESERVED_THREADS=RESERVED,
        RLM_QUOTAS_JSON=json.dumps(QUOTAS),
    )
    storage = open_storage(settings)
    provider = ScriptedProvider({"executions": [], "sub": [], "default_sub": "?"})
    plane = start_control_plane(
        settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox(), provider=provider
    )
    key, _ = storage.metadata.create_api_key("heavy", name="tests")
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    yield Api(plane, provider, settings, key, channel)
    channel.close()
    plane.stop(0.5)


def info(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, error
    detail = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(detail)
    return detail.reason, dict(detail.metadata)


def runtime(api: Api, session_id: str, key: str | None = None) -> str:
    return str(
        api.executions.CreateRuntimeExecution(
            execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id), metadata=api.auth(key)
        ).execution_id
    )


def wait_future(api: Api, execution_id: str, key: str | None = None, seconds: int = 20) -> Any:
    request = execution_pb2.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=seconds)
    return api.executions.WaitExecution.future(request, metadata=api.auth(key), timeout=seconds + 10)


def timed(call: Callable[[], Any]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def settle(calls: list[Any], refused: int, seconds: float = 5.0) -> tuple[list[Any], list[Any]]:
    """(finished, pending) once `refused` calls have finished, or at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and sum(c.done() for c in calls) < refused:
        time.sleep(0.02)
    time.sleep(0.2)  # anything else that was going to be refused has been by now
    return [c for c in calls if c.done()], [c for c in calls if not c.done()]


def cancel(api: Api, execution_id: str, key: str | None = None) -> None:
    api.executions.CancelExecution(
        execution_pb2.CancelExecutionRequest(execution_id=execution_id), metadata=api.auth(key)
    )


def test_light_tenant_is_served_while_a_heavy_tenant_floods_waits(small: Api) -> None:
    light, _ = small.plane.storage.metadata.create_api_key("light")
    heavy_execution = runtime(small, small.ready_session())
    light_execution = runtime(small, _light_session(small, light), light)
    flood = [wait_future(small, heavy_execution) for _ in range(40)]  # more than every thread
    finished, held = settle(flood, refused=40 - LONG_PER_TENANT)
    assert len(held) == LONG_PER_TENANT
    for call in finished:
        code, details = info(call.exception())
        assert code == "RATE_LIMITED" and details["quota"] == "long_calls"
        assert details["limit"] == str(LONG_PER_TENANT) and int(details["retry_after_seconds"]) >= 1
    # the light tenant's short call is served at once, and so are its own waits ...
    get = execution_pb2.GetExecutionRequest(execution_id=light_execution)
    assert timed(lambda: small.executions.GetExecution(get, metadata=small.auth(light))) < PROMPT
    light_waits = [
        wait_future(small, light_execution, light) for _ in range(THREADS - RESERVED - LONG_PER_TENANT)
    ]
    _, held_light = settle(light_waits, refused=0)
    assert len(held_light) == len(light_waits)  # accepted before the next one is sent
    # ... until the server's long-call slots are all held: the reserve stays free for short calls
    refused = wait_future(small, light_execution, light)
    assert info(refused.exception(timeout=5))[1]["quota"] == "server_long_calls"
    assert timed(lambda: small.executions.GetExecution(get, metadata=small.auth(light))) < PROMPT
    # cancelling ends the waits with the execution's status and gives the slots back
    cancel(small, heavy_execution)
    assert {w.result(timeout=5).status for w in held} == {execution_pb2.EXECUTION_STATUS_CANCELLED}
    assert (
        wait_future(small, heavy_execution).result(timeout=5).status
        == execution_pb2.EXECUTION_STATUS_CANCELLED
    )
    cancel(small, light_execution, light)
    assert {w.result(timeout=5).status for w in light_waits} == {execution_pb2.EXECUTION_STATUS_CANCELLED}


def _light_session(api: Api, key: str) -> str:
    """A READY session of the tenant behind `key` (the conftest helper uses api.key)."""
    heavy = api.key
    api.key = key
    try:
        return api.ready_session()
    finally:
        api.key = heavy


def test_waits_watches_and_synchronous_starts_share_one_cap(small: Api) -> None:
    session_id = small.ready_session()
    execution_id = runtime(small, session_id)
    waits = [wait_future(small, execution_id) for _ in range(2)]
    assert len(settle(waits, refused=0)[1]) == 2  # both held
    watches = []
    for _ in range(2):
        watch = small.executions.WatchExecution(
            execution_pb2.WatchExecutionRequest(execution_id=execution_id), metadata=small.auth(), timeout=30
        )
        watch.initial_metadata()  # accepted: it holds a slot
        watches.append(watch)
    running_before = len(small.plane.storage.metadata.executions_with_status("RUNNING"))
    sync = execution_pb2.StartExecutionRequest(
        session_id=session_id,
        question="q",
        options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=30),
    )
    with pytest.raises(grpc.RpcError) as refused:
        small.executions.StartExecution(sync, metadata=small.auth())
    assert info(refused.value)[0] == "RATE_LIMITED"
    # refused before it ran: no execution was created
    assert len(small.plane.storage.metadata.executions_with_status("RUNNING")) == running_before
    with pytest.raises(grpc.RpcError) as step_refused:
        small.executions.RunStep(
            execution_pb2.RunStepRequest(execution_id=execution_id, code="x = 1"), metadata=small.auth()
        )
    assert info(step_refused.value)[1]["quota"] == "long_calls"
    # the same tenant's short calls still go through
    small.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=small.auth()
    )
    cancel(small, execution_id)
    assert {w.result(timeout=5).status for w in waits} == {execution_pb2.EXECUTION_STATUS_CANCELLED}
    for watch in watches:
        assert [e.type for e in watch] == [execution_pb2.EVENT_TYPE_STATUS]


def test_an_abandoned_wait_gives_its_slot_back(small: Api) -> None:
    execution_id = runtime(small, small.ready_session())
    request = execution_pb2.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=120)
    gone = [
        small.executions.WaitExecution.future(request, metadata=small.auth(), timeout=0.3)
        for _ in range(LONG_PER_TENANT)
    ]
    for call in gone:
        failure = call.exception(timeout=5)
        assert isinstance(failure, grpc.RpcError) and failure.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.5)  # the server notices within about a second that its callers left
    fresh = [wait_future(small, execution_id) for _ in range(LONG_PER_TENANT)]
    time.sleep(0.3)
    assert not any(call.done() for call in fresh)  # none refused: every slot came back
    cancel(small, execution_id)
    assert {c.result(timeout=5).status for c in fresh} == {execution_pb2.EXECUTION_STATUS_CANCELLED}


def test_reflection_streams_cannot_take_every_thread(small: Api) -> None:
    """Server reflection needs no key and holds a thread while its stream is open."""
    stub = reflection_pb2_grpc.ServerReflectionStub(small.channel)
    stop = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        stop.wait(20)

    streams = [stub.ServerReflectionInfo(requests(), timeout=30) for _ in range(THREADS + 2)]
    outcomes: list[str] = []
    for stream in streams:
        try:
            next(stream)
            outcomes.append("open")
        except grpc.RpcError as error:
            outcomes.append(info(error)[0])
    assert outcomes.count("open") == _rpc.ANONYMOUS_STREAMS_MAX
    assert set(outcomes) == {"open", "RATE_LIMITED"}
    session_id = small.ready_session()  # calls with a key are still served
    get = session_pb2.GetSessionRequest(session_id=session_id)
    assert timed(lambda: small.sessions.GetSession(get, metadata=small.auth())) < PROMPT
    stop.set()
    for stream in streams:
        stream.cancel()


def test_running_executions_quota_per_tenant(small: Api) -> None:
    light, _ = small.plane.storage.metadata.create_api_key("light")
    session_id = small.ready_session()
    executions = [runtime(small, session_id) for _ in range(3)]
    with pytest.raises(grpc.RpcError) as refused:
        runtime(small, session_id)
    code, details = info(refused.value)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and code == "RATE_LIMITED"
    assert details == {
        "quota": "running_executions",
        "limit": "3",
        "current": "3",
        "retry_after_seconds": "5",
    }
    async_start = execution_pb2.StartExecutionRequest(session_id=session_id, question="q")
    with pytest.raises(grpc.RpcError) as start_refused:
        small.executions.StartExecution(async_start, metadata=small.auth())
    assert info(start_refused.value)[1]["quota"] == "running_executions"
    runtime(small, _light_session(small, light), light)  # another tenant is not affected
    cancel(small, executions[0])
    runtime(small, session_id)  # an ended execution frees its place


def test_child_executions_do_not_count(small: Api) -> None:
    quotas = Quotas(QuotaTable(QUOTAS), small.plane.storage)
    session_id = small.ready_session()
    executions = [runtime(small, session_id) for _ in range(3)]  # at the quota
    tickets: list[object] = []

    def write(record: dict[str, Any], ticket: object) -> dict[str, Any]:
        tickets.append(ticket)
        return record

    child = {"tenant_id": "heavy", "execution_id": "exec_c", "parent_execution_id": executions[0]}
    quotas.create_execution(child, write)
    assert tickets == [None]  # a child of a running execution: its parent's budgets bound it
    with pytest.raises(RlmError) as over:
        quotas.create_execution({"tenant_id": "heavy", "execution_id": "exec_x"}, write)
    assert over.value.code == "RATE_LIMITED" and tickets == [None]


def test_live_sessions_quota_per_tenant(small: Api) -> None:
    sessions = [small.ready_session() for _ in range(3)]
    with pytest.raises(grpc.RpcError) as refused:
        small.ready_session()
    code, details = info(refused.value)
    assert code == "RATE_LIMITED" and details["quota"] == "live_sessions" and details["current"] == "3"
    assert len(small.plane.storage.metadata.list_sessions("heavy")) == 3  # nothing written
    small.sessions.DeleteSession(
        session_pb2.DeleteSessionRequest(session_id=sessions[0]), metadata=small.auth()
    )
    small.ready_session()  # a deleted session frees its place


def test_rate_limits_have_a_default_and_zero_lifts_them() -> None:
    limiter = RateLimiter({})
    assert all(limiter.take("t") == 0 for _ in range(100))
    assert limiter.take("t") > 0 and limiter.take("other") == 0
    unlimited = RateLimiter({"default": {"rate_per_second": 0}})
    assert all(unlimited.take("t") == 0 for _ in range(1_000))


def test_quota_table_falls_back_per_field_and_rejects_nonsense() -> None:
    table = QuotaTable({"default": {"live_sessions": 5}, "tenants": {"big": {"running_executions": None}}})
    assert table.limits("any").live_sessions == 5 and table.limits("any").running_executions == 16
    assert table.limits("big").running_executions is None and table.limits("big").live_sessions == 5
    bad: dict[str, Any]
    for bad in ({"default": {"sessions": 1}}, {"default": {"live_sessions": -1}}, {"other": {}}):
        with pytest.raises(ValueError):
            QuotaTable(bad)


def test_every_call_logs_in_its_context_and_errors_without_locals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """request_id, tenant_id and method are bound for the call and only for it;
    an internal error is logged with a plain traceback: no frame locals, so
    neither the request nor the `authorization` metadata can reach the log."""
    settings = Settings(RLM_DATA_DIR=tmp_path, API_KEY_PEPPER="pepper")
    storage = open_storage(settings)
    key, _ = storage.metadata.create_api_key("tenant-log")
    seen: dict[str, Any] = {}

    def fail(request: Any, context: Any) -> Any:
        seen["inside"] = structlog.contextvars.get_contextvars()
        seen["caller"] = _rpc.current_caller()
        raise ValueError("unexpected")

    def bare(request: Any, context: Any) -> Any:
        seen["after"] = structlog.contextvars.get_contextvars()
        seen["caller_after"] = _rpc._CALLER.get()
        return request

    handler = execution_pb2.GetExecutionRequest

    def service(name: str, function: Any) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler(
            function, request_deserializer=handler.FromString, response_serializer=handler.SerializeToString
        )
        return grpc.method_handlers_generic_handler(f"probe.{name}", {name: unary})

    guard = _rpc.CallGuard(storage, Admission.from_settings(settings), ["probe.Fail"])
    # one thread: "after" is the same; probe.Bare is not a guarded service
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=[guard])
    server.add_generic_rpc_handlers((service("Fail", fail), service("Bare", bare)))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setattr(_rpc, "log", structlog.get_logger(component="control"))
    metadata = (("authorization", f"Bearer {key}"), ("x-request-id", "req-probe-1"))
    payload = handler(execution_id="exec_payload_that_must_not_be_logged")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/probe.Fail/Fail",
                request_serializer=handler.SerializeToString,
                response_deserializer=handler.FromString,
            )
            with (
                structlog.testing.capture_logs(
                    processors=[structlog.contextvars.merge_contextvars, structlog.processors.dict_tracebacks]
                ) as logs,
                pytest.raises(grpc.RpcError) as failed,
            ):
                call(payload, metadata=metadata)
            bare_call = channel.unary_unary(
                "/probe.Bare/Bare",
                request_serializer=handler.SerializeToString,
                response_deserializer=handler.FromString,
            )
            bare_call(payload)
    finally:
        server.stop(0)
    assert info(failed.value)[0] == "INTERNAL_ERROR"
    assert {"request_id": "req-probe-1", "tenant_id": "tenant-log", "method": "Fail"}.items() <= seen[
        "inside"
    ].items()
    assert not {"request_id", "tenant_id", "method"} & set(seen["after"])
    assert seen["caller"].tenant_id == "tenant-log" and seen["caller_after"] is None
    [entry] = [e for e in logs if e["event"] == "rpc_failed"]
    assert (
        entry["request_id"] == "req-probe-1"
        and entry["tenant_id"] == "tenant-log"
        and entry["method"] == "Fail"
    )
    assert "ValueError" in entry["traceback"]
    rendered = json.dumps(entry, default=str)
    assert key not in rendered and "exec_payload_that_must_not_be_logged" not in rendered
    assert "authorization" not in rendered
