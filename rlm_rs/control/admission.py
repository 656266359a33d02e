"""Admission: whether an authenticated call may start now, decided before it runs.

Two walls, both immediate (a refused call never queues or holds a thread)
and both RATE_LIMITED (429 / RESOURCE_EXHAUSTED) with `retry_after_seconds`:
- a token bucket per tenant (RATE_LIMITS_JSON; `DEFAULT_RATE` when the
  table has no "default"), one token per call;
- long calls (`LONG_CALLS`) hold one of the server's RPC threads for up to
  minutes: in all they may hold `RLM_RPC_THREADS - RLM_RPC_RESERVED_THREADS`
  threads, and each tenant its `long_calls` quota, so a short call always
  finds a thread whatever one tenant does.
The rate bucket is shared by every node through the metadata store (see
RateLimiter); long-call counts are this process's own (threads are per
process). Never block here beyond one small storage request.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rlm_rs.control.quotas import QuotaTable
from rlm_rs.errors import RlmError
from rlm_rs.observability import get_logger
from rlm_rs.settings import Settings
from rlm_rs.storage.metadata import MetadataStore

# Per tenant when RATE_LIMITS_JSON has no "default" entry: a client that polls
# a few executions or drives runtime steps stays far below it.
DEFAULT_RATE: dict[str, float] = {"rate_per_second": 50.0, "burst": 100.0}
# Seconds a refused long call is told to wait before it tries again.
LONG_CALL_RETRY_SECONDS = 2
# The shared bucket's local allowance: a node takes at most this many tokens
# per storage request and spends them within this many seconds.
LOCAL_BATCH_MAX = 10
LOCAL_HOLD_SECONDS = 1.0

log = get_logger(component="admission")


def _always(request: Any) -> bool:
    return True


def _if_synchronous(request: Any) -> bool:
    return bool(request.options.synchronous)


# RPC method -> whether this request holds its thread for long.
LONG_CALLS: dict[str, Callable[[Any], bool]] = {
    "WaitExecution": _always,  # up to timeout_seconds (300)
    "WatchExecution": _always,  # until the execution ends
    "StartExecution": _if_synchronous,  # up to synchronous_timeout_seconds (300)
    "StartFollowup": _if_synchronous,
    "RunStep": _always,  # a sandbox step, then its tools when resolve_tools is set
    "ResolveTools": _always,  # model calls and child executions
    "Upload": _always,  # as long as the caller streams
}


def is_long_call(method: str, request: Any) -> bool:
    rule = LONG_CALLS.get(method)
    return rule is not None and rule(request)


class RateLimiter:
    """Token bucket per tenant: {"default": {"rate_per_second": r, "burst": b},
    "tenants": {"<tenant>": {...}}}; a tenant without an entry gets "default"
    (DEFAULT_RATE when absent); `rate_per_second` 0 means no limit.

    With `shared` (the metadata store) the bucket is one per tenant for every
    node (`MetadataStore.take_rate_tokens`): a node takes tokens in batches of
    up to `LOCAL_BATCH_MAX` (a tenth of a second's rate) and spends them
    locally for at most `LOCAL_HOLD_SECONDS`, and remembers a refusal until
    its retry delay, so most calls make no storage request. Tokens a node took
    but did not spend are lost, never added: all nodes together admit at most
    burst + rate x time. When the store fails, this process's own bucket
    decides (logged), so an outage never refuses every call."""

    def __init__(self, config: dict[str, Any], shared: MetadataStore | None = None) -> None:
        self.config = config
        self.shared = shared
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._allowance: dict[str, tuple[int, float]] = {}  # tenant -> (tokens held, monotonic taken)
        self._refused: dict[str, float] = {}  # tenant -> monotonic time a token is due
        self.store_requests = 0  # shared-bucket takes made (for `rlm-rs bench ratelimit`)

    def _limits(self, tenant: str) -> tuple[float, float] | None:
        entry = (self.config.get("tenants") or {}).get(tenant) or self.config.get("default", DEFAULT_RATE)
        if not entry:
            return None
        rate = float(entry.get("rate_per_second", 0))
        return (rate, float(entry.get("burst", max(rate, 1)))) if rate > 0 else None

    def take(self, tenant: str) -> float:
        """0 when allowed, else the seconds until a token is available."""
        limits = self._limits(tenant)
        if limits is None:
            return 0.0
        if self.shared is not None:
            return self._take_shared(tenant, *limits)
        return self._take_local(tenant, *limits)

    def _take_local(self, tenant: str, rate: float, burst: float) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return 0.0
            self._buckets[tenant] = (tokens, now)
            return (1 - tokens) / rate

    def _take_shared(self, tenant: str, rate: float, burst: float) -> float:
        assert self.shared is not None
        with self._lock:
            tenant_lock = self._tenant_locks.setdefault(tenant, threading.Lock())
        with tenant_lock:
            now = time.monotonic()
            held, since = self._allowance.get(tenant, (0, now))
            if held > 0 and now - since < LOCAL_HOLD_SECONDS:
                self._allowance[tenant] = (held - 1, since)
                return 0.0
            due = self._refused.get(tenant, 0.0)
            if due > now:
                return due - now
            batch = max(1, min(LOCAL_BATCH_MAX, int(rate / 10), int(burst)))
            self.store_requests += 1
            try:
                taken, wait = self.shared.take_rate_tokens(tenant, batch, rate, burst)
            except Exception as exc:  # the store is down: this process's bucket decides
                log.warning("shared_rate_limit_unavailable", tenant_id=tenant, error=type(exc).__name__)
                return self._take_local(tenant, rate, burst)
            if taken >= 1:
                self._allowance[tenant] = (taken - 1, now)
                return 0.0
            self._refused[tenant] = now + wait
            return wait


class CallSlots:
    """Long calls in flight: at most `total`, at most a cap per key (tenant)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def in_flight(self, key: str | None = None) -> int:
        with self._lock:
            return sum(self._held.values()) if key is None else self._held.get(key, 0)

    def take(self, key: str, cap: int | None) -> None:
        """One slot for `key`, or RATE_LIMITED at once; give it back with `give`."""
        with self._lock:
            mine, everyone = self._held.get(key, 0), sum(self._held.values())
            if cap is not None and mine >= cap:
                raise _busy("long_calls", cap, mine, "too many long calls (waits, watches, "
                            "synchronous starts, steps) in flight for this tenant")  # fmt: skip
            if everyone >= self.total:
                raise _busy("server_long_calls", self.total, everyone,
                            "the server is at its limit of long calls")  # fmt: skip
            self._held[key] = mine + 1

    def give(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 1) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)

    @contextlib.contextmanager
    def hold(self, key: str, cap: int | None) -> Iterator[None]:
        self.take(key, cap)
        try:
            yield
        finally:
            self.give(key)


