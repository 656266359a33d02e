"""Both modes end on the same limits after a committed turn
(rlm_rs/control/executions/turn.py check_limits): a runtime step that spends
the cost budget or ends past max_total_seconds ends its execution, as an
Answerer turn does (runtime steps used to check only max_spans_total)."""

from __future__ import annotations

import time
from typing import Any

from rlm_rs.control.costs import PriceTable
from rlm_rs.domain.records import ErrorRecord, ExecutionRecord
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.v1 import execution_pb2
from tests.integration.control.conftest import Api


def _step(api: Api, execution_id: str, code: str, resolve: bool = False) -> Any:
    request = execution_pb2.RunStepRequest(
        execution_id=execution_id, code=code, options=execution_pb2.RunStepOptions(resolve_tools=resolve)
    )
    return api.executions.RunStep(request, metadata=api.auth())


def _record(api: Api, execution_id: str) -> ExecutionRecord:
    return api.plane.storage.metadata.get_execution("tenant-a", execution_id)


def _ended_with(record: ExecutionRecord) -> ErrorRecord:
    error = record["error"]
    assert error is not None, record
    return error


def test_a_runtime_step_that_spends_the_cost_budget_ends_the_execution(api: Api) -> None:
    api.plane.engine.resolver.prices = PriceTable()  # priced like a real provider
    api.provider.script["sub"] = [{"match": "Summarise", "text": "Revenue is up."}]
    execution_id = api.runtime_execution(max_cost_usd=1e-9)
    result = _step(
        api, execution_id, "tool.queue_llm('s', 'Summarise the report')\ntool.YIELD()", resolve=True
    )
    assert result.success
    record = _record(api, execution_id)
    assert record["budgets_consumed"]["cost_usd"] > 1e-9
    assert record["status"] == "BUDGET_EXCEEDED", record["status"]
    assert _ended_with(record)["message"] == "max_cost_usd spent"


class _SlowSandbox:
    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def run_step(self, request: StepRequest) -> StepResult:
        time.sleep(self.seconds)
        result: StepResult = self.inner.run_step(request)
        return result


def test_a_runtime_step_that_ends_past_max_total_seconds_ends_budget_exceeded(api: Api) -> None:
    execution_id = api.runtime_execution(max_total_seconds=1.0)
    api.plane.engine.sandbox = _SlowSandbox(api.plane.engine.sandbox, 1.2)  # type: ignore[assignment]
    result = _step(api, execution_id, "state['work']['x'] = 1")
    assert result.success  # the step's own result still comes back
    record = _record(api, execution_id)
    assert record["status"] == "BUDGET_EXCEEDED" and _ended_with(record)["code"] == "BUDGET_EXCEEDED"
    assert _ended_with(record)["message"] == "max_total_seconds spent"
    assert record["next_turn"] == 1  # the step was committed first
