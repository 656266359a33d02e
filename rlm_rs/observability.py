"""Metrics and structured logs shared by every RLM-RS process.

Metric names are the spec's, with dots turned into underscores for Prometheus
(`rlm.api.requests.total` -> `rlm_api_requests_total`); each process exposes
them on its own internal port (`RLM_METRICS_PORT`), and model labels come from
an operator-side allowlist (`model_label`). Logs: rlm_rs.logs. Never log
secrets, prompts or document text here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server

from rlm_rs.logs import (
    bind_log_context,
    configure_logging,
    end_log_scope,
    get_logger,
    log_context,
    log_scope,
    logged_execution,
    start_log_scope,
)

__all__ = [
    "bind_log_context",
    "configure_logging",
    "end_log_scope",
    "get_logger",
    "log_context",
    "log_scope",
    "logged_execution",
    "model_label",
    "serve_metrics",
    "set_model_allowlist",
    "start_log_scope",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LONG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

API_REQUESTS = Counter("rlm_api_requests", "API requests (rlm.api.requests.total)", ["method", "code"])
API_LATENCY = Histogram(
    "rlm_api_latency_seconds", "API latency (rlm.api.latency.seconds)", ["method"],
    buckets=_LATENCY_BUCKETS,
)  # fmt: skip
EXECUTIONS = Counter("rlm_execution", "Executions ended (rlm.execution.total)", ["mode", "status"])
EXECUTION_DURATION = Histogram(
    "rlm_execution_duration_seconds", "Execution duration (rlm.execution.duration.seconds)",
    buckets=_LONG_BUCKETS,
)  # fmt: skip
EXECUTION_TURNS = Histogram(
    "rlm_execution_turns", "Turns per execution (rlm.execution.turns)",
    buckets=(1, 2, 3, 5, 8, 13, 20, 50),
)  # fmt: skip
EXECUTION_SUBCALLS = Histogram(
    "rlm_execution_subcalls", "Sub-calls per execution (rlm.execution.subcalls)",
    buckets=(0, 1, 2, 5, 10, 25, 50, 100),
)  # fmt: skip
EXECUTION_SPANS = Counter("rlm_execution_spans", "Spans logged (rlm.execution.spans.total)")
SANDBOX_STEPS = Counter(
    "rlm_sandbox_steps", "Sandbox steps (rlm.sandbox.steps.total, the spec's "
    "rlm.lambda.invocations.total)", ["isolation", "outcome"],
)  # fmt: skip
SANDBOX_STEP_SECONDS = Histogram(
    "rlm_sandbox_step_seconds", "Sandbox step latency (rlm.sandbox.step.seconds)",
    ["isolation"], buckets=_LATENCY_BUCKETS,
)  # fmt: skip

# Model names come from tenants (a request's root_model / sub_model): as label
# values they would grow the registry without bound (~6.6 KB per name, never
# freed). Only names on the operator's allowlist become labels; the rest are
# counted under "other". The control plane sets the list from its settings
# (rlm_rs.control.costs.model_allowlist).
OTHER_MODEL = "other"
_model_allowlist: frozenset[str] = frozenset()
_allowlist_lock = threading.Lock()


def set_model_allowlist(models: Iterable[str]) -> None:
    global _model_allowlist
    with _allowlist_lock:
        _model_allowlist = frozenset(m for m in models if m)


def model_label(model: str) -> str:
    """`model` when the operator allows it as a label value, else "other"."""
    return model if model in _model_allowlist else OTHER_MODEL


class _ModelLabelled:
    """A metric whose `model` label goes through model_label()."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric

    def labels(self, *, model: str, **labels: str) -> Any:
        return self._metric.labels(model=model_label(str(model)), **labels)

    def collect(self) -> Any:
        return self._metric.collect()


LLM_REQUESTS = _ModelLabelled(
    Counter("rlm_llm_requests", "Provider requests (rlm.llm.requests.total)", ["model", "cache_hit"])
)
LLM_TOKENS = _ModelLabelled(Counter("rlm_llm_tokens", "Tokens (rlm.llm.tokens.total)", ["model", "type"]))
LLM_LATENCY = _ModelLabelled(
    Histogram(
        "rlm_llm_latency_seconds", "Provider latency (rlm.llm.latency.seconds)", ["model"],
        buckets=_LONG_BUCKETS,
    )
)  # fmt: skip
LLM_ERRORS = _ModelLabelled(
    Counter("rlm_llm_errors", "Provider errors (rlm.llm.errors.total)", ["model", "code"])
)
LLM_COST_USD = _ModelLabelled(Counter("rlm_llm_cost_usd", "Provider cost in USD", ["model"]))


def serve_metrics(port: int | None, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on an internal port; no-op when port is None."""
    if port:
        start_http_server(port, addr=addr)
