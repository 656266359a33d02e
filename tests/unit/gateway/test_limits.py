"""The published OpenAPI document advertises the bounds the control plane and the
sandbox enforce: all of them come from rlm_rs/limits.py, and the gateway keeps
no number of its own."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import gateway.models
from gateway import calls as gateway_calls
from gateway.cli import openapi_text
from rlm_rs import limits as lim


@cache
def schemas() -> dict[str, Any]:
    return dict(json.loads(openapi_text())["components"]["schemas"])


def prop(model: str, field: str) -> dict[str, Any]:
    """A field's schema, with an optional's `anyOf: [T, null]` unwrapped."""
    schema = schemas()[model]["properties"][field]
    for option in schema.get("anyOf", ()):
        if option.get("type") != "null":
            return {**schema, **option}
    return dict(schema)


@pytest.mark.parametrize(
    ("model", "field", "keyword", "enforced"),
    [
        ("StartExecutionBody", "question", "maxLength", lim.MAX_QUESTION_CHARS),
        ("FollowupBody", "question", "maxLength", lim.MAX_QUESTION_CHARS),
        ("RlmRequest", "question", "maxLength", lim.MAX_QUESTION_CHARS),
        ("RunStepBody", "code", "maxLength", lim.MAX_CODE_CHARS),
        ("CreateSessionBody", "docs", "maxItems", lim.MAX_DOCS_PER_SESSION),
        ("CreateSessionBody", "ttl_minutes", "maximum", lim.MAX_TTL_MINUTES),
        ("DocumentInput", "source_name", "maxLength", lim.MAX_SOURCE_NAME_CHARS),
        ("ExecutionOptions", "synchronous_timeout_seconds", "maximum", lim.MAX_SYNCHRONOUS_TIMEOUT_SECONDS),
        ("WaitBody", "timeout_seconds", "maximum", lim.MAX_WAIT_TIMEOUT_SECONDS),
        ("WaitBody", "timeout_seconds", "default", lim.DEFAULT_WAIT_TIMEOUT_SECONDS),
        ("LlmRequest", "key", "maxLength", lim.MAX_TOOL_KEY_CHARS),
        ("SearchRequest", "key", "maxLength", lim.MAX_TOOL_KEY_CHARS),
        ("RlmRequest", "key", "maxLength", lim.MAX_TOOL_KEY_CHARS),
        ("LlmRequest", "max_tokens", "maximum", lim.MAX_SUBCALL_MAX_TOKENS),
        ("LlmRequest", "temperature", "maximum", lim.MAX_TEMPERATURE),
        ("LlmRequest", "model_hint", "maxLength", lim.MAX_MODEL_NAME_CHARS),
        ("Models", "root_model", "maxLength", lim.MAX_MODEL_NAME_CHARS),
        ("SearchRequest", "query", "maxLength", lim.MAX_SEARCH_QUERY_CHARS),
        ("SearchRequest", "k", "maximum", lim.MAX_SEARCH_K),
        ("RlmRequest", "doc_indices", "maxItems", lim.MAX_RLM_PIECES),
        ("SpanInput", "tag", "maxLength", lim.MAX_SPAN_TAG_CHARS),
    ],
)
def test_openapi_advertises_the_enforced_bound(model: str, field: str, keyword: str, enforced: float) -> None:
    assert prop(model, field)[keyword] == enforced


@pytest.mark.parametrize("budget", sorted(lim.BUDGET_CEILINGS))
def test_openapi_advertises_each_budget_ceiling(budget: str) -> None:
    assert prop("Budgets", budget)["maximum"] == lim.BUDGET_CEILINGS[budget]


def test_query_and_path_bounds_come_from_the_limits() -> None:
    doc = json.loads(openapi_text())
    params = {
        p["name"]: p["schema"]
        for p in doc["paths"]["/v1/executions/{execution_id}/steps"]["get"]["parameters"]
    }
    assert params["page_size"]["maximum"] == lim.MAX_STEPS_PAGE_SIZE
    assert params["page_token"]["maxLength"] == lim.MAX_PAGE_TOKEN_CHARS


def test_the_gateway_models_hold_no_number_of_their_own() -> None:
    """Every bound in gateway/models.py is a name from rlm_rs/limits.py: a
    literal other than 0 or 1 would be a copy that can drift."""
    tree = ast.parse(Path(gateway.models.__file__).read_text(encoding="utf-8"))
    literals = [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
        and node.value not in (0, 1)
    ]
    assert literals == []


def test_the_gateway_waits_longer_than_the_control_plane_holds_a_call() -> None:
    """0 or unset means the control plane's default: the gateway's deadline
    must cover it too, or a synchronous start answers 503 before its execution."""
    from gateway.models import ExecutionOptions

    for seconds in (0.0, None, 1.0, lim.MAX_SYNCHRONOUS_TIMEOUT_SECONDS):
        options = ExecutionOptions(synchronous=True, synchronous_timeout_seconds=seconds)
        held = seconds or lim.DEFAULT_SYNCHRONOUS_TIMEOUT_SECONDS
        assert gateway_calls.start_deadline(options) > held
    for seconds in (0.0, 1.0, lim.MAX_WAIT_TIMEOUT_SECONDS):
        held = seconds or lim.DEFAULT_WAIT_TIMEOUT_SECONDS
        assert gateway_calls.wait_deadline(seconds or lim.DEFAULT_WAIT_TIMEOUT_SECONDS) > held


def test_the_gateway_waits_for_the_longest_step_a_budget_allows() -> None:
    from gateway.routes import runtime

    deadline, longest_step = runtime.STEP_DEADLINE_SECONDS, lim.BUDGET_CEILINGS["max_step_seconds"]
    assert deadline > longest_step


def test_limits_and_the_sandbox_tools_import_no_grpc() -> None:
    """The zygote's code imports rlm_rs.limits: it must stay standard library only."""
    code = (
        "import sys\n"
        "import rlm_rs.limits\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'pydantic')]\n"
        "assert not bad, bad\n"
        "import rlm_rs.sandbox.pool.zygote, rlm_rs.sandbox.executor, rlm_rs.sandbox._tools\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('grpc', 'pydantic')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
