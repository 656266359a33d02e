"""Every exception `rlm_rs.client` raises, as one tree.

An API error keeps what the server said: the spec code (docs/api.md#errors),
the message, the details, the request id, and the HTTP or gRPC status it came
with. The class follows the code, so `except NotFoundError` catches an unknown
session over both transports. A code this version does not know is still an
`RlmApiError` (never an exception of its own making).

    RlmClientError                      anything this library raises
    ├── RlmConnectionError              no answer from the server (refused, reset, timed out); `.sent`
    ├── WaitTimeoutError                a client-side wait (READY, an execution's end) ran out
    ├── SessionFailedError              a session ended FAILED / EXPIRED / DELETING while waited for
    ├── ExecutionError                  `ask` saw the execution end other than COMPLETED
    ├── StepFailedError                 `StepResult.raise_for_error()` on a failed runtime step
    └── RlmApiError                     the server refused the call: code, message, details, request_id
        ├── UnauthorizedError           UNAUTHORIZED
        ├── ForbiddenError              FORBIDDEN
        ├── NotFoundError               NOT_FOUND (no such route)
        │   ├── SessionNotFoundError    SESSION_NOT_FOUND
        │   └── ExecutionNotFoundError  EXECUTION_NOT_FOUND
        ├── SessionNotReadyError        SESSION_NOT_READY
        ├── SessionExpiredError         SESSION_EXPIRED
        ├── ValidationError             VALIDATION_ERROR, METHOD_NOT_ALLOWED, UNSUPPORTED_MEDIA_TYPE
        │   └── PayloadTooLargeError    PAYLOAD_TOO_LARGE
        ├── ConflictError               CONFLICT
        ├── RateLimitedError            RATE_LIMITED (`.retry_after_seconds`)
        ├── BudgetExceededError         BUDGET_EXCEEDED, MAX_TURNS_EXCEEDED
        ├── SandboxError                SANDBOX_AST_REJECTED, SANDBOX_LINE_LIMIT, SANDBOX_RUNTIME_ERROR,
        │                               STEP_TIMEOUT, STATE_INVALID_TYPE, STATE_TOO_LARGE
        ├── UpstreamError               S3_READ_ERROR, PARSER_ERROR, LLM_PROVIDER_ERROR
        ├── ServiceUnavailableError     SERVICE_UNAVAILABLE (a gRPC UNAVAILABLE without a code:
        │                               RlmConnectionError)
        └── InternalError               INTERNAL_ERROR, LAMBDA_ERROR, CHECKSUM_MISMATCH
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm_rs.client.types import Execution, SessionInfo, StepResult


class RlmClientError(Exception):
    """Base of every exception raised by rlm_rs.client."""


class RlmConnectionError(RlmClientError):
    """The server could not be reached or the connection broke.

    `sent` is False when the request certainly never reached the server
    (connection refused, DNS), so repeating it cannot run anything twice.
    """

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.message = message
        self.sent = sent


class WaitTimeoutError(RlmClientError, TimeoutError):
    """A client-side wait ran out before the session or execution got there."""


class SessionFailedError(RlmClientError):
    """The session ended FAILED (or EXPIRED, DELETING) while the client waited for READY."""

    def __init__(self, session: SessionInfo):
        failed = {d.source_name or d.doc_id: d.failure_reason for d in session.docs if d.failure_reason}
        super().__init__(f"session {session.session_id} is {session.status}: {failed or 'no reason given'}")
        self.session = session


class ExecutionError(RlmClientError):
    """An execution ended other than COMPLETED; `execution.error` says why."""

    def __init__(self, execution: Execution):
        error = execution.error
        why = f": {error.code}: {error.message}" if error is not None else ""
        super().__init__(f"execution {execution.execution_id} ended {execution.status}{why}")
        self.execution = execution


class StepFailedError(RlmClientError):
    """A runtime step failed (its `error`, answered with HTTP 200); raised on request only."""

    def __init__(self, step: StepResult):
        error = step.error
        code = error.code if error is not None else "UNKNOWN"
        message = error.message if error is not None else ""
        super().__init__(f"step {step.turn_index} failed: {code}: {message}")
        self.step = step
        self.code = code


class RlmApiError(RlmClientError):
    """The server refused a call with an error in the spec's envelope.

    `code` is the spec code, `details` its details (values as the server sent
    them; over gRPC and REST today non-string details arrive as JSON text),
    `request_id` the id of the call (the server's, or the one this client
    sent), `http_status` / `grpc_status` whichever transport carried it.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        request_id: str = "",
        http_status: int | None = None,
        grpc_status: str | None = None,
    ):
        super().__init__(f"{code}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.http_status = http_status
        self.grpc_status = grpc_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, request_id={self.request_id!r})"


