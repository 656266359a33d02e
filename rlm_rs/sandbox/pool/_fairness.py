"""Fair admission of steps to the pool's workers across tenants.

Each tenant has its own FIFO queue; free slots go to the waiting tenants in
round-robin order. One tenant runs at most `max_workers_per_tenant` steps, and
all tenants together `pool_size`, except for `reserve_workers` more slots that
only a tenant with no step running may take: a tenant that keeps every regular
slot busy with 30 s steps cannot make another tenant's 10 ms step wait for
one of them. A step that cannot queue (its tenant already has
`max_queued_steps_per_tenant` waiting) or waits longer than
`max_queue_seconds` gets `SlotRefused`, which the front answers with
RATE_LIMITED. This module only counts slots; it never touches a worker.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

DEFAULT_RESERVE_WORKERS = 1
DEFAULT_MAX_QUEUED_STEPS_PER_TENANT = 16
DEFAULT_MAX_QUEUE_SECONDS = 30.0


class SlotRefused(Exception):
    """No slot for this step: its tenant's queue is full or the wait timed out."""

    def __init__(self, reason: str, message: str, details: dict[str, object]):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details


@dataclass(frozen=True)
class FairShare:
    """The admission rules, from the pool's policy (zero fields mean defaults)."""

    pool_size: int
    reserve_workers: int
    max_workers_per_tenant: int
    max_queued_steps_per_tenant: int
    max_queue_seconds: float

    @classmethod
    def from_policy(cls, policy: SandboxPolicy) -> FairShare:
        pool_size = max(1, policy.pool_size)
        # A reserved slot needs a worker process: the zygote keeps at most
        # pool_size + warm_workers of them (the cgroup is sized for that).
        reserve = policy.reserve_workers or DEFAULT_RESERVE_WORKERS
        reserve = max(0, min(reserve, policy.warm_workers))
        per_tenant = policy.max_workers_per_tenant or pool_size
        return cls(
            pool_size=pool_size,
            reserve_workers=reserve,
            max_workers_per_tenant=max(1, min(per_tenant, pool_size)),
            max_queued_steps_per_tenant=policy.max_queued_steps_per_tenant
            or DEFAULT_MAX_QUEUED_STEPS_PER_TENANT,
            max_queue_seconds=policy.max_queue_seconds or DEFAULT_MAX_QUEUE_SECONDS,
        )

    @property
    def capacity(self) -> int:
        return self.pool_size + self.reserve_workers


@dataclass
class _Ticket:
    tenant: str
    granted: bool = False
    running: int = 0
    queued_at: float = field(default_factory=time.monotonic)


class FairScheduler:
    """Slots for running steps; thread-safe. `acquire` blocks, `release` frees."""

    def __init__(self, share: FairShare):
        self.share = share
        self._lock = threading.Condition()
        self._running: collections.Counter[str] = collections.Counter()
        self._total = 0
        # Tenants with waiting steps, in the order they will be served.
        self._queues: collections.OrderedDict[str, collections.deque[_Ticket]] = collections.OrderedDict()
        self.refused_total = 0

    def acquire(self, tenant: str) -> int:
        """Wait for a slot for one of `tenant`'s steps; returns how many of the
        tenant's steps run now, this one included (1: its only one)."""
        share = self.share
        with self._lock:
            queue = self._queues.get(tenant)
            if queue is None and self._eligible(tenant):  # the fast path: nobody waits
                self._grant(tenant)
                return self._running[tenant]
            if queue is not None and len(queue) >= share.max_queued_steps_per_tenant:
                self.refused_total += 1
                raise SlotRefused(
                    "queue_full",
                    f"the sandbox pool already holds {len(queue)} waiting steps of this "
                    "tenant (max_queued_steps_per_tenant); retry later",
                    {"reason": "sandbox_queue_full", "queued": len(queue), "running": self._running[tenant]},
                )
            ticket = _Ticket(tenant)
            self._queues.setdefault(tenant, collections.deque()).append(ticket)
            self._dispatch()
            give_up = ticket.queued_at + share.max_queue_seconds
            while not ticket.granted:
                left = give_up - time.monotonic()
                if left <= 0:
                    self._withdraw(ticket)
                    self.refused_total += 1
                    raise SlotRefused(
                        "queue_timeout",
                        f"no sandbox worker became free for this tenant within "
                        f"{share.max_queue_seconds:g} s (max_queue_seconds); retry later",
                        {
                            "reason": "sandbox_queue_timeout",
                            "waited_seconds": round(share.max_queue_seconds, 3),
                            "running": self._running[tenant],
                        },
                    )
                self._lock.wait(left)
            return ticket.running

    def release(self, tenant: str) -> None:
        with self._lock:
            self._running[tenant] -= 1
            if self._running[tenant] <= 0:
                del self._running[tenant]
            self._total -= 1
            self._dispatch()

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "running": dict(self._running),
                "queued": {t: len(q) for t, q in self._queues.items()},
                "refused_total": self.refused_total,
                "capacity": self.share.capacity,
            }

    # --- under the lock -------------------------------------------------------------
    def _eligible(self, tenant: str) -> bool:
        share = self.share
        running = self._running[tenant]
        if self._total >= share.capacity or running >= share.max_workers_per_tenant:
            return False
        # The reserve above pool_size is only for a tenant with nothing running.
        return running == 0 or self._total < share.pool_size

    def _grant(self, tenant: str) -> None:
        self._running[tenant] += 1
        self._total += 1

    def _dispatch(self) -> None:
        """Grant slots to waiting tenants, round robin, while any is eligible."""
        granted = False
        progress = True
        while progress and self._queues:
            progress = False
            for tenant in list(self._queues):
                if not self._eligible(tenant):
                    continue
                queue = self._queues.pop(tenant)  # re-added at the back: round robin
                ticket = queue.popleft()
                ticket.granted = True
                self._grant(tenant)
                ticket.running = self._running[tenant]
                if queue:
                    self._queues[tenant] = queue
                granted = progress = True
                break
        if granted:
            self._lock.notify_all()

    def _withdraw(self, ticket: _Ticket) -> None:
        queue = self._queues.get(ticket.tenant)
        if queue is None:
            return
        queue.remove(ticket)
        if not queue:
            del self._queues[ticket.tenant]
