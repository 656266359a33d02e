"""Budgets that mean what they say, and fan-out at scale, over a real gRPC
socket: a budget above a ceiling (the service's or the sandbox pool's) is
refused naming both, never lowered; every budget can be set by the operator
(DEFAULT_BUDGETS_JSON), a session's budgets_default and a request; the
execution shows its effective budgets; the remaining seconds count down; a
step runs under its own budgets in a real pool; and one execution makes
5,000 sub-calls (docs/api.md#budgets, docs/api.md#state)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from rlm_rs.domain import BUDGETS
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.client import temporary_pool
from rlm_rs.sandbox.pool.server import pool_policy
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets
from tests.integration.control.conftest import Api, control_plane, error_code

POOL_CAP = json.dumps({"max_tool_requests_per_step": 50})


def _below_default(name: str) -> int | float:
    field = BUDGETS[name]
    return field.unit(field.default / 2) if field.default else field.unit(1)


WANTED: dict[str, Any] = {name: _below_default(name) for name in BUDGETS}  # int and float fields


def _effective(api: Api, execution_id: str) -> dict[str, Any]:
    got = api.executions.GetExecution(
        execution_pb2.GetExecutionRequest(execution_id=execution_id), metadata=api.auth()
    )
    return {name: getattr(got.budgets_effective, name) for name in BUDGETS}


def _runtime(api: Api, session_id: str, budgets: Budgets | None = None) -> str:
    created: execution_pb2.Execution = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id, budgets=budgets),
        metadata=api.auth(),
    )
    return created.execution_id


def _step(api: Api, execution_id: str, code: str) -> Any:
    return api.executions.RunStep(
        execution_pb2.RunStepRequest(execution_id=execution_id, code=code), metadata=api.auth()
    )


def _refusal(error: grpc.RpcError) -> dict[str, str]:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error_code(error) == "VALIDATION_ERROR"
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return {"message": str(error.details()), **dict(info.metadata)}


def test_a_budget_above_the_pools_ceiling_is_refused_naming_budget_and_ceiling(tmp_path: Path) -> None:
    with control_plane(tmp_path, RLM_SANDBOX_POLICY_JSON=POOL_CAP) as api:
        session_id = api.ready_session()
        over = Budgets(max_tool_requests_per_step=51)
        attempts: list[Callable[[], object]] = [
            lambda: _runtime(api, session_id, over),
            lambda: api.executions.StartExecution(
                execution_pb2.StartExecutionRequest(session_id=session_id, question="q", budgets=over),
                metadata=api.auth(),
            ),
            lambda: api.ready_session(budgets_default=over),
        ]
        for attempt in attempts:
            with pytest.raises(grpc.RpcError) as caught:
                attempt()
            refused = _refusal(caught.value)
            assert refused["budget"] == "max_tool_requests_per_step" and refused["ceiling"] == "50"
            assert "max_tool_requests_per_step" in refused["message"] and "ceiling 50" in refused["message"]
            assert "sandbox pool" in refused["message"]
        # at the ceiling: accepted as asked; unset: the built-in default (500) lowered to the cap
        assert (
            _effective(api, _runtime(api, session_id, Budgets(max_tool_requests_per_step=50)))[
                "max_tool_requests_per_step"
            ]
            == 50
        )
        default = _runtime(api, session_id)
        assert _effective(api, default)["max_tool_requests_per_step"] == 50
        shown = _step(api, default, "print(state['_budgets']['max_tool_requests_per_step'])")
        assert shown.stdout == "50\n"


def test_the_pools_default_step_seconds_cap_is_a_ceiling_too(api: Api) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        api.runtime_execution(max_step_seconds=60)
    refused = _refusal(caught.value)
    assert refused["budget"] == "max_step_seconds" and refused["ceiling"] == "30.0"


def test_operator_defaults_above_a_ceiling_stop_the_control_plane_from_starting(tmp_path: Path) -> None:
    with (
        pytest.raises(RlmError) as caught,
        control_plane(
            tmp_path,
            RLM_SANDBOX_POLICY_JSON=POOL_CAP,
            DEFAULT_BUDGETS_JSON=json.dumps({"max_tool_requests_per_step": 100}),
        ),
    ):
        pass
    assert caught.value.details == {"budget": "max_tool_requests_per_step", "ceiling": 50}


def test_every_budget_through_the_operators_defaults(tmp_path: Path) -> None:
    with control_plane(tmp_path, DEFAULT_BUDGETS_JSON=json.dumps(WANTED)) as api:
        execution_id = _runtime(api, api.ready_session())
        assert _effective(api, execution_id) == WANTED
        record = api.plane.storage.metadata.get_execution("tenant-a", execution_id)
        assert record["budgets_requested"] == WANTED


def test_every_budget_through_a_sessions_defaults(api: Api) -> None:
    session_id = api.ready_session(budgets_default=Budgets(**WANTED))
    assert _effective(api, _runtime(api, session_id)) == WANTED
    # a request's own budgets win over the session's
    assert _effective(api, _runtime(api, session_id, Budgets(max_turns=7)))["max_turns"] == 7


def test_the_step_sees_its_effective_limits_and_its_seconds_count_down(api: Api) -> None:
    execution_id = api.runtime_execution(max_total_seconds=100, max_tool_requests_per_step=300)
    code = "b = state['_budgets']\nprint(b['seconds_remaining'], b['max_tool_requests_per_step'])"
    first = _step(api, execution_id, code).stdout.split()
    time.sleep(1.2)
    second = _step(api, execution_id, code).stdout.split()
    assert first[1] == second[1] == "300"
    assert float(first[0]) <= 100 and float(second[0]) <= float(first[0]) - 1.0


def test_a_pool_step_runs_under_the_executions_budget_not_the_pools_default(tmp_path: Path) -> None:
    """The pool used to cut every step at its own 25 requests whatever the budget said."""
    code = "\n".join(f"tool.queue_llm_batch('b{i}', ['p'] * 100)" for i in range(3)) + "\ntool.YIELD()"
    with temporary_pool() as pool, control_plane(tmp_path, pool) as api:
        execution_id = api.runtime_execution(max_tool_requests_per_step=300)
        result = _step(api, execution_id, code)
        assert result.success, result.error
        assert result.isolation == "pool"
        assert [len(b.prompts) for b in result.tool_requests.llm_batch] == [100, 100, 100]


def test_a_pool_configured_below_the_control_plane_reports_its_caps_and_they_hold(tmp_path: Path) -> None:
    """The two processes were given different RLM_SANDBOX_POLICY_JSON: the pool's
    own report (GetPoolStatus) lowers the ceiling instead of the pool cutting steps."""
    policy = pool_policy()
    policy.max_tool_requests_per_step = 50
    with temporary_pool(policy) as pool, control_plane(tmp_path, pool) as api:
        with pytest.raises(grpc.RpcError) as caught:
            api.runtime_execution(max_tool_requests_per_step=100)
        refused = _refusal(caught.value)
        assert refused["budget"] == "max_tool_requests_per_step" and refused["ceiling"] == "50"
        assert "as the pool reports it" in refused["message"]
        execution_id = api.runtime_execution()  # the default (500) lowered to the pool's cap
        assert _effective(api, execution_id)["max_tool_requests_per_step"] == 50


FAN_OUT = """```repl
w = state['work']
for batch in state['_tool_results'].get('llm_batch', {}).values():
    for r in batch['results']:
        w['total'] = w.get('total', 0) + int(r['text'])
n = w.get('round', 0)
if n < 5:
    for i in range(10):
        prompts = ['record ' + str(n * 1000 + i * 100 + j) for j in range(100)]
        tool.queue_llm_batch('r' + str(n) + '_' + str(i), prompts, temperature=0.5)
    w['round'] = n + 1
    tool.YIELD()
else:
    tool.FINAL(str(w['total']))
```"""


def test_one_execution_makes_5000_sub_calls_and_completes(api: Api) -> None:
    """It used to fail STATE_TOO_LARGE after ~3,000 results: they never left the state.
    (Temperature 0.5: uncached, so the run measures the orchestration, not the
    embedded blob store's two fsynced writes per cache entry, ~1.6 s per 1,000.)"""
    api.provider.script["executions"] = [{"match": "fan out", "root": [FAN_OUT]}]
    api.provider.script["default_sub"] = "1"
    session_id = api.ready_session()
    started = time.perf_counter()
    done = api.executions.StartExecution(
        execution_pb2.StartExecutionRequest(
            session_id=session_id,
            question="fan out",
            budgets=Budgets(max_llm_subcalls=5_000, max_tool_requests_per_step=1_000, max_turns=10),
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=120),
        ),
        metadata=api.auth(),
    )
    elapsed = time.perf_counter() - started
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED, done.error
    assert done.answer == "5000"
    assert done.budgets_consumed.llm_subcalls == 5_000 and done.budgets_consumed.turns == 6
    steps = api.executions.ListSteps(
        execution_pb2.ListStepsRequest(execution_id=done.execution_id), metadata=api.auth()
    ).steps
    # each step record keeps the results its own step's requests got; the state only the latest
    assert len(json.loads(steps[2].state_json)["_tool_results"]["llm_batch"]) == 10
    assert all(len(s.state_json) < 400_000 for s in steps)
    print(f"5,000 sub-calls in {elapsed:.2f} s")
