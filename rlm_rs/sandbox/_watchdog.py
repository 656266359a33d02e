"""One shared watchdog thread that ends in-process steps at their deadline.

A step ticks (`StepRuntime.tick`) before every statement and iteration, and
every tick first checks whether the step was stopped; the clock itself is
read only every 4096 ticks. When each tick follows a long C-level operation
(`x in big_list`, a sort), 4096 of them can overrun the deadline by minutes.
This thread marks the step stopped at its deadline, so the next tick ends it:
the overrun is at most one C-level operation. It cannot interrupt that
operation (nothing in-process can: the thread needs the GIL the C code
holds); the pool's SIGKILL from outside is the bound for those. Never started
in a pool worker (seccomp kills thread creation) or in the zygote (it must
stay single-threaded): the executor only arms it when asked.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Protocol


class Expirable(Protocol):
    def expire(self) -> None: ...


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Expirable]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, target: Expirable) -> int:
        """Call target.expire() once time.monotonic() passes `deadline`; returns a handle."""
        with self._lock:
            handle = next(self._ids)
            heapq.heappush(self._heap, (deadline, handle, target))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rlm-step-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify()
            return handle

    def disarm(self, handle: int) -> None:
        with self._lock:
            if any(entry[1] == handle for entry in self._heap):
                self._cancelled.add(handle)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, handle, target = self._heap[0]
                left = deadline - time.monotonic()
                if handle in self._cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled.discard(handle)
                    continue
                if left > 0:
                    self._lock.wait(left)
                    continue
                heapq.heappop(self._heap)
            target.expire()


_WATCHDOG = _Watchdog()
arm = _WATCHDOG.arm
disarm = _WATCHDOG.disarm
