"""One wrapper for every RPC: request id, auth, admission, log context, audit, errors.

`authorization: Bearer rlm_key_...` metadata -> tenant (keyed hash look-up,
constant-time compare); `x-request-id` taken or generated and returned in the
trailing metadata; admission (admission.py: the tenant's token bucket, and a
slot for a long call); `request_id`, `tenant_id` and `method` bound in the
structlog context for the call's life; an audit record per call; RlmError ->
a google.rpc.Status (ErrorInfo with reason = the error code, ErrorDetail,
RetryInfo, BadRequest: rlm_rs/error_details.py), any other exception ->
INTERNAL_ERROR with no internals, logged without request, metadata or frame
locals. Handlers receive a `Caller`.
`rpc` wraps unary handlers, `rpc_stream` server-streaming ones (the same path,
held open for the stream's life), `rpc_client_stream` client-streaming ones. `AnonymousStreamLimit` gives the
unauthenticated reflection stream, which no wrapper covers, slots of its own.
"""

from __future__ import annotations

import contextlib
import functools
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_status import rpc_status

from rlm_rs import error_details
from rlm_rs.control.admission import Admission, CallSlots
from rlm_rs.errors import RlmError, new_request_id
from rlm_rs.observability import API_LATENCY, API_REQUESTS, get_logger
from rlm_rs.storage import Storage

log = get_logger(component="control")

