"""Tool resolution between steps: sub-model calls and searches, within budgets.

Before every sub-call: the remaining sub-call count, the prompt's size and the
execution's total prompt chars are checked; a refused or failed request gets
status "error" with a short reason in its meta, and the loop goes on so the
model can adapt. Temperature-0 calls go through the sub-call cache at
`cache/{tenant_id}/llm/{digest}.json`, which is also what keeps a resumed
execution from paying twice for the same call. The digest is a keyed hash
(HMAC under the server's pepper) of tenant_id, provider, model, temperature,
max_tokens and prompt: the tenant is inside the hash as well as the path, and
no caller can compute a cache key from a guessed prompt. Each entry a session
writes is also listed under `cache/{tenant_id}/sessions/{session_id}/`, so
deleting the session deletes it (rlm_rs/control/lifecycle.py). The sub-calls of
one step run concurrently on the process's fair sub-call scheduler
(subcalls.py: RLM_SUBCALL_CONCURRENCY in flight per process, fairly across
tenants and executions).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from rlm_rs.canonical import canonical_json
from rlm_rs.control.costs import PriceTable, cost_spent
from rlm_rs.control.subcalls import SubcallScheduler
from rlm_rs.domain import Budgets, Consumed, SessionRecord, ToolStatus
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.observability import LLM_ERRORS, LLM_LATENCY, LLM_REQUESTS
from rlm_rs.providers.base import CallContext, Provider, ProviderError
from rlm_rs.storage import Storage
from rlm_rs.storage.keys import llm_cache_key, session_cache_prefix
from rlm_rs.storage.metadata import now_iso
from rlm_rs.storage.search import SearchIndex
from rlm_rs.tracing import span
from rlm_rs.v1.common_pb2 import LlmRequest, SearchRequest, ToolRequests

_ERROR_META_CHARS = 300


@dataclass
class Resolution:
    llm: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: dict[str, dict[str, Any]] = field(default_factory=dict)
    llm_batch: dict[str, dict[str, Any]] = field(default_factory=dict)
    rlm: dict[str, dict[str, Any]] = field(default_factory=dict)  # filled by the engine (children)
    statuses: dict[str, str] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # for the trace

    @staticmethod
    def retire(state: dict[str, Any]) -> None:
        """A step ran successfully with the results in `state`: they leave it
        (the step record of the step that queued them keeps them)."""
        state["_tool_results"] = {"llm": {}, "search": {}}
        state["_tool_status"] = {}

    def inject(self, state: dict[str, Any]) -> None:
        results = state.setdefault("_tool_results", {})
        results.setdefault("llm", {}).update(self.llm)
        results.setdefault("search", {}).update(self.search)
        if self.llm_batch:
            results.setdefault("llm_batch", {}).update(self.llm_batch)
        if self.rlm:
            results.setdefault("rlm", {}).update(self.rlm)
        state.setdefault("_tool_status", {}).update(self.statuses)


class ToolResolver:
    def __init__(
        self,
        storage: Storage,
        provider: Provider,
        search_index: SearchIndex | None = None,
        prices: PriceTable | None = None,
        scheduler: SubcallScheduler | None = None,
    ) -> None:
        self.storage = storage
        self.provider = provider
        self.search_index = search_index
        self.prices = prices or PriceTable()
        # shared by all executions of this process (no thread churn per step)
        self.scheduler = scheduler or SubcallScheduler(64, 32, 48)

    def resolve(
        self,
        requests: ToolRequests,
        *,
        tenant_id: str,
        session: SessionRecord,
        sub_model: str,
        budgets: Budgets,
        consumed: Consumed,
        question: str = "",
        execution_id: str = "",
    ) -> Resolution:
        """Resolve one step's requests; `consumed` is updated in place.

        A batch is resolved prompt by prompt exactly like individual calls
        (same budget checks, cache, concurrency); its status is "resolved"
        when every prompt resolved, else "error" (each result has its meta)."""
        resolution = Resolution()
        admitted: list[tuple[str | None, int, LlmRequest]] = []
        for batch_key, index, request in _jobs(requests, resolution):
            reason = self._refusal(request, budgets, consumed)
            if reason:
                self._llm_outcome(resolution, batch_key, index, request, "", {"error": reason[:300]}, reason)
                continue
            consumed["llm_subcalls"] += 1
            consumed["llm_prompt_chars_total"] += len(request.prompt)
            admitted.append((batch_key, index, request))
        outcomes = self.scheduler.map(
            tenant_id,
            execution_id,
            lambda job: self._llm(job[2], tenant_id, session["session_id"], sub_model, question),
            admitted,
        )
        for (batch_key, index, request), (text, meta, error) in zip(admitted, outcomes, strict=True):
            if not error:
                usage = meta.get("usage", {})
                meta["cost_usd"] = self.prices.record(
                    consumed,
                    meta.get("model", sub_model),
                    int(usage.get("input_tokens", 0)),
                    int(usage.get("output_tokens", 0)),
                )
                consumed["cache_hits"] += 1 if meta.get("cache_hit") else 0
            self._llm_outcome(resolution, batch_key, index, request, text, meta, error)
        for key, batch_result in resolution.llm_batch.items():
            failed = any("error" in (r["meta"] or {}) for r in batch_result["results"])
            resolution.statuses[key] = ToolStatus.ERROR if failed else ToolStatus.RESOLVED
        for search in requests.search:
            self._search(resolution, search, session)
        return resolution

    def _llm_outcome(
        self,
        resolution: Resolution,
        batch_key: str | None,
        index: int,
        request: LlmRequest,
        text: str,
        meta: dict[str, Any],
        error: str,
    ) -> None:
        if batch_key is None:
            if error:
                self._error(resolution, request.key, "llm", error, meta)
                return
            resolution.llm[request.key] = {"text": text, "meta": meta}
            resolution.statuses[request.key] = ToolStatus.RESOLVED
        else:
            entry = {**meta, "error": error[:_ERROR_META_CHARS]} if error else meta
            resolution.llm_batch[batch_key]["results"][index] = {"text": text, "meta": entry}
        resolution.records.append({"type": "llm", "key": request.key, "meta": meta, "error": error or None})

    def _refusal(self, request: LlmRequest, budgets: Budgets, consumed: Consumed) -> str:
        if cost_spent(budgets, consumed):
            return f"cost budget spent (max_cost_usd={budgets['max_cost_usd']})"
        if consumed["llm_subcalls"] >= budgets["max_llm_subcalls"]:
            return f"sub-call budget spent (max_llm_subcalls={budgets['max_llm_subcalls']})"
        if len(request.prompt) > budgets["max_llm_prompt_chars"]:
            limit = budgets["max_llm_prompt_chars"]
            return f"prompt is {len(request.prompt)} chars (max_llm_prompt_chars={limit})"
        total = consumed["llm_prompt_chars_total"] + len(request.prompt)
        if total > budgets["max_total_llm_prompt_chars"]:
            return "total prompt budget spent (max_total_llm_prompt_chars)"
        return ""

    @staticmethod
    def _error(
        resolution: Resolution, key: str, kind: str, reason: str, meta: dict[str, Any] | None = None
    ) -> None:
        entry = {"error": reason[:_ERROR_META_CHARS], **(meta or {})}
        if kind == "llm":
            resolution.llm[key] = {"text": "", "meta": entry}
        else:
            resolution.search[key] = {"hits": [], "meta": entry}
        resolution.statuses[key] = ToolStatus.ERROR
        resolution.records.append({"type": kind, "key": key, "meta": entry})

    def cache_key(self, tenant_id: str, model: str, request: LlmRequest) -> str:
        """The entry's digest: keyed, and the tenant is part of what is hashed."""
        material = canonical_json(
            {
                "tenant_id": tenant_id,
                "provider": self.provider.name,
                "model": model,
                "temperature": request.temperature,
                "max_tokens": request.max_tokens,
                "prompt": request.prompt,
            }
        )
        return self.storage.metadata.keyed_digest("llm-cache", material.encode("utf-8"))

    def _cached(self, key: str) -> str | None:
        """A cached answer's text, or None: no entry (or none readable), or
        one that does not read as an entry (damaged on disk or in the
        bucket): the call is then paid again, never failed or answered from
        garbage."""
        try:  # one GET: a missing key is the store's read error, no HEAD first
            text = json.loads(self.storage.blobs.get(key))["response"]["text"]
        except (RlmError, ValueError, KeyError, TypeError):
            return None
        return text if isinstance(text, str) else None

    def _llm(
        self, request: LlmRequest, tenant_id: str, session_id: str, sub_model: str, question: str
    ) -> tuple[str, dict[str, Any], str]:
        model = sub_model if request.model_hint in ("", "sub") else request.model_hint
        cacheable = request.temperature == 0
        digest = self.cache_key(tenant_id, model, request)
        key = llm_cache_key(tenant_id, digest)
        cached = self._cached(key) if cacheable else None
        if cached is not None:
            LLM_REQUESTS.labels(model=model, cache_hit="true").inc()
            return cached, {"model": model, "cache_hit": True, "usage": {}}, ""
        started = time.perf_counter()
        try:
            with span("llm.sub", model=model, key=request.key):
                completion = self.provider.complete(
                    model,
                    [{"role": "user", "content": request.prompt}],
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    context=CallContext(role="sub", question=question, key=request.key),
                )
        except ProviderError as exc:
            LLM_ERRORS.labels(model=model, code=str(exc.status or "error")).inc()
            return "", {"model": model, "cache_hit": False}, f"LLM_PROVIDER_ERROR: {exc}"
        LLM_LATENCY.labels(model=model).observe(time.perf_counter() - started)
        LLM_REQUESTS.labels(model=model, cache_hit="false").inc()
        usage = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens}
        if cacheable:
            record = {
                "created_at": now_iso(),
                "provider": self.provider.name,
                "model": model,
                "request": {
                    "prompt_sha256": hashlib.sha256(request.prompt.encode()).hexdigest(),
                    "max_tokens": request.max_tokens,
                    "temperature": request.temperature,
                },
                "response": {"text": completion.text, "raw": completion.raw},
            }
            # the session's marker first: an entry is never left without one
            self.storage.blobs.put(session_cache_prefix(tenant_id, session_id) + digest, b"")
            with contextlib.suppress(ConflictError):  # a concurrent identical call wrote it first
                self.storage.blobs.put(key, canonical_json(record).encode("utf-8"))
        meta = {"model": completion.model, "cache_hit": False, "usage": usage}
        return completion.text, meta, ""

    def _search(self, resolution: Resolution, request: SearchRequest, session: SessionRecord) -> None:
        """Hits from the session's index artifact, the same on every node; a
        missing, foreign or corrupt artifact is this request's error status."""
        if not (session.get("options") or {}).get("enable_search") or self.search_index is None:
            self._error(resolution, request.key, "search", "search is not enabled for this session")
            return
        doc_ids = list(request.filters.doc_ids) if request.HasField("filters") else []
        try:
            hits = self.search_index.search(session, request.query, request.k or 10, doc_ids)
        except RlmError as exc:
            self._error(resolution, request.key, "search", f"{exc.code}: {exc.message}")
            return
        resolution.search[request.key] = {"hits": hits, "meta": {"count": len(hits)}}
        resolution.statuses[request.key] = ToolStatus.RESOLVED
        resolution.records.append({"type": "search", "key": request.key, "meta": {"count": len(hits)}})


def _jobs(requests: ToolRequests, resolution: Resolution) -> list[tuple[str | None, int, LlmRequest]]:
    """(batch key or None, index, request): singles and batch prompts share one
    pool; each batch gets its result slots in `resolution`."""
    jobs: list[tuple[str | None, int, LlmRequest]] = [(None, 0, r) for r in requests.llm]
    for batch in requests.llm_batch:
        resolution.llm_batch[batch.key] = {"results": [None] * len(batch.prompts)}
        for index, prompt in enumerate(batch.prompts):
            single = LlmRequest(
                key=f"{batch.key}[{index}]", prompt=prompt, model_hint=batch.model_hint,
                max_tokens=batch.max_tokens, temperature=batch.temperature,
                metadata_json=batch.metadata_json,
            )  # fmt: skip
            jobs.append((batch.key, index, single))
    return jobs
