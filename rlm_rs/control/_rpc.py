"""One server interceptor for every public RPC: request id, auth, admission,
log context, audit, errors.

`authorization: Bearer rlm_key_...` metadata -> tenant (keyed hash look-up,
constant-time compare); `x-request-id` taken or generated and returned in the
trailing metadata; admission (admission.py: the tenant's token bucket, and a
slot for a long call); `request_id`, `tenant_id` and `method` bound in the
structlog context for the call's life; an audit record per call; RlmError ->
a google.rpc.Status (ErrorInfo with reason = the error code, ErrorDetail,
RetryInfo, BadRequest: rlm_rs/error_details.py), any other exception ->
INTERNAL_ERROR with no internals, logged without request, metadata or frame
locals. `CallGuard` (installed in server.py) does it for unary, server-streaming
and client-streaming methods alike; handlers are plain `(request, context)`
servicer methods that read the authenticated `Caller` with `current_caller()` (a
contextvar set for the call's life). It must never let a handler run unauthenticated.
`AnonymousStreamLimit` gives the unauthenticated reflection stream, which the
guard does not cover, slots of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
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


_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("rlm_rs_caller", default=None)


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
            current = _authenticate(storage, metadata, request_id)
            tenant, key_prefix = current.tenant_id, current.key_prefix
            scope.enter_context(structlog.contextvars.bound_contextvars(tenant_id=tenant))
            scope.enter_context(admission.admit(tenant, method, request))
            del metadata  # the key stays out of every frame below this one
            yield current
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


def current_caller() -> Caller:
    """The authenticated caller of the RPC this thread is serving (set by
    `CallGuard` for the call's life; a handler outside one is a bug)."""
    current = _CALLER.get()
    if current is None:
        raise RuntimeError("current_caller() outside a guarded RPC")
    return current


@contextlib.contextmanager
def _as_caller(current: Caller) -> Iterator[None]:
    token = _CALLER.set(current)
    try:
        yield
    finally:
        try:
            _CALLER.reset(token)
        except ValueError:  # a stream closed from another context (garbage collection)
            _CALLER.set(None)


class CallGuard(grpc.ServerInterceptor):
    """Puts every method of `services` (full proto names) on the guarded
    path: unary calls, server streams (one rate-limit token, one long-call
    slot and one audit record per stream, latency = its duration; an error
    before or during the stream ends it with the spec's status) and client
    streams (authenticated and admitted from the metadata before the first
    message is read). Other services (health, reflection) pass untouched."""

    def __init__(self, storage: Storage, admission: Admission, services: Iterable[str]) -> None:
        self.storage, self.admission = storage, admission
        self.services = frozenset(services)

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service not in self.services:
            return handler
        storage, admission = self.storage, self.admission
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            def guarded_unary(request: Any, context: grpc.ServicerContext) -> Any:
                with _guarded(storage, admission, method, request, context) as current, _as_caller(current):
                    return unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                guarded_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                with _guarded(storage, admission, method, request, context) as current, _as_caller(current):
                    yield from stream(request, context)

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            upload = handler.stream_unary

            def guarded_upload(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                with _guarded(storage, admission, method, None, context) as current, _as_caller(current):
                    return upload(requests, context)

            return grpc.stream_unary_rpc_method_handler(
                guarded_upload,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{details.method}: bidirectional streams have no guarded path")


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
