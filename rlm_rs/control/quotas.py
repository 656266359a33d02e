"""Per-tenant quotas on what a tenant keeps alive: RUNNING executions, live
sessions, and long calls in flight (RLM_QUOTAS_JSON over `DEFAULT_LIMITS`).

Executions and sessions are admitted through a per-tenant quota item in the
metadata store: the new record is written in one transaction with a write
conditional on that item's version, so N nodes together never exceed a
quota (the running executions are the item's holders; live sessions are
counted by a consistent read). Over a quota -> RATE_LIMITED (429) with
details {quota, limit, current, retry_after_seconds}. A child execution
(tool.queue_rlm) is never counted: its parent's budgets bound it. Never
admit without the conditional write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from rlm_rs.domain import ExecutionStatus, SessionStatus
from rlm_rs.errors import ConflictError, NotFound, RlmError
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import QuotaTicket

RUNNING_EXECUTIONS = "running_executions"
LIVE_SESSIONS = "live_sessions"
# Conditional writes an admission tries before it reports the quota contended.
ADMIT_ATTEMPTS = 5
# What writes an admitted execution: the record and the ticket its write is conditional on.
Write = Callable[[dict[str, Any], QuotaTicket | None], dict[str, Any]]


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
    """Admits a tenant's new executions and sessions against its quotas, for
    every node on the store: each admission is a conditional write on the
    tenant's quota item (MetadataStore.quota_ticket) in the same transaction
    as the new record, so two nodes that counted the same state cannot both
    write; the loser counts again."""

    def __init__(self, table: QuotaTable, storage: Storage) -> None:
        self.table = table
        self.storage = storage

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage) -> Quotas:
        return cls(QuotaTable(settings.quotas_json), storage)

    def live_sessions(self, tenant_id: str) -> int:
        now = time.time()
        return sum(
            1
            for s in self.storage.metadata.list_sessions(tenant_id)
            if s.get("status") not in (SessionStatus.DELETING, SessionStatus.EXPIRED)
            and float(s.get("ttl_epoch") or 0) > now
        )

    def create_execution(self, record: dict[str, Any], write: Write) -> dict[str, Any]:
        """`write(record, ticket)` the new execution once the tenant has a
        place among its `running_executions` (the quota item's holders; a
        holder that stopped RUNNING is pruned when the quota is full). A
        child execution (`parent_execution_id`) is never counted."""
        tenant = record["tenant_id"]
        limit = self.table.limits(tenant).running_executions
        if record.get("parent_execution_id") or limit is None:
            return write(record, None)
        metadata = self.storage.metadata
        for _ in range(ADMIT_ATTEMPTS):
            ticket = metadata.quota_ticket(tenant, RUNNING_EXECUTIONS)
            holders = ticket.holders
            if len(holders) >= limit:  # places left behind (a crash between the end and its release)
                holders = tuple(h for h in holders if self._running(tenant, h))
                for gone in set(ticket.holders) - set(holders):
                    metadata.release_quota(tenant, RUNNING_EXECUTIONS, gone)
            _refuse_at(RUNNING_EXECUTIONS, limit, len(holders),
                       "too many running executions: wait for one to end or cancel one", 5)  # fmt: skip
            try:
                return write(record, replace(ticket, joining=record["execution_id"]))
            except ConflictError:
                continue  # another node admitted or released meanwhile: count again
        raise _contended(RUNNING_EXECUTIONS)

    def _running(self, tenant_id: str, execution_id: str) -> bool:
        try:
            return (
                self.storage.metadata.get_execution(tenant_id, execution_id)["status"]
                == ExecutionStatus.RUNNING
            )
        except NotFound:
            return False

    def release_execution(self, record: Mapping[str, Any]) -> None:
        """The execution left RUNNING: give its place back (idempotent)."""
        tenant = record["tenant_id"]
        if record.get("parent_execution_id") or self.table.limits(tenant).running_executions is None:
            return
        self.storage.metadata.release_quota(tenant, RUNNING_EXECUTIONS, record["execution_id"])

    def check_session(self, tenant_id: str) -> None:
        """Before a new session's documents are written: a cheap early
        refusal, so a refused request writes nothing (create_session decides)."""
        limit = self.table.limits(tenant_id).live_sessions
        if limit is not None:
            _refuse_at(LIVE_SESSIONS, limit, self.live_sessions(tenant_id), _SESSIONS_MESSAGE, 60)

    def create_session(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write the new session once the tenant is below `live_sessions`
        (counted by a consistent read of its sessions, written conditional
        on the quota item being unchanged since: no other node admitted one
        in between)."""
        tenant = record["tenant_id"]
        limit = self.table.limits(tenant).live_sessions
        metadata = self.storage.metadata
        if limit is None:
            return metadata.put_session(record)
        for _ in range(ADMIT_ATTEMPTS):
            ticket = metadata.quota_ticket(tenant, LIVE_SESSIONS)
            _refuse_at(LIVE_SESSIONS, limit, self.live_sessions(tenant), _SESSIONS_MESSAGE, 60)
            try:
                return metadata.put_session(record, ticket)
            except ConflictError:
                continue
        raise _contended(LIVE_SESSIONS)


_SESSIONS_MESSAGE = "too many live sessions: delete one or wait for one to expire"


def _contended(quota: str) -> RlmError:
    details = {"quota": quota, "retry_after_seconds": 1}
    return RlmError("RATE_LIMITED", "too many concurrent admissions for this tenant: retry", details)


def _refuse_at(quota: str, limit: int, current: int, message: str, retry_after_seconds: int) -> None:
    if current >= limit:
        raise RlmError(
            "RATE_LIMITED",
            message,
            {"quota": quota, "limit": limit, "current": current, "retry_after_seconds": retry_after_seconds},
        )
