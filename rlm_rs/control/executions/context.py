"""What every part of an execution reads: storage, the sandbox, the provider,
this control plane's caches and counters. Built once by the façade
(engine.py) and shared by all executions; it holds no execution's data and
never decides anything itself.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from rlm_rs.control.corpus import DocumentCache
from rlm_rs.control.costs import PriceTable
from rlm_rs.control.executions.events import EventLog
from rlm_rs.control.executions.leases import Heartbeat
from rlm_rs.control.executions.records import Records
from rlm_rs.control.executions.subcorpus import ManifestCache
from rlm_rs.control.quotas import Quotas
from rlm_rs.control.tools import ToolResolver
from rlm_rs.providers.base import Provider
from rlm_rs.sandbox.client import SandboxClient
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.search import SearchIndex

TIMINGS_KEPT = 2_000


@dataclass
class Context:
    storage: Storage
    settings: Settings
    sandbox: SandboxClient
    provider: Provider
    owner: str  # this process's lease owner name
    lease_seconds: float  # an Answerer loop's lease, renewed every turn
    docs: DocumentCache
    quotas: Quotas
    prices: PriceTable
    search_index: SearchIndex
    resolver: ToolResolver
    events: EventLog
    records: Records
    manifests: ManifestCache  # each execution's documents, listed once
    heartbeat: Heartbeat = field(default_factory=Heartbeat)  # renews the leases this process holds
    # per-turn phase durations of the Answerer loop and per-execution
    # finalisation times (`rlm-rs bench orchestrator` reads them)
    turn_timings: collections.deque[dict[str, float]] = field(
        default_factory=lambda: collections.deque(maxlen=TIMINGS_KEPT)
    )
    finish_timings_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=TIMINGS_KEPT)
    )
