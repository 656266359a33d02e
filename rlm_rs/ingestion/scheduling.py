"""Which pending documents the ingestion worker parses next: fair across tenants.

A free parse slot goes to the tenant with the fewest parses running (ties: the
tenant served longest ago), never to a tenant already at its cap; inside that
tenant, to the session with the fewest running (ties: served longest ago, then
the oldest); inside the session, the lowest doc_index. So one tenant's big or
slow documents hold at most its cap of slots, and another tenant's document
takes the next free one. Pure bookkeeping: no storage, no threads of its own.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PendingDocument:
    tenant_id: str
    session_id: str
    doc_id: str
    doc_index: int
    session_created_at: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.doc_id)


class FairScheduler:
    """Slots for parses; `take` fills the free ones fairly, `release` frees one."""

    def __init__(self, slots: int, per_tenant: int) -> None:
        self.slots = slots
        self.per_tenant = min(per_tenant, slots)
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], PendingDocument] = {}
        self._clock = itertools.count(1)
        self._served: dict[str, int] = {}  # tenant id or session id -> tick of its last slot

    @property
    def free(self) -> int:
        with self._lock:
            return self.slots - len(self._running)

    def running(self) -> list[PendingDocument]:
        with self._lock:
            return list(self._running.values())

    def take(self, pending: Iterable[PendingDocument]) -> list[PendingDocument]:
        """Claim free slots for some of `pending` (those not running already), fairly."""
        with self._lock:
            queues: dict[str, dict[str, list[PendingDocument]]] = {}
            for doc in pending:
                if doc.key not in self._running:
                    queues.setdefault(doc.tenant_id, {}).setdefault(doc.session_id, []).append(doc)
            for sessions in queues.values():
                for docs in sessions.values():
                    docs.sort(key=lambda d: (d.doc_index, d.doc_id), reverse=True)  # pop() = lowest
            by_tenant = Counter(d.tenant_id for d in self._running.values())
            by_session = Counter(d.session_id for d in self._running.values())
            taken: list[PendingDocument] = []
            while len(self._running) < self.slots:
                tenants = [t for t in queues if queues[t] and by_tenant[t] < self.per_tenant]
                if not tenants:
                    break
                tenant = min(tenants, key=lambda t: (by_tenant[t], self._served.get(t, 0), t))
                sessions = queues[tenant]
                session = min(sessions, key=lambda s: self._session_order(s, by_session, sessions[s]))
                doc = sessions[session].pop()
                if not sessions[session]:
                    del sessions[session]
                tick = next(self._clock)
                self._served[tenant] = self._served[session] = tick
                by_tenant[tenant] += 1
                by_session[session] += 1
                self._running[doc.key] = doc
                taken.append(doc)
            return taken

    def _session_order(
        self, session_id: str, by_session: Counter[str], docs: list[PendingDocument]
    ) -> tuple[int, int, str, str]:
        return (
            by_session[session_id],
            self._served.get(session_id, 0),
            docs[-1].session_created_at,
            session_id,
        )

    def release(self, doc: PendingDocument) -> None:
        with self._lock:
            self._running.pop(doc.key, None)
            if len(self._served) > 10_000:  # forget long-idle tenants and sessions
                self._served.clear()


__all__ = ["FairScheduler", "PendingDocument"]
