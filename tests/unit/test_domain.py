"""The domain model is one: the budget table, the proto messages, the
ceilings and the gateway's request model name the same budgets; enums keep
the contract's strings (rlm_rs/domain/)."""

from __future__ import annotations

import json

import pytest

from rlm_rs.domain import (
    BUDGETS,
    CONSUMED,
    EventType,
    ExecutionStatus,
    IngestStatus,
    SessionStatus,
    ZeroMeans,
    consumed_zero,
    default_budgets,
)
from rlm_rs.limits import BUDGET_CEILINGS
from rlm_rs.v1.common_pb2 import Budgets, BudgetsConsumed


def test_one_set_of_budget_names() -> None:
    from gateway.models import Budgets as RestBudgets

    proto = {f.name for f in Budgets.DESCRIPTOR.fields}
    assert set(BUDGETS) == proto == set(BUDGET_CEILINGS) == set(RestBudgets.model_fields)
    assert set(CONSUMED) == {f.name for f in BudgetsConsumed.DESCRIPTOR.fields}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_each_budget_has_a_unit_a_default_within_its_ceiling_and_a_zero(name: str) -> None:
    field = BUDGETS[name]
    proto_type = Budgets.DESCRIPTOR.fields_by_name[name].type
    assert field.unit is (
        float if proto_type == Budgets.DESCRIPTOR.fields_by_name["max_cost_usd"].type else int
    )
    assert 0 <= field.default <= field.ceiling
    assert isinstance(field.zero, ZeroMeans) and field.meaning
    if field.zero is ZeroMeans.NOTHING:
        assert "0:" in field.meaning  # what zero does is written down


def test_defaults_and_zero_consumption_have_their_units() -> None:
    assert all(type(v) is BUDGETS[k].unit for k, v in default_budgets().items())
    assert all(type(v) is CONSUMED[k].unit and v == 0 for k, v in consumed_zero().items())


def test_enums_keep_the_contract_strings() -> None:
    assert [s.value for s in ExecutionStatus] == [
        "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED",
    ]  # fmt: skip
    assert [s.value for s in SessionStatus] == ["CREATING", "READY", "FAILED", "EXPIRED", "DELETING"]
    assert IngestStatus.INDEXING.parsed and not IngestStatus.PARSING.parsed
    assert ExecutionStatus.RUNNING == "RUNNING" and json.dumps([EventType.STATUS]) == '["status"]'
    assert {s for s in ExecutionStatus if s.terminal} == set(ExecutionStatus) - {ExecutionStatus.RUNNING}