# Bidirectional streams served without an API key that hold a thread while
# the client keeps them open (grpc.health.v1 Watch is non-blocking: no thread).
ANONYMOUS_STREAMS = frozenset(
    {
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
ANONYMOUS_STREAMS_MAX = 2
_ANONYMOUS = ""  # their slot key: no tenant id is empty


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_prefix: str
    request_id: str


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}


def abort(context: grpc.ServicerContext, error: RlmError, request_id: str) -> None:
    """End the call with the error's google.rpc.Status (error_details.py)."""
    context.set_trailing_metadata((("x-request-id", request_id),))
    context.abort_with_status(rpc_status.to_status(error_details.to_status(error)))


def _log_internal_error(exc: Exception) -> None:
    """The traceback as plain text (file, line, code): never frame locals, where
    the request and its `authorization` metadata live; request_id, tenant_id
    and method come from the structlog context."""
    log.error(
        "rpc_failed",
        error=type(exc).__name__,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )


@contextlib.contextmanager
def _guarded(
    storage: Storage,
    admission: Admission,
    authenticate: bool,
    method: str,
    request: Any,
    context: grpc.ServicerContext,
) -> Iterator[Caller]:
    """Request id, auth, admission; errors -> status; metrics and audit at the end."""
    started = time.perf_counter()
    metadata = _metadata(context)
    request_id = (metadata.get("x-request-id") or "")[:128] or new_request_id()
    tenant, key_prefix, code, http_status = "", "", "", 200
    with contextlib.ExitStack() as scope:
        scope.enter_context(structlog.contextvars.bound_contextvars(request_id=request_id, method=method))
        try:
            caller = Caller("", "", request_id)
            if authenticate:
                caller = _authenticate(storage, metadata, request_id)
                tenant, key_prefix = caller.tenant_id, caller.key_prefix
                scope.enter_context(structlog.contextvars.bound_contextvars(tenant_id=tenant))
                scope.enter_context(admission.admit(tenant, method, request))
            del metadata  # the key stays out of every frame below this one
            yield caller
            context.set_trailing_metadata((("x-request-id", request_id),))
        except RlmError as error:
            code, http_status = error.code, error.http_status
            abort(context, error, request_id)
        except GeneratorExit:  # a streaming caller went away
            code, http_status = "CANCELLED", 499
            raise
        except Exception as exc:  # never leak internals to a caller
            _log_internal_error(exc)
            code, http_status = "INTERNAL_ERROR", 500
            abort(context, RlmError("INTERNAL_ERROR", "internal error"), request_id)
        finally:
            latency = time.perf_counter() - started
            API_REQUESTS.labels(method=method, code=code or "OK").inc()
            API_LATENCY.labels(method=method).observe(latency)
            if tenant:
                _audit(storage, tenant, request_id, method, key_prefix, http_status, latency, request, code)
            log.info("rpc", code=code or "OK", latency_ms=round(latency * 1000, 3))  # one line per call


def _method(handler: Callable[..., Any]) -> str:
    """The RPC's name as in the proto: handlers are `_<Method>`."""
    return handler.__name__.lstrip("_")


def rpc(
    storage: Storage, admission: Admission, *, authenticate: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps a unary handler `(self, request, context, caller) -> reply`."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        method = _method(handler)

        @functools.wraps(handler)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            with _guarded(storage, admission, authenticate, method, request, context) as caller:
                return handler(self, request, context, caller)

        return wrapper

    return decorate


def rpc_stream(
    storage: Storage, admission: Admission
) -> Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]]:
    """Wraps a server-streaming handler `(self, request, context, caller) ->
    iterator of replies` the same way: one rate-limit token, one long-call
    slot and one audit record per stream (latency = the stream's duration);
    an error before or during the stream ends it with the spec's status."""

    def decorate(handler: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        method = _method(handler)

        @functools.wraps(handler)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _guarded(storage, admission, True, method, request, context) as caller:
                yield from handler(self, request, context, caller)

        return wrapper

    return decorate


def rpc_client_stream(
    storage: Storage, admission: Admission
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps a client-streaming handler `(self, request_iterator, context,
    caller) -> reply` the same way: the caller is authenticated and admitted
    from the metadata before the first message is read."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        method = _method(handler)

        @functools.wraps(handler)
        def wrapper(self: Any, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            with _guarded(storage, admission, True, method, None, context) as caller:
                return handler(self, requests, context, caller)

        return wrapper

    return decorate


class AnonymousStreamLimit(grpc.ServerInterceptor):
    """Caps the `ANONYMOUS_STREAMS` (server reflection) at
    `ANONYMOUS_STREAMS_MAX` in flight, taken from the same long-call slots as
    the tenants' calls: with no key to rate-limit, they could otherwise hold
    every RPC thread. Over the cap -> RATE_LIMITED before anything is read."""

    def __init__(self, slots: CallSlots) -> None:
        self.slots = slots

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method not in ANONYMOUS_STREAMS or handler.stream_stream is None:
            return handler
        inner = handler.stream_stream
        slots = self.slots

        def limited(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                slots.take(_ANONYMOUS, ANONYMOUS_STREAMS_MAX)
            except RlmError as error:
                abort(context, error, new_request_id())
                return
            try:
                yield from inner(requests, context)
            finally:
                slots.give(_ANONYMOUS)

        return grpc.stream_stream_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _authenticate(storage: Storage, metadata: dict[str, str], request_id: str) -> Caller:
    header = metadata.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise RlmError("UNAUTHORIZED", "missing or malformed Bearer API key")
    record = storage.metadata.authenticate(key.strip())
    if record is None:
        raise RlmError("UNAUTHORIZED", "invalid API key")
    return Caller(record["tenant_id"], record.get("key_prefix", ""), request_id)


def _audit(
    storage: Storage,
    tenant: str,
    request_id: str,
    method: str,
    actor: str,
    status: int,
    latency: float,
    request: Any,
    error_code: str,
) -> None:
    record: dict[str, Any] = {
        "action": method,
        "actor_id": actor,
        "status_code": status,
        "latency_ms": round(latency * 1000, 3),
        "error_code": error_code or None,
    }
    for field in ("session_id", "execution_id"):
        value = getattr(request, field, "")
        if value:
            record[field] = value
    try:
        storage.metadata.append_audit(tenant, request_id, record)
    except RlmError as exc:  # an audit failure must not fail the call
        log.error("audit_failed", request_id=request_id, error=exc.code)
