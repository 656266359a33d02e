"""Fair scheduling of sub-model calls across tenants and executions.

One scheduler per control plane runs every sub-call of every execution on
`concurrency` worker threads (RLM_SUBCALL_CONCURRENCY). A free worker takes
the next call round-robin across tenants with calls waiting, and within a
tenant round-robin across its executions, so one tenant's 5,000-call fan-out
and another's 3 calls share the workers call by call: the small one waits
for the next free worker, never for the big one's queue. One execution runs
at most `per_execution` calls at a time (RLM_SUBCALL_CONCURRENCY_PER_EXECUTION)
and one tenant at most `per_tenant` (RLM_SUBCALL_CONCURRENCY_PER_TENANT).
It only orders and counts calls; it never decides a budget, and a call's
failure is its caller's (the function's exception comes back from `map`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Execution:
    queue: collections.deque[tuple[Callable[[], Any], Future[Any]]] = field(default_factory=collections.deque)
    running: int = 0


@dataclass
class _Tenant:
    executions: collections.OrderedDict[str, _Execution] = field(default_factory=collections.OrderedDict)
    running: int = 0


class SubcallScheduler:
    """Worker threads shared by every execution; `map` blocks until its calls end."""

    def __init__(self, concurrency: int, per_execution: int, per_tenant: int = 0) -> None:
        self.concurrency = max(1, concurrency)
        self.per_execution = max(1, min(per_execution, self.concurrency))
        self.per_tenant = max(1, min(per_tenant or self.concurrency, self.concurrency))
        self._cond = threading.Condition()
        self._tenants: collections.OrderedDict[str, _Tenant] = collections.OrderedDict()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.running = 0
        self.peak = 0  # the most calls ever in flight at once (benchmarks, tests)

    def map(self, tenant_id: str, execution_id: str, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """fn(item) for every item, fairly scheduled; results in item order."""
        futures: list[Future[R]] = []
        with self._cond:
            if self._closed:
                raise RuntimeError("the sub-call scheduler is closed")
            tenant = self._tenants.setdefault(tenant_id, _Tenant())
            execution = tenant.executions.setdefault(execution_id, _Execution())
            for item in items:
                future: Future[R] = Future()
                execution.queue.append((lambda item=item: fn(item), future))  # type: ignore[misc]
                futures.append(future)
            if not execution.queue:
                self._forget(tenant_id, execution_id)
            self._grow()
            self._cond.notify(len(futures))
        return [future.result() for future in futures]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _grow(self) -> None:
        while len(self._threads) < self.concurrency:
            thread = threading.Thread(target=self._work, name=f"subcall-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next(self) -> tuple[str, str, _Tenant, _Execution, Callable[[], Any], Future[Any]] | None:
        """The next call by round-robin: tenants, then their executions (the
        chosen ones move to the back). None when nothing may run now."""
        for tenant_id, tenant in self._tenants.items():
            if tenant.running >= self.per_tenant:
                continue
            for execution_id, execution in tenant.executions.items():
                if execution.queue and execution.running < self.per_execution:
                    call, future = execution.queue.popleft()
                    tenant.executions.move_to_end(execution_id)
                    self._tenants.move_to_end(tenant_id)
                    return tenant_id, execution_id, tenant, execution, call, future
        return None

    def _forget(self, tenant_id: str, execution_id: str) -> None:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return
        execution = tenant.executions.get(execution_id)
        if execution is not None and not execution.queue and not execution.running:
            del tenant.executions[execution_id]
        if not tenant.executions:
            del self._tenants[tenant_id]

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
                while picked is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    picked = self._next()
                tenant_id, execution_id, tenant, execution, call, future = picked
                tenant.running += 1
                execution.running += 1
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(call())
                    except BaseException as exc:  # the caller's to handle, from map()
                        future.set_exception(exc)
            finally:
                with self._cond:
                    tenant.running -= 1
                    execution.running -= 1
                    self.running -= 1
                    self._forget(tenant_id, execution_id)
                    # One call ended: one thread, one execution slot and one
                    # tenant slot came free, so at most one more call can
                    # start. Waking one idle worker is enough (they are all
                    # alike); notify_all woke all of them per call.
                    self._cond.notify()
