"""Tenant-chosen model names: bounded metric labels and never a free ride.

Executions through a real control plane and the real `openai` SDK (a local
OpenAI-compatible server) name models the operator never listed: the Prometheus
registry then holds no label for them (they count as "other"), and their tokens are
priced at the table's highest price, so max_cost_usd still bounds them. Only the
offline scripted provider costs nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from rlm_rs.control.costs import DEFAULT_PRICES, PriceTable, model_allowlist
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from rlm_rs.v1 import execution_pb2
from rlm_rs.v1.common_pb2 import Budgets, Models
from tests.integration.control.test_openai_provider import openai_stack, reply, settings_for


@pytest.fixture
def server() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(reply) as running:
        yield running


def test_unlisted_model_names_are_not_labels_and_are_priced(
    tmp_path: Path, server: OpenAICompatibleServer
) -> None:
    names = [f"tenant-model-{uuid.uuid4().hex}" for _ in range(3)]
    with openai_stack(settings_for(tmp_path, server)) as run:
        executions = [run(models=Models(root_model=name, sub_model=name)) for name in names]
        listed = run()  # the defaults, gpt-4o and gpt-4o-mini, are on the allowlist
    assert all(e.status == execution_pb2.EXECUTION_STATUS_COMPLETED for e in [*executions, listed])
    assert [r["model"] for r in server.requests[:3]] == [names[0]] * 3  # the tenant's names were used
    metrics = generate_latest(REGISTRY).decode()
    assert not any(name in metrics for name in names), "a tenant's model name became a label"
    assert 'rlm_llm_tokens_total{model="other",type="input"}' in metrics
    assert 'rlm_llm_tokens_total{model="gpt-4o",type="input"}' in metrics

    highest_input = max(p["input_per_1m"] for p in DEFAULT_PRICES.values())
    highest_output = max(p["output_per_1m"] for p in DEFAULT_PRICES.values())
    consumed = executions[0].budgets_consumed
    expected = (consumed.input_tokens * highest_input + consumed.output_tokens * highest_output) / 1e6
    assert consumed.cost_usd > 0 and abs(consumed.cost_usd - expected) < 1e-6

    with openai_stack(settings_for(tmp_path / "bounded", server)) as run:
        bounded = run(models=Models(root_model=names[0]), budgets=Budgets(max_cost_usd=1e-9))
    assert (
        bounded.status == execution_pb2.EXECUTION_STATUS_BUDGET_EXCEEDED
    )  # an unknown model does not escape the cost budget


def test_price_table_decisions() -> None:
    table = PriceTable()
    assert table.cost_usd("gpt-4o-2024-08-06", 1_000_000, 0) == DEFAULT_PRICES["gpt-4o"]["input_per_1m"]
    assert table.cost_usd("someone-elses-model", 1_000_000, 1_000_000) == 2.50 + 10.00  # the highest
    operator = PriceTable({"*": {"input_per_1m": 1.0, "output_per_1m": 2.0}})
    assert operator.cost_usd("someone-elses-model", 1_000_000, 1_000_000) == 3.0
    assert operator.cost_usd("gpt-4o-mini", 1_000_000, 0) == 0.15
    scripted = PriceTable.from_settings(Settings(LLM_PROVIDER="scripted"))
    assert scripted.cost_usd("gpt-4o", 10**6, 10**6) == 0.0
    assert PriceTable.from_settings(Settings(LLM_PROVIDER="openai")).cost_usd("gpt-4o", 10**6, 0) == 2.5


def test_the_allowlist_comes_from_the_operator() -> None:
    default = model_allowlist(Settings(DEFAULT_ROOT_MODEL="llama-3-70b"))
    assert set(DEFAULT_PRICES) | {"llama-3-70b", "gpt-4o-mini"} == default
    configured = model_allowlist(
        Settings(RLM_MODEL_ALLOWLIST="a, b ,", DEFAULT_ROOT_MODEL="r", DEFAULT_SUB_MODEL="s")
    )
    assert configured == {"a", "b", "r", "s"}
