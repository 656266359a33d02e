"""Every error code of the RLM-RS contract, in one table, and one exception
class per family of codes.

Each error code (docs/api.md#errors) maps to exactly one HTTP status and one
gRPC status code; every layer raises from here and every edge (gRPC
servicer, REST gateway, CLI) renders it from this table. Nothing else may
invent a code or a status. `RlmError(code, ...)` builds the family's class,
so `except ConflictError` catches every CONFLICT however it was raised:

    RlmError(code, message, details)      base: a code, safe to show a caller
    ├── Unauthenticated      UNAUTHORIZED
    ├── Forbidden            FORBIDDEN
    ├── NotFound             SESSION_NOT_FOUND, EXECUTION_NOT_FOUND, NOT_FOUND
    ├── InvalidRequest       VALIDATION_ERROR, PAYLOAD_TOO_LARGE, METHOD_NOT_ALLOWED,
    │                        UNSUPPORTED_MEDIA_TYPE
    ├── PreconditionFailed   SESSION_NOT_READY, SESSION_EXPIRED, CHECKSUM_MISMATCH
    ├── ConflictError        CONFLICT (two writers on one execution, or it has ended)
    ├── RateLimited          RATE_LIMITED
    ├── BudgetExceeded       BUDGET_EXCEEDED, MAX_TURNS_EXCEEDED
    ├── StepRefused          SANDBOX_AST_REJECTED, SANDBOX_LINE_LIMIT, SANDBOX_RUNTIME_ERROR,
    │                        STEP_TIMEOUT, STATE_INVALID_TYPE, STATE_TOO_LARGE
    ├── UpstreamError        S3_READ_ERROR, PARSER_ERROR, LLM_PROVIDER_ERROR, SERVICE_UNAVAILABLE
    │   └── SandboxUnavailable   LAMBDA_ERROR (the sandbox pool failed or is unreachable)
    └── InternalError        INTERNAL_ERROR
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

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

        return grpc.StatusCode[self.grpc_status_name]


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
    # An upload whose MIME type no parser reads (docs/api.md#uploads).
    ErrorSpec("UNSUPPORTED_MEDIA_TYPE", 415, "INVALID_ARGUMENT"),
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
REQUEST_ID_PREFIX = "req_"


def new_request_id() -> str:
    """A request id in the spec's `req_…` form, for a request that brought none."""
    return REQUEST_ID_PREFIX + uuid.uuid4().hex


class RlmError(Exception):
    """An error with a spec code; safe to show to a caller (no internals).
    Constructing one returns the instance of its code's family."""

    codes: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, code: str, message: str, details: dict[str, Any] | None = None) -> RlmError:
        family = _FAMILIES.get(code)
        if family is None:
            raise ValueError(f"unknown error code {code!r}")
        if not issubclass(family, cls):
            raise ValueError(f"{code} is a {family.__name__}, not a {cls.__name__}")
        return super().__new__(family)

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (RlmError, (self.code, self.message, self.details))

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
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class Unauthenticated(RlmError):
    codes = ("UNAUTHORIZED",)


class Forbidden(RlmError):
    codes = ("FORBIDDEN",)


class NotFound(RlmError):
    codes = ("SESSION_NOT_FOUND", "EXECUTION_NOT_FOUND", "NOT_FOUND")


class InvalidRequest(RlmError):
    codes = ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE", "METHOD_NOT_ALLOWED", "UNSUPPORTED_MEDIA_TYPE")


class PreconditionFailed(RlmError):
    codes = ("SESSION_NOT_READY", "SESSION_EXPIRED", "CHECKSUM_MISMATCH")


class ConflictError(RlmError):
    codes = ("CONFLICT",)


class RateLimited(RlmError):
    codes = ("RATE_LIMITED",)


class BudgetExceeded(RlmError):
    codes = ("BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED")


class StepRefused(RlmError):
    codes = (
        "SANDBOX_AST_REJECTED", "SANDBOX_LINE_LIMIT", "SANDBOX_RUNTIME_ERROR", "STEP_TIMEOUT",
        "STATE_INVALID_TYPE", "STATE_TOO_LARGE",
    )  # fmt: skip


class UpstreamError(RlmError):
    codes: ClassVar[tuple[str, ...]] = (
        "S3_READ_ERROR",
        "PARSER_ERROR",
        "LLM_PROVIDER_ERROR",
        "SERVICE_UNAVAILABLE",
    )


class SandboxUnavailable(UpstreamError):
    codes = ("LAMBDA_ERROR",)


class InternalError(RlmError):
    codes = ("INTERNAL_ERROR",)


def _families(root: type[RlmError]) -> list[tuple[str, type[RlmError]]]:
    found: list[tuple[str, type[RlmError]]] = []
    for family in root.__subclasses__():
        found += [(code, family) for code in family.codes] + _families(family)
    return found


_FAMILIES: dict[str, type[RlmError]] = dict(_families(RlmError))
if len(_families(RlmError)) != len(_FAMILIES) or set(_FAMILIES) != set(ERRORS):
    raise ImportError("every error code in the table belongs to exactly one family")


def code_for_grpc_status(status: grpc.StatusCode) -> str:
    """The spec code for a gRPC status that carried no ErrorInfo."""
    return _FALLBACK_BY_GRPC.get(status.name, "INTERNAL_ERROR")
