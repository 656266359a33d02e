"""Admission: whether an authenticated call may start now, decided before it runs.

Two walls, both immediate (a refused call never queues or holds a thread)
and both RATE_LIMITED (429 / RESOURCE_EXHAUSTED) with `retry_after_seconds`:
- a token bucket per tenant (RATE_LIMITS_JSON; `DEFAULT_RATE` when the
  table has no "default"), one token per call;
- long calls (`LONG_CALLS`) hold one of the server's RPC threads for up to
  minutes: in all they may hold `RLM_RPC_THREADS - RLM_RPC_RESERVED_THREADS`
  threads, and each tenant its `long_calls` quota, so a short call always
  finds a thread whatever one tenant does.
Counts are this process's own (threads are per process). Never block here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rlm_rs.control.quotas import QuotaTable
from rlm_rs.errors import RlmError
from rlm_rs.settings import Settings

# Per tenant when RATE_LIMITS_JSON has no "default" entry: a client that polls
# a few executions or drives runtime steps stays far below it.
DEFAULT_RATE: dict[str, float] = {"rate_per_second": 50.0, "burst": 100.0}
# Seconds a refused long call is told to wait before it tries again.
LONG_CALL_RETRY_SECONDS = 2


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
    (DEFAULT_RATE when absent); `rate_per_second` 0 means no limit."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

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
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(
            RateLimiter(settings.rate_limits_json),
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
