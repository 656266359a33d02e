"""The façade the servicers call (services.py, server.py): create, read,
wait for, watch, cancel, follow up and run executions. Each method hands
over to the module that owns the responsibility; nothing is decided here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from rlm_rs.control.budgets import deadline_epoch
from rlm_rs.control.corpus import DocumentCache
from rlm_rs.control.costs import PriceTable
from rlm_rs.control.executions import finish, followups, runtime, watch
from rlm_rs.control.executions.answerer import AnswererLoops, run_answerer
from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.events import EventLog
from rlm_rs.control.executions.records import Records, as_execution
from rlm_rs.control.executions.subcorpus import ManifestCache
from rlm_rs.control.quotas import Quotas
from rlm_rs.control.subcalls import SubcallScheduler
from rlm_rs.control.tools import Resolution, ToolResolver
from rlm_rs.domain import (
    EventRecord,
    ExecutionMode,
    ExecutionRecord,
    ExecutionStatus,
    SessionRecord,
    StepRecord,
)
from rlm_rs.providers.base import Provider
from rlm_rs.sandbox.client import SandboxClient
from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.search import SearchIndex
from rlm_rs.v1.common_pb2 import ToolRequests


def _context(
    storage: Storage,
    settings: Settings,
    sandbox: SandboxClient,
    provider: Provider,
    owner: str,
    lease_seconds: float,
) -> Context:
    quotas = Quotas.from_settings(settings, storage)
    prices = PriceTable.from_settings(settings, getattr(provider, "name", None))
    docs = DocumentCache(storage, settings.data_dir / "doc-cache", settings.doc_cache_max_bytes)
    search_index = SearchIndex(docs.verified_path)  # session artifacts, through the document cache
    return Context(
        storage=storage,
        settings=settings,
        sandbox=sandbox,
        provider=provider,
        owner=owner,
        lease_seconds=lease_seconds,
        docs=docs,
        quotas=quotas,
        prices=prices,
        search_index=search_index,
        resolver=ToolResolver(
            storage,
            provider,
            search_index,
            prices,
            SubcallScheduler(
                settings.subcall_concurrency,
                settings.subcall_concurrency_per_execution,
                settings.subcall_concurrency_per_tenant,
            ),
        ),
        events=EventLog(storage),
        records=Records(storage, settings, quotas, owner=owner, lease_seconds=lease_seconds),
        manifests=ManifestCache(docs),
    )


class ExecutionEngine:
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        sandbox: SandboxClient,
        provider: Provider,
        *,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        workers: int | None = None,
    ) -> None:
        self.ctx = _context(
            storage, settings, sandbox, provider, owner or f"cp-{uuid.uuid4().hex[:10]}", lease_seconds
        )
        self.loops = AnswererLoops(self.ctx, workers or settings.execution_concurrency)
        # what the servicers, the server and tests reach through the engine
        self.storage, self.owner = storage, self.ctx.owner
        self.docs, self.search_index = self.ctx.docs, self.ctx.search_index
        self.resolver, self.events, self.records = self.ctx.resolver, self.ctx.events, self.ctx.records
        self.turn_timings, self.finish_timings_ms = self.ctx.turn_timings, self.ctx.finish_timings_ms
        self.records.ceilings.refresh(sandbox, force=True)  # the pool's own caps, when it reports them

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.ctx.settings = self.records.settings = settings

    @property
    def sandbox(self) -> SandboxClient:
        return self.ctx.sandbox

    @sandbox.setter
    def sandbox(self, client: SandboxClient) -> None:
        self.ctx.sandbox = client
        self.records.ceilings.refresh(client, force=True)

    @property
    def provider(self) -> Provider:
        return self.ctx.provider

    def close(self) -> None:
        self.loops.close()
        self.ctx.resolver.scheduler.close()

    # --- records ------------------------------------------------------------------------
    def create(self, tenant_id: str, session: SessionRecord, **fields: Any) -> ExecutionRecord:
        """A new RUNNING record (records.Records.create has the fields)."""
        return self.records.create(tenant_id, session, **fields)

    def get(self, tenant_id: str, execution_id: str) -> ExecutionRecord:
        return self.records.get(tenant_id, execution_id)

    def children(self, execution: ExecutionRecord) -> list[ExecutionRecord]:
        return self.records.children(execution)

    def steps(self, execution: ExecutionRecord, *, with_state: bool = True) -> list[StepRecord]:
        return self.records.steps(execution, with_state=with_state)

    def followup(self, tenant_id: str, execution_id: str, **fields: Any) -> ExecutionRecord:
        """A follow-up's record (followups.py); the caller starts it."""
        return followups.followup(self.ctx, tenant_id, execution_id, **fields)

    # --- waiting, watching, cancelling ------------------------------------------------------
    def wait(self, tenant_id: str, execution_id: str, timeout_seconds: float) -> ExecutionRecord:
        return watch.wait(self.ctx, tenant_id, execution_id, timeout_seconds)

    def watch(
        self,
        tenant_id: str,
        execution_id: str,
        after_event_id: str = "",
        *,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[EventRecord]:
        return watch.watch(self.ctx, tenant_id, execution_id, after_event_id, stop=stop)

    def cancel(self, tenant_id: str, execution_id: str) -> ExecutionRecord:
        return finish.cancel(self.ctx, tenant_id, execution_id)

    # --- running --------------------------------------------------------------------------
    def start(self, execution: ExecutionRecord) -> None:
        self.loops.start(execution)

    def run_answerer(self, tenant_id: str, execution_id: str) -> ExecutionRecord:
        return run_answerer(self.ctx, tenant_id, execution_id)

    def runtime_step(
        self, tenant_id: str, execution_id: str, code: str, state_override: str | None, resolve: bool
    ) -> StepResult:
        return runtime.run_step(self.ctx, tenant_id, execution_id, code, state_override, resolve)

    def resolve_tools(
        self, tenant_id: str, execution_id: str, requests: ToolRequests, sub_model: str
    ) -> Resolution:
        return runtime.resolve_tools(self.ctx, tenant_id, execution_id, requests, sub_model)

    def recover_orphans(self) -> int:
        """Take over RUNNING Answerer executions whose owner's lease expired,
        and end runtime executions past max_total_seconds that no step holds."""
        taken = 0
        now = time.time()
        for item in self.storage.metadata.executions_with_status(ExecutionStatus.RUNNING):
            execution = as_execution(item)
            if execution.get("mode") == ExecutionMode.RUNTIME and now >= deadline_epoch(execution):
                runtime.expire(self.ctx, execution)
            elif self.loops.take_over(execution, now):
                taken += 1
        return taken