class UnauthorizedError(RlmApiError):
    """No, malformed, unknown, revoked or expired API key."""


class ForbiddenError(RlmApiError):
    """Reserved by the contract; another tenant's ids answer "not found"."""


class NotFoundError(RlmApiError):
    """No such session, execution or route (another tenant's ids included)."""


class SessionNotFoundError(NotFoundError):
    pass


class ExecutionNotFoundError(NotFoundError):
    pass


class SessionNotReadyError(RlmApiError):
    """An execution on a session that is not READY."""


class SessionExpiredError(RlmApiError):
    """The session is past its expires_at."""


class ValidationError(RlmApiError):
    """The request broke a rule; `details.errors` lists schema violations."""


class PayloadTooLargeError(ValidationError):
    """The body passed the server's request size limit."""


class ConflictError(RlmApiError):
    """Another step holds the execution (`details.status == "RUNNING"`), or it has ended."""


class RateLimitedError(RlmApiError):
    """The tenant's rate limit or a quota refused the call before it ran."""

    @property
    def retry_after_seconds(self) -> float | None:
        """What the server asked to wait (details.retry_after_seconds or Retry-After)."""
        raw = self.details.get("retry_after_seconds")
        try:
            value = float(raw) if raw is not None else None
        except (TypeError, ValueError):
            return None
        return value if value is not None and math.isfinite(value) and value >= 0 else None


class BudgetExceededError(RlmApiError):
    """A budget (or max_turns) ran out."""


class SandboxError(RlmApiError):
    """The sandbox refused the code or its state (normally a step's `error`, not a call's)."""


class UpstreamError(RlmApiError):
    """A blob, the parser or the model provider failed (HTTP 502)."""


class ServiceUnavailableError(RlmApiError):
    """The gateway cannot reach the control plane, or the server is not ready."""


class InternalError(RlmApiError):
    """An unexpected failure on the server (logged there with its traceback)."""


# Spec code -> class. tests/unit/client/test_errors.py checks that every code of
# rlm_rs/errors.py is here and nothing else is.
ERROR_CLASSES: dict[str, type[RlmApiError]] = {
    "UNAUTHORIZED": UnauthorizedError,
    "FORBIDDEN": ForbiddenError,
    "SESSION_NOT_FOUND": SessionNotFoundError,
    "EXECUTION_NOT_FOUND": ExecutionNotFoundError,
    "NOT_FOUND": NotFoundError,
    "SESSION_NOT_READY": SessionNotReadyError,
    "SESSION_EXPIRED": SessionExpiredError,
    "VALIDATION_ERROR": ValidationError,
    "METHOD_NOT_ALLOWED": ValidationError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "UNSUPPORTED_MEDIA_TYPE": ValidationError,
    "CONFLICT": ConflictError,
    "RATE_LIMITED": RateLimitedError,
    "BUDGET_EXCEEDED": BudgetExceededError,
    "MAX_TURNS_EXCEEDED": BudgetExceededError,
    "SANDBOX_AST_REJECTED": SandboxError,
    "SANDBOX_LINE_LIMIT": SandboxError,
    "SANDBOX_RUNTIME_ERROR": SandboxError,
    "STEP_TIMEOUT": SandboxError,
    "STATE_INVALID_TYPE": SandboxError,
    "STATE_TOO_LARGE": SandboxError,
    "S3_READ_ERROR": UpstreamError,
    "PARSER_ERROR": UpstreamError,
    "LLM_PROVIDER_ERROR": UpstreamError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "INTERNAL_ERROR": InternalError,
    "LAMBDA_ERROR": InternalError,
    "CHECKSUM_MISMATCH": InternalError,
}


def api_error(
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    request_id: str = "",
    http_status: int | None = None,
    grpc_status: str | None = None,
) -> RlmApiError:
    """The exception for a spec code (RlmApiError itself for a code this version does not know)."""
    cls = ERROR_CLASSES.get(code, RlmApiError)
    return cls(
        code,
        message,
        details=details,
        request_id=request_id,
        http_status=http_status,
        grpc_status=grpc_status,
    )
