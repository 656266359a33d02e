"""One wrapper for every RPC: request id, auth, rate limit, audit, errors.

`authorization: Bearer rlm_key_...` metadata -> tenant (keyed hash look-up,
constant-time compare); `x-request-id` taken or generated and returned in the
trailing metadata; a token bucket per tenant (RATE_LIMITS_JSON); an audit
record per call; RlmError -> gRPC status with google.rpc.ErrorInfo(reason =
spec code, domain "rlm-rs", metadata = details), any other exception ->
INTERNAL_ERROR with no internals. Handlers receive a `Caller`. `rpc` wraps
unary handlers, `rpc_stream` server-streaming ones (the same path, held open
for the stream's life).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from rlm_rs.errors import ERROR_DOMAIN, RlmError
from rlm_rs.observability import API_LATENCY, API_REQUESTS, get_logger
from rlm_rs.storage import Storage

log = get_logger(component="control")


@dataclass(frozen=True)
class Caller:
    tenant_id: str
    key_prefix: str
    request_id: str


class RateLimiter:
    """Token bucket per tenant: {"default": {"rate_per_second": r, "burst": b},
    "tenants": {"<tenant>": {...}}}; an empty config means no limit."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _limits(self, tenant: str) -> tuple[float, float] | None:
        entry = (self.config.get("tenants") or {}).get(tenant) or self.config.get("default")
        if not entry:
            return None
        rate = float(entry.get("rate_per_second", 0))
        return (rate, float(entry.get("burst", max(rate, 1)))) if rate > 0 else None

    def take(self, tenant: str) -> float:
        """0 when allowed, else the seconds until a token is available."""
        limits = self._limits(tenant)
        if limits is None:
            return 0.0
        rate, burst = limits
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
            return (1 - tokens) / rate


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}


def abort(context: grpc.ServicerContext, error: RlmError, request_id: str) -> None:
    info = error_details_pb2.ErrorInfo(
        reason=error.code,
        domain=ERROR_DOMAIN,
        metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in error.details.items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.grpc_status.value[0], message=error.message, details=[detail])
    context.set_trailing_metadata((("x-request-id", request_id),))
    context.abort_with_status(rpc_status.to_status(status))


@contextlib.contextmanager
def _guarded(
    storage: Storage,
    limiter: RateLimiter,
    authenticate: bool,
    method: str,
    request: Any,
    context: grpc.ServicerContext,
) -> Iterator[Caller]:
    """Request id, auth, rate limit; errors -> status; metrics and audit at the end."""
    started = time.perf_counter()
    metadata = _metadata(context)
    request_id = (metadata.get("x-request-id") or "")[:128] or str(uuid.uuid4())
    tenant, key_prefix, code, http_status = "", "", "", 200
    try:
        caller = Caller("", "", request_id)
        if authenticate:
            caller = _authenticate(storage, metadata, request_id)
            tenant, key_prefix = caller.tenant_id, caller.key_prefix
            wait = limiter.take(tenant)
            if wait > 0:
                raise RlmError(
                    "RATE_LIMITED",
                    "rate limit exceeded for this tenant",
                    {"retry_after_seconds": max(1, int(wait + 0.999))},
                )
        yield caller
        context.set_trailing_metadata((("x-request-id", request_id),))
    except RlmError as error:
        code, http_status = error.code, error.http_status
        abort(context, error, request_id)
    except GeneratorExit:  # a streaming caller went away
        code, http_status = "CANCELLED", 499
        raise
    except Exception as exc:  # never leak internals to a caller
        log.error(
            "rpc_failed",
            method=method,
            request_id=request_id,
            error=type(exc).__name__,
            exc_info=True,
        )
        code, http_status = "INTERNAL_ERROR", 500
        abort(context, RlmError("INTERNAL_ERROR", "internal error"), request_id)
    finally:
        latency = time.perf_counter() - started
        API_REQUESTS.labels(method=method, code=code or "OK").inc()
        API_LATENCY.labels(method=method).observe(latency)
        if tenant:
            _audit(storage, tenant, request_id, method, key_prefix, http_status, latency, request, code)


def rpc(
    storage: Storage, limiter: RateLimiter, *, authenticate: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps a unary handler `(self, request, context, caller) -> reply`."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        method = handler.__name__

        @functools.wraps(handler)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            with _guarded(storage, limiter, authenticate, method, request, context) as caller:
                return handler(self, request, context, caller)

        return wrapper

    return decorate


def rpc_stream(
    storage: Storage, limiter: RateLimiter
) -> Callable[[Callable[..., Iterator[Any]]], Callable[..., Iterator[Any]]]:
    """Wraps a server-streaming handler `(self, request, context, caller) ->
    iterator of replies` the same way: one rate-limit token and one audit
    record per stream (latency = the stream's duration); an error before or
    during the stream ends it with the spec's status."""

    def decorate(handler: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        method = handler.__name__

        @functools.wraps(handler)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with _guarded(storage, limiter, True, method, request, context) as caller:
                yield from handler(self, request, context, caller)

        return wrapper

    return decorate


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
