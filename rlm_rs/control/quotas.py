"""Per-tenant quotas on what a tenant keeps alive: RUNNING executions, live
sessions, and long calls in flight (RLM_QUOTAS_JSON over `DEFAULT_LIMITS`).

Executions and sessions are counted in the metadata store, so every control
plane on the same store sees the same count; a per-tenant lock makes count +
write atomic within this process. Over a quota -> RATE_LIMITED (429) with
details {quota, limit, current, retry_after_seconds}. A child execution
(tool.queue_rlm) is never counted: its parent's budgets bound it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from rlm_rs.domain import ExecutionStatus, SessionStatus
from rlm_rs.errors import RlmError
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage


@dataclass(frozen=True)
class TenantLimits:
    """One tenant's limits; None = no limit."""

    running_executions: int | None = 16  # top-level executions in RUNNING (both modes)
    live_sessions: int | None = 100  # sessions not deleted and not expired
    long_calls: int | None = 8  # long RPCs in flight on one control plane (admission.py)


DEFAULT_LIMITS = TenantLimits()
_FIELDS = tuple(f.name for f in fields(TenantLimits))


def _merged(base: TenantLimits, entry: Any, where: str) -> TenantLimits:
    if entry is None:
        return base
    if not isinstance(entry, dict) or set(entry) - set(_FIELDS):
        raise ValueError(f"RLM_QUOTAS_JSON {where}: an object with keys among {', '.join(_FIELDS)}")
    for name, value in entry.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"RLM_QUOTAS_JSON {where}.{name}: a non-negative integer or null")
    return replace(base, **entry)


class QuotaTable:
    """RLM_QUOTAS_JSON parsed once: {"default": {...}, "tenants": {"t": {...}}};
    a tenant's missing fields fall back to "default", then to DEFAULT_LIMITS.
    Raises ValueError at start-up for a malformed table."""

    def __init__(self, config: dict[str, Any]) -> None:
        if set(config) - {"default", "tenants"}:
            raise ValueError('RLM_QUOTAS_JSON: only "default" and "tenants" keys')
        self.default = _merged(DEFAULT_LIMITS, config.get("default"), "default")
        tenants = config.get("tenants") or {}
        if not isinstance(tenants, dict):
            raise ValueError("RLM_QUOTAS_JSON tenants: an object of tenant -> limits")
        self._tenants = {t: _merged(self.default, e, f"tenants.{t}") for t, e in tenants.items()}

    def limits(self, tenant_id: str) -> TenantLimits:
        return self._tenants.get(tenant_id, self.default)


class Quotas:
    """Counts a tenant's stored executions and sessions before a new one is written."""

    def __init__(self, table: QuotaTable, storage: Storage) -> None:
        self.table = table
        self.storage = storage
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage) -> Quotas:
        return cls(QuotaTable(settings.quotas_json), storage)

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def running_executions(self, tenant_id: str) -> int:
        return sum(
            1
            for e in self.storage.metadata.executions_with_status(ExecutionStatus.RUNNING)
            if e.get("tenant_id") == tenant_id and not e.get("parent_execution_id")
        )

    def live_sessions(self, tenant_id: str) -> int:
        now = time.time()
        return sum(
            1
            for s in self.storage.metadata.list_sessions(tenant_id)
            if s.get("status") not in (SessionStatus.DELETING, SessionStatus.EXPIRED)
            and float(s.get("ttl_epoch") or 0) > now
        )

    @contextlib.contextmanager
    def admit_execution(self, record: dict[str, Any]) -> Iterator[None]:
        """Around the write of a new execution record: refuses a top-level
        execution past the tenant's `running_executions`."""
        if record.get("parent_execution_id"):
            yield
            return
        tenant = record["tenant_id"]
        limit = self.table.limits(tenant).running_executions
        with self._lock(f"executions:{tenant}"):
            if limit is not None:
                _refuse_at(
                    "running_executions",
                    limit,
                    self.running_executions(tenant),
                    "too many running executions: wait for one to end or cancel one",
                    retry_after_seconds=5,
                )
            yield

    def check_session(self, tenant_id: str) -> None:
        """Before a new session's documents are written (no lock: a cheap early
        refusal, so a refused request writes nothing)."""
        limit = self.table.limits(tenant_id).live_sessions
        if limit is not None:
            _refuse_at("live_sessions", limit, self.live_sessions(tenant_id), _SESSIONS_MESSAGE, 60)

    @contextlib.contextmanager
    def admit_session(self, tenant_id: str) -> Iterator[None]:
        """Around the write of a new session record: refuses past `live_sessions`."""
        limit = self.table.limits(tenant_id).live_sessions
        with self._lock(f"sessions:{tenant_id}"):
            if limit is not None:
                _refuse_at("live_sessions", limit, self.live_sessions(tenant_id), _SESSIONS_MESSAGE, 60)
            yield


_SESSIONS_MESSAGE = "too many live sessions: delete one or wait for one to expire"


def _refuse_at(quota: str, limit: int, current: int, message: str, retry_after_seconds: int) -> None:
    if current >= limit:
        raise RlmError(
            "RATE_LIMITED",
            message,
            {"quota": quota, "limit": limit, "current": current, "retry_after_seconds": retry_after_seconds},
        )
