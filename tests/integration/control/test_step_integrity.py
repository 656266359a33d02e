"""One step at a time per runtime execution, over a real gRPC socket: concurrent
RunStep/ResolveTools calls on one execution are serialised by a claim, the
losers get CONFLICT and run nothing, max_turns cannot be raced past, and a
writer that lost its claim cannot commit (rlm_rs/control/executions/claims.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rlm_rs.control.executions.claims import StepClaim
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.storage.state import load_state
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import LlmRequest, ToolRequests
from tests.integration.control.conftest import Api


def _error(exc: grpc.RpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, exc
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info.reason, dict(info.metadata)


def _step(api: Api, execution_id: str, code: str, **kw: Any) -> Any:
    return api.executions.RunStep(
        execution_pb2.RunStepRequest(execution_id=execution_id, code=code, **kw), metadata=api.auth()
    )


class SlowSandbox:
    """The real in-process sandbox, made slow enough that concurrent steps overlap."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.runs = 0

    def run_step(self, request: StepRequest) -> StepResult:
        self.runs += 1
        time.sleep(self.seconds)
        result: StepResult = self.inner.run_step(request)
        return result


def test_concurrent_steps_on_one_execution_commit_exactly_max_turns(api: Api) -> None:
    sandbox = SlowSandbox(api.plane.engine.sandbox, 0.05)
    api.plane.engine.sandbox = sandbox  # type: ignore[assignment]
    execution_id = api.runtime_execution(max_turns=2)
    callers = 6
    barrier = threading.Barrier(callers)
    successes: list[str] = []
    codes: list[str] = []
    lock = threading.Lock()

    def caller(name: str) -> None:
        barrier.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            code = f"w = state['work']\nw['by'] = w.get('by', []) + ['{name}']\nprint('{name}')"
            try:
                _step(api, execution_id, code)
            except grpc.RpcError as exc:
                reason, details = _error(exc)
                with lock:
                    codes.append(reason)
                if reason == "CONFLICT" and details.get("status") == "RUNNING":
                    assert exc.code() == grpc.StatusCode.ABORTED
                    time.sleep(0.05)  # another step holds the execution: retry
                    continue
                return  # the execution has ended (MAX_TURNS_EXCEEDED, then the same again)
            with lock:
                successes.append(name)
            return

    threads = [threading.Thread(target=caller, args=(f"c{i}",)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(successes) == 2, (successes, codes)
    assert "CONFLICT" in codes  # the race really happened
    assert "MAX_TURNS_EXCEEDED" in codes
    assert sandbox.runs == 2  # losers ran nothing
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=execution_id), metadata=api.auth()
    ).steps
    assert [s.turn_index for s in steps] == [0, 1]
    assert [s.stdout.strip() for s in steps] == successes
    assert [json.loads(s.state_json)["work"]["by"] for s in steps] == [successes[:1], successes]
    loaded = load_state(api.plane.storage.metadata, api.plane.storage.blobs, execution_id)
    assert loaded is not None and json.loads(loaded[0])["work"]["by"] == successes
    record = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    assert (
        record.status == execution_pb2.EXECUTION_STATUS_MAX_TURNS_EXCEEDED
        and record.budgets_consumed.turns == 2
    )


def test_a_step_while_tools_resolve_is_a_conflict(api: Api) -> None:
    release = threading.Event()

    class BlockingProvider:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.name = inner.name

        def complete(self, *args: Any, **kwargs: Any) -> Any:
            release.wait(10)
            return self.inner.complete(*args, **kwargs)

    engine = api.plane.engine
    engine.resolver.provider = BlockingProvider(engine.resolver.provider)
    execution_id = api.runtime_execution()
    requests = ToolRequests(llm=[LlmRequest(key="q", prompt="anything", temperature=0.5)])
    resolving = threading.Thread(
        target=lambda: api.executions.ResolveTools(
            execution_pb2.ResolveToolsRequest(execution_id=execution_id, tool_requests=requests),
            metadata=api.auth(),
        )
    )
    resolving.start()
    metadata = api.plane.storage.metadata
    try:
        deadline = time.monotonic() + 10
        while not str(metadata.get_execution("tenant-a", execution_id).get("lease_owner")).startswith(
            "step-"
        ):
            assert time.monotonic() < deadline, "the resolver never claimed the execution"
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as caught:
            _step(api, execution_id, "print(1)")
        assert _error(caught.value)[0] == "CONFLICT" and _error(caught.value)[1]["status"] == "RUNNING"
    finally:
        release.set()
        resolving.join()
    done = _step(api, execution_id, "print(state['_tool_status']['q'])")
    assert done.success and done.stdout.strip() == "resolved"


