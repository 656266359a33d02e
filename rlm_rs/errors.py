"""Every error code of the RLM-RS contract, in one table.

Each error code (docs/api.md#errors) maps to exactly one HTTP status and one gRPC
status code; every layer raises `RlmError` (or a subclass) from here and every
edge (gRPC servicer, REST gateway, CLI) renders it from this table. Nothing
else may invent a code or a status.

    RlmError(code, message, details)        base; carries a spec code
    ├── raised by the sandbox:  SANDBOX_AST_REJECTED, SANDBOX_LINE_LIMIT, SANDBOX_RUNTIME_ERROR,
    │                           STEP_TIMEOUT, STATE_INVALID_TYPE, STATE_TOO_LARGE,
    │                           LAMBDA_ERROR (the sandbox pool failed)
    ├── raised by the control plane: SESSION_*, EXECUTION_NOT_FOUND, BUDGET_EXCEEDED,
    │                           MAX_TURNS_EXCEEDED, CHECKSUM_MISMATCH, RATE_LIMITED, ...
    └── raised at the edges:    UNAUTHORIZED, FORBIDDEN, VALIDATION_ERROR,
                                PAYLOAD_TOO_LARGE, NOT_FOUND, METHOD_NOT_ALLOWED
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True)
class ErrorSpec:
    code: str
    http_status: int
    # A grpc.StatusCode member name. Names, not the enum: the sandbox imports
    # this module and must never load gRPC (its zygote forks).
    grpc_status_name: str

    @property
    def grpc_status(self) -> grpc.StatusCode:
        import grpc

        return getattr(grpc.StatusCode, self.grpc_status_name)


_TABLE: tuple[ErrorSpec, ...] = (
    ErrorSpec("UNAUTHORIZED", 401, "UNAUTHENTICATED"),
    ErrorSpec("FORBIDDEN", 403, "PERMISSION_DENIED"),
    ErrorSpec("SESSION_NOT_FOUND", 404, "NOT_FOUND"),
    ErrorSpec("EXECUTION_NOT_FOUND", 404, "NOT_FOUND"),
    ErrorSpec("SESSION_NOT_READY", 409, "FAILED_PRECONDITION"),
    ErrorSpec("SESSION_EXPIRED", 410, "FAILED_PRECONDITION"),
    ErrorSpec("VALIDATION_ERROR", 422, "INVALID_ARGUMENT"),
    ErrorSpec("RATE_LIMITED", 429, "RESOURCE_EXHAUSTED"),
    ErrorSpec("BUDGET_EXCEEDED", 400, "RESOURCE_EXHAUSTED"),
    ErrorSpec("MAX_TURNS_EXCEEDED", 400, "RESOURCE_EXHAUSTED"),
    ErrorSpec("STEP_TIMEOUT", 400, "DEADLINE_EXCEEDED"),
    ErrorSpec("SANDBOX_AST_REJECTED", 400, "INVALID_ARGUMENT"),
    ErrorSpec("SANDBOX_LINE_LIMIT", 400, "RESOURCE_EXHAUSTED"),
    ErrorSpec("STATE_INVALID_TYPE", 400, "INVALID_ARGUMENT"),
    ErrorSpec("STATE_TOO_LARGE", 400, "INVALID_ARGUMENT"),
    ErrorSpec("CHECKSUM_MISMATCH", 400, "FAILED_PRECONDITION"),
    ErrorSpec("S3_READ_ERROR", 502, "UNAVAILABLE"),
    ErrorSpec("PARSER_ERROR", 502, "UNAVAILABLE"),
    ErrorSpec("LLM_PROVIDER_ERROR", 502, "UNAVAILABLE"),
    ErrorSpec("LAMBDA_ERROR", 500, "INTERNAL"),
    ErrorSpec("INTERNAL_ERROR", 500, "INTERNAL"),
    # Beyond the spec's list. A step's own uncaught exception (StepResult.error
    # only; the execution goes on so the model can adapt):
    ErrorSpec("SANDBOX_RUNTIME_ERROR", 400, "INVALID_ARGUMENT"),
    # Edge-only codes (not in the spec's list, needed for a complete envelope).
    ErrorSpec("NOT_FOUND", 404, "NOT_FOUND"),
    ErrorSpec("METHOD_NOT_ALLOWED", 405, "UNIMPLEMENTED"),
    ErrorSpec("PAYLOAD_TOO_LARGE", 413, "INVALID_ARGUMENT"),
    ErrorSpec("CONFLICT", 409, "ABORTED"),
    # The gateway cannot reach the control plane (or it is not ready).
    ErrorSpec("SERVICE_UNAVAILABLE", 503, "UNAVAILABLE"),
)

ERRORS: dict[str, ErrorSpec] = {spec.code: spec for spec in _TABLE}

# gRPC status -> the code used when a status arrives without ErrorInfo.
_FALLBACK_BY_GRPC: dict[str, str] = {
    "UNAUTHENTICATED": "UNAUTHORIZED",
    "PERMISSION_DENIED": "FORBIDDEN",
    "NOT_FOUND": "NOT_FOUND",
    "INVALID_ARGUMENT": "VALIDATION_ERROR",
    "RESOURCE_EXHAUSTED": "RATE_LIMITED",
    "DEADLINE_EXCEEDED": "STEP_TIMEOUT",
    "FAILED_PRECONDITION": "SESSION_NOT_READY",
    "ABORTED": "CONFLICT",
    "UNIMPLEMENTED": "METHOD_NOT_ALLOWED",
}

ERROR_DOMAIN = "rlm-rs"


class RlmError(Exception):
    """An error with a spec code; safe to show to a caller (no internals)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @property
    def spec(self) -> ErrorSpec:
        return ERRORS[self.code]

    @property
    def http_status(self) -> int:
        return self.spec.http_status

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return self.spec.grpc_status

    def envelope(self, request_id: str) -> dict[str, Any]:
        """The spec's HTTP error body."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id,
                "details": self.details,
            }
        }

    def details_json(self) -> str:
        return json.dumps(self.details, sort_keys=True, separators=(",", ":"))

    def __repr__(self) -> str:
        return f"RlmError({self.code!r}, {self.message!r})"


def code_for_grpc_status(status: grpc.StatusCode) -> str:
    """The spec code for a gRPC status that carried no ErrorInfo."""
    return _FALLBACK_BY_GRPC.get(status.name, "INTERNAL_ERROR")
