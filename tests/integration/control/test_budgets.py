"""Budgets over a real gRPC socket, read from the one model
(rlm_rs/domain/budgets.py): every budget can be set, the int64 ones too
(protobuf's JSON turned them into strings, which the merge refused), and a
zero means what the model says it means."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from rlm_rs.domain import BUDGETS, ZeroMeans
from rlm_rs.domain.records import ExecutionRecord
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets
from tests.integration.control.conftest import Api, error_code


def _runtime(api: Api, budgets: Budgets) -> ExecutionRecord:
    created = api.executions.CreateRuntimeExecution(
        execution_pb2.CreateRuntimeExecutionRequest(session_id=api.ready_session(), budgets=budgets),
        metadata=api.auth(),
    )
    return api.plane.storage.metadata.get_execution("tenant-a", created.execution_id)


def _below_default(name: str) -> int | float:
    field = BUDGETS[name]
    return field.unit(field.default / 2) if field.default else field.unit(1)


def test_every_budget_can_be_set_including_the_int64_ones(api: Api) -> None:
    wanted: dict[str, Any] = {name: _below_default(name) for name in BUDGETS}  # int and float fields
    record = _runtime(api, Budgets(**wanted))
    assert record["budgets_requested"] == wanted
    for name in ("max_llm_prompt_chars", "max_total_llm_prompt_chars", "max_state_chars"):
        assert isinstance(record["budgets_requested"][name], int), name


def test_int64_budgets_are_checked_against_their_ceiling(api: Api) -> None:
    ceiling = int(BUDGETS["max_state_chars"].ceiling)
    with pytest.raises(grpc.RpcError) as caught:
        _runtime(api, Budgets(max_state_chars=ceiling + 1))
    assert error_code(caught.value) == "VALIDATION_ERROR"


@pytest.mark.parametrize("name", [n for n, f in BUDGETS.items() if f.zero is ZeroMeans.DEFAULT])
def test_a_zero_per_step_limit_is_the_default(api: Api, name: str) -> None:
    record = _runtime(api, Budgets(**{name: 0}))
    assert record["budgets_requested"].get(name) == BUDGETS[name].default


def test_a_zero_total_allows_nothing(api: Api) -> None:
    record = _runtime(api, Budgets(max_llm_subcalls=0, max_rlm_subcalls=0, max_cost_usd=0))
    assert record["budgets_requested"]["max_llm_subcalls"] == 0
    assert record["budgets_requested"]["max_rlm_subcalls"] == 0
    assert record["budgets_requested"]["max_cost_usd"] == 0  # UNLIMITED: no cap
    no_turns = _runtime(api, Budgets(max_turns=0))
    with pytest.raises(grpc.RpcError) as caught:
        api.executions.RunStep(
            execution_pb2.RunStepRequest(execution_id=no_turns["execution_id"], code="print(1)"),
            metadata=api.auth(),
        )
    assert error_code(caught.value) == "MAX_TURNS_EXCEEDED"