def test_a_writer_whose_claim_was_taken_over_cannot_commit(api: Api) -> None:
    """The claim expires (the holder stalled past it) and another step takes
    the execution: the stalled step's commit is refused by the fence and
    writes no step record and no state."""
    engine = api.plane.engine
    execution_id = api.runtime_execution()
    metadata = api.plane.storage.metadata

    class TakeoverSandbox:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def run_step(self, request: StepRequest) -> StepResult:
            result: StepResult = self.inner.run_step(request)
            record = metadata.get_execution("tenant-a", execution_id)  # another process claims it
            metadata.update_execution(
                record["session_id"],
                execution_id,
                {"lease_owner": "step-other", "lease_until": time.time() + 60},
            )
            return result

    engine.sandbox = TakeoverSandbox(engine.sandbox)  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as caught:
        _step(api, execution_id, "state['work']['x'] = 1")
    assert _error(caught.value)[0] == "CONFLICT"
    assert api.plane.storage.metadata.items.query("execution_state", f"EXEC#{execution_id}", "STEP#") == []
    assert load_state(metadata, api.plane.storage.blobs, execution_id) is None
    record = metadata.get_execution("tenant-a", execution_id)
    assert record["next_turn"] == 0 and record["lease_owner"] == "step-other"


def test_a_claim_is_refused_while_another_is_live_and_free_after_release(api: Api) -> None:
    execution_id = api.runtime_execution()
    metadata = api.plane.storage.metadata
    first = StepClaim.take(metadata, api.plane.engine.get("tenant-a", execution_id))
    with pytest.raises(RlmError) as caught:
        StepClaim.take(metadata, api.plane.engine.get("tenant-a", execution_id))
    assert caught.value.code == "CONFLICT" and caught.value.details["status"] == "RUNNING"
    first.release()
    StepClaim.take(metadata, api.plane.engine.get("tenant-a", execution_id)).release()


def test_a_runtime_execution_past_max_total_seconds_ends(api: Api) -> None:
    execution_id = api.runtime_execution(max_total_seconds=1.0)
    assert _step(api, execution_id, "print(1)").success
    time.sleep(1.1)
    with pytest.raises(grpc.RpcError) as caught:
        _step(api, execution_id, "print(2)")
    assert _error(caught.value)[0] == "BUDGET_EXCEEDED"
    record = api.plane.storage.metadata.get_execution("tenant-a", execution_id)
    error = record["error"]
    assert record["status"] == "BUDGET_EXCEEDED" and error is not None and error["code"] == "BUDGET_EXCEEDED"


def test_the_sweep_ends_an_idle_runtime_execution_past_max_total_seconds(api: Api) -> None:
    execution_id = api.runtime_execution(max_total_seconds=1.0)
    deadline = time.monotonic() + 10  # the fixture sweeps every 0.5 s
    status = "RUNNING"
    while status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
        status = api.plane.storage.metadata.get_execution("tenant-a", execution_id)["status"]
    assert status == "BUDGET_EXCEEDED"


def test_a_step_cancelled_while_it_runs_commits_nothing(api: Api) -> None:
    engine = api.plane.engine
    execution_id = api.runtime_execution()

    class CancellingSandbox:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def run_step(self, request: StepRequest) -> StepResult:
            result: StepResult = self.inner.run_step(request)
            engine.cancel("tenant-a", execution_id)  # another caller cancels mid-step
            return result

    engine.sandbox = CancellingSandbox(engine.sandbox)  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as caught:
        _step(api, execution_id, "state['work']['x'] = 1")
    assert _error(caught.value) == ("VALIDATION_ERROR", {"status": "CANCELLED"})
    metadata = api.plane.storage.metadata
    assert metadata.items.query("execution_state", f"EXEC#{execution_id}", "STEP#") == []
    assert load_state(metadata, api.plane.storage.blobs, execution_id) is None


def test_a_commit_that_loses_its_version_reports_why(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled just before the commit's transaction: the ended execution's
    answer (VALIDATION_ERROR with its status), never a bare storage conflict,
    and nothing written."""
    engine = api.plane.engine
    metadata = api.plane.storage.metadata
    execution_id = api.runtime_execution()
    commit_turn = metadata.commit_turn

    def cancel_then_commit(*args: Any, **kw: Any) -> None:
        engine.cancel("tenant-a", execution_id)
        commit_turn(*args, **kw)

    monkeypatch.setattr(metadata, "commit_turn", cancel_then_commit)
    with pytest.raises(grpc.RpcError) as caught:
        _step(api, execution_id, "state['work']['x'] = 1")
    assert _error(caught.value) == ("VALIDATION_ERROR", {"status": "CANCELLED"})
    record = metadata.get_execution("tenant-a", execution_id)
    assert record["status"] == "CANCELLED" and record["next_turn"] == 0
    assert metadata.items.query("execution_state", f"EXEC#{execution_id}", "STEP#") == []