def _busy(quota: str, limit: int, current: int, message: str) -> RlmError:
    details = {"quota": quota, "limit": limit, "current": current}
    return RlmError("RATE_LIMITED", message, {**details, "retry_after_seconds": LONG_CALL_RETRY_SECONDS})


class Admission:
    """The rate limiter and the long-call slots of one control plane."""

    def __init__(self, limiter: RateLimiter, slots: CallSlots, quotas: QuotaTable) -> None:
        self.limiter = limiter
        self.slots = slots
        self.quotas = quotas

    @classmethod
    def from_settings(cls, settings: Settings, shared: MetadataStore | None = None) -> Admission:
        """`shared`: the metadata store, so rate limits hold across nodes."""
        return cls(
            RateLimiter(settings.rate_limits_json, shared),
            CallSlots(settings.rpc_threads - settings.rpc_reserved_threads),
            QuotaTable(settings.quotas_json),
        )

    @contextlib.contextmanager
    def admit(self, tenant: str, method: str, request: Any) -> Iterator[None]:
        """For the call's whole life (a stream's too); raises RATE_LIMITED at once."""
        wait = self.limiter.take(tenant)
        if wait > 0:
            raise RlmError(
                "RATE_LIMITED",
                "rate limit exceeded for this tenant",
                {"retry_after_seconds": max(1, int(wait + 0.999))},
            )
        if not is_long_call(method, request):
            yield
            return
        with self.slots.hold(tenant, self.quotas.limits(tenant).long_calls):
            yield
