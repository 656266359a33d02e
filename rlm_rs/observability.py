"""Metrics and structured logs shared by every RLM-RS process.

Metric names are SPEC §12's, with dots turned into underscores for Prometheus
(`rlm.api.requests.total` -> `rlm_api_requests_total`). Each process exposes
them on its own internal port (`RLM_METRICS_PORT`). Logs are JSON lines via
structlog; never log secrets, prompts or document text here.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import Counter, Histogram, start_http_server

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
LLM_REQUESTS = Counter(
    "rlm_llm_requests", "Provider requests (rlm.llm.requests.total)", ["model", "cache_hit"]
)
LLM_TOKENS = Counter("rlm_llm_tokens", "Tokens (rlm.llm.tokens.total)", ["model", "type"])
LLM_LATENCY = Histogram(
    "rlm_llm_latency_seconds", "Provider latency (rlm.llm.latency.seconds)", ["model"],
    buckets=_LONG_BUCKETS,
)  # fmt: skip
LLM_ERRORS = Counter("rlm_llm_errors", "Provider errors (rlm.llm.errors.total)", ["model", "code"])
LLM_COST_USD = Counter("rlm_llm_cost_usd", "Provider cost in USD", ["model"])


def serve_metrics(port: int | None, addr: str = "127.0.0.1") -> None:
    """Expose /metrics on an internal port; no-op when port is None."""
    if port:
        start_http_server(port, addr=addr)


def configure_logging(level: str = "INFO", component: str = "rlm-rs") -> None:
    """JSON logs on stderr with the SPEC §12 context fields bound per request."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component)


# Until a process calls configure_logging, log lines go to stderr (never stdout:
# commands like `rlm-rs bench ... --json` print their result there).
structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


def get_logger(**fields: Any) -> Any:
    return structlog.get_logger().bind(**fields)
