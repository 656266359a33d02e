"""The gateway's errors: the spec's envelope, and the translations into it.

Three sources of failure reach a caller, each as `{"error": {code, message,
request_id, details}}` with the HTTP status of rlm_rs/errors.py's table:
- a gRPC status from the control plane (`error_from_rpc`: the code carried in
  google.rpc.ErrorInfo, the details in ErrorDetail, the delay in RetryInfo
  (Retry-After); or the table's fallback for the bare status);
- FastAPI's own refusals (`install`: schema violations, unknown routes and
  methods, oversized bodies);
- anything unexpected (gateway/middleware.py answers INTERNAL_ERROR).
Never passes a stack trace or an unexplained failure's text to a caller.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import grpc.aio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from gateway import models as m
from rlm_rs import error_details
from rlm_rs.errors import ERRORS, RlmError, code_for_grpc_status, new_request_id

REQUEST_ID_HEADER = "x-request-id"
_MESSAGE_CHARS = 500

# Every /v1 operation declares the envelope for each status, described by its codes.
_ERROR_STATUSES = (400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 502, 503)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ErrorEnvelope, "description": _desc}
    for status, _desc in (
        (s, ", ".join(sorted(c for c, spec in ERRORS.items() if spec.http_status == s)))
        for s in _ERROR_STATUSES
    )
}
# The envelope as an OpenAPI response body, for routes whose success is not JSON.
ENVELOPE_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}


# ---------------------------------------------------------------- gRPC -> spec error
def error_from_rpc(exc: grpc.aio.AioRpcError) -> RlmError:
    """The spec error a failed call carried (its google.rpc.Status details:
    rlm_rs/error_details.py), or the table's fallback."""
    code = exc.code()
    found = error_details.read(exc.trailing_metadata())
    if found.code in ERRORS:
        assert found.code is not None
        return RlmError(found.code, exc.details() or found.code, found.details())
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        # The control plane itself is unreachable (no ErrorInfo): not a caller error.
        return RlmError("SERVICE_UNAVAILABLE", "the control plane is unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RlmError("SERVICE_UNAVAILABLE", "the control plane did not answer in time")
    spec_code = code_for_grpc_status(code)
    message = exc.details() or spec_code
    if spec_code == "INTERNAL_ERROR":
        message = "internal error"  # never pass an unexplained failure's text on
    return RlmError(spec_code, message)


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The project's ErrorInfo among a failed call's status details, if any."""
    return error_details.read(exc.trailing_metadata()).info


def retry_after_seconds(err: RlmError) -> int | None:
    """Seconds for a Retry-After header (RATE_LIMITED), rounded up, at least 1."""
    seconds = error_details.retry_seconds(err.details)
    if seconds is None:
        return 1 if err.code == "RATE_LIMITED" else None
    return max(1, math.ceil(seconds))


# ---------------------------------------------------------------- the envelope
def request_id(request: Request) -> str:
    """The request's id (set by the edge middleware; a fresh one otherwise)."""
    return str(request.scope.get("state", {}).get("request_id") or new_request_id())


def error_response(err: RlmError, request_id: str) -> JSONResponse:
    headers = {REQUEST_ID_HEADER: request_id}
    retry = retry_after_seconds(err) if err.code == "RATE_LIMITED" else None
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(err.envelope(request_id), status_code=err.http_status, headers=headers)


# ---------------------------------------------------------------- FastAPI's refusals
async def _rlm_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RlmError)
    return error_response(exc, request_id(request))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        err = RlmError("METHOD_NOT_ALLOWED", f"method {request.method} not allowed here")
    elif exc.status_code == 404:
        err = RlmError("NOT_FOUND", "no such route")
    elif exc.status_code == 413:
        err = RlmError("PAYLOAD_TOO_LARGE", "request body too large")
    elif exc.status_code in (401, 403):
        err = RlmError("UNAUTHORIZED", "missing or invalid API key")
    else:
        err = RlmError("VALIDATION_ERROR", "bad request")
    response = error_response(err, request_id(request))
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method of every route matching the path (Starlette names only the first)."""
    routes: list[BaseRoute] = request.app.state.api_routes
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(p) for p in item.get("loc", ())],
            "msg": str(item.get("msg", "")),
            "type": str(item.get("type", "")),
        }
        for item in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        message = "malformed JSON body"
    elif errors:  # name the first offending field, e.g. "body.tool_requests.llm.0.key"
        first = errors[0]
        message = f"request validation failed: {'.'.join(first['loc'])}: {first['msg']}"[:_MESSAGE_CHARS]
    else:
        message = "request validation failed"
    err = RlmError("VALIDATION_ERROR", message, {"errors": errors[:50]})
    return error_response(err, request_id(request))


def install(app: FastAPI, routes: list[BaseRoute]) -> None:
    """Every refusal FastAPI makes answers the envelope; `routes` name the
    methods a 405's Allow header lists."""
    app.state.api_routes = routes
    app.add_exception_handler(RlmError, _rlm_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
