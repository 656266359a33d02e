"""Execution leases held by this process: the fence on every write, and heartbeats.

A holder (an Answerer loop, a runtime step's claim: claims.py) takes an
execution's lease and gets a `Fence`: its owner id and a fencing token that
every takeover raises (rlm_rs/storage/metadata.py). While it holds the lease
(`holding`), every write it makes for that execution (events, the turn's
commit, the final status) is conditional on the fence, so a holder paused
past its lease (a GC pause, a frozen VM, SIGSTOP) fails its first write after
a takeover and stops (`lease_lost`) without having written anything. The
`Heartbeat` renews each held lease every third of its length, on its own
thread, so a long root call or step never loses the lease while the process
lives. Events a holder emits wait in the lease's `Outbox` and are written
by its next fenced write (the turn's commit, a status event) or within
EVENT_FLUSH_SECONDS by the event log's flusher (events.py), never without
the fence. Never: let a holder write for its execution without the fence,
or carry on past a failed renewal.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from rlm_rs.domain import ExecutionRecord, ExecutionStatus
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.observability import get_logger
from rlm_rs.settings import Settings
from rlm_rs.storage.metadata import Fence, MetadataStore

LEASE_LOST = "lease_lost"
MIN_LEASE_SECONDS = 1.0
# Events one write carries: a flush's transaction (a lease check + puts), and
# the most a turn's commit takes along (more are written just before it);
# DynamoDB allows 100 items and 4 MB per transaction, an event is <= ~34 KB.
EVENT_BATCH_MAX = 25
COMMIT_EVENTS_MAX = 20
log = get_logger(component="engine")


def lease_lost(execution_id: str) -> RlmError:
    """The CONFLICT a stale holder gets: its lease went to another owner (or the execution ended)."""
    return RlmError(
        "CONFLICT",
        "the lease on this execution was lost: another owner runs it now",
        {"execution_id": execution_id, "reason": LEASE_LOST},
    )


def is_lease_lost(exc: BaseException) -> bool:
    return isinstance(exc, ConflictError) and exc.details.get("reason") == LEASE_LOST


def busy(execution: ExecutionRecord) -> RlmError:
    return RlmError(
        "CONFLICT",
        "another step or tool resolution is running on this execution: retry when it ends",
        {"status": ExecutionStatus.RUNNING, "turn_index": int(execution.get("next_turn") or 0)},
    )


def not_running(execution: ExecutionRecord) -> RlmError:
    return RlmError("CONFLICT", f"execution is {execution['status']}", {"status": execution["status"]})


def lost(current: ExecutionRecord) -> RlmError:
    """Why a conditional write on the execution failed: it ended, or someone else holds it."""
    return not_running(current) if current["status"] != ExecutionStatus.RUNNING else busy(current)


class Outbox:
    """Events emitted under one lease and not yet stored, in event id order.
    `writing` is held by whoever writes them (one writer at a time, so they
    reach storage in id order and a watcher resuming after an id misses none)."""

    def __init__(self) -> None:
        self.writing = threading.RLock()
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.written: Callable[[], None] = lambda: None  # wakes this process's watchers (events.py)

    def add(self, item: dict[str, Any]) -> bool:
        """Queue an event; True when the outbox was empty (a flush is due)."""
        with self._lock:
            self._items.append(item)
            return len(self._items) == 1

    def take(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The oldest `limit` (all) queued events; call under `writing`."""
        with self._lock:
            taken, self._items = self._items[:limit], self._items[len(self._items[:limit]) :]
        return taken

    def put_back(self, items: list[dict[str, Any]]) -> None:
        """Events a failed write did not store, ahead of any queued since."""
        with self._lock:
            self._items[:0] = items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Lease:
    """A lease this process holds on one execution, as of its last renewal."""

    def __init__(
        self,
        metadata: MetadataStore,
        fence: Fence,
        seconds: float,
        until: float,
        record: ExecutionRecord | None = None,
    ) -> None:
        self.metadata = metadata
        self.record = record  # the execution as the taking write left it
        self.fence = fence
        self.seconds = seconds
        self.until = until  # this process's clock: when the lease runs out unless renewed
        self.lost = threading.Event()
        self.outbox = Outbox()  # events waiting for the next fenced write

    @classmethod
    def take(
        cls, metadata: MetadataStore, execution: ExecutionRecord, owner: str, seconds: float
    ) -> Lease | None:
        """Take the lease (raising its token); None when the execution is not
        RUNNING, changed since it was read, or another owner holds a live lease."""
        taken = metadata.take_execution_lease(dict(execution), owner, seconds)
        if taken is None:
            return None
        fence = Fence(taken["session_id"], taken["execution_id"], owner, int(taken["lease_token"]))
        return cls(metadata, fence, seconds, float(taken["lease_until"]), cast(ExecutionRecord, taken))

    @property
    def execution_id(self) -> str:
        return self.fence.execution_id

    def flush_events(self) -> None:
        """Write the queued events now, fenced by this lease (the store's
        CONFLICT when it is no longer held; unwritten events stay queued)."""
        with self.outbox.writing:
            while batch := self.outbox.take(EVENT_BATCH_MAX):
                try:
                    self.metadata.put_events(self.fence, batch)
                except BaseException:
                    self.outbox.put_back(batch)
                    raise
                self.outbox.written()

    def renew(self) -> None:
        """Extend the lease now; lease_lost (and `lost` set) when it is gone."""
        if self.lost.is_set():
            raise lease_lost(self.execution_id)
        started = time.time()
        try:
            self.metadata.renew_execution_lease(self.fence, self.seconds)
        except ConflictError:
            self.lost.set()
            log.warning("lease_lost", execution_id=self.execution_id, token=self.fence.token)
            raise lease_lost(self.execution_id) from None
        self.until = started + self.seconds

    def ensure(self) -> None:
        """Before a side effect: lease_lost when the lease is gone; a renewal
        first when less than a third of it is left on this clock (e.g. after
        the process was paused), so a holder never acts on a lapsed lease."""
        if self.lost.is_set():
            raise lease_lost(self.execution_id)
        if time.time() > self.until - self.seconds / 3:
            self.renew()

    def refused(self, current: ExecutionRecord | None) -> RlmError:
        """Why a write under this lease failed, from the record as it is now:
        the execution ended (not_running), the lease went to another owner or
        token (lease_lost: `lost` is set), or the turn moved on (busy)."""
        if current is None:
            return lease_lost(self.execution_id)
        if current.get("lease_owner") != self.fence.owner or current.get("lease_token") != self.fence.token:
            self.lost.set()
            log.warning("lease_lost", execution_id=self.execution_id, token=self.fence.token)
            return lease_lost(self.execution_id)
        return lost(current)

    def extended(self, at: float) -> None:
        """A fenced write that also set lease_until (the turn's commit) succeeded."""
        self.until = max(self.until, at + self.seconds)


# --- which leases this thread of control holds ----------------------------------------------------
_HELD: contextvars.ContextVar[dict[str, Lease] | None] = contextvars.ContextVar("rlm_leases", default=None)


@contextmanager
def holding(lease: Lease) -> Iterator[Lease]:
    """Every write for the lease's execution made in this context is fenced by it."""
    token = _HELD.set({**(_HELD.get() or {}), lease.execution_id: lease})
    try:
        yield lease
    finally:
        _HELD.reset(token)


def carried(lease: Lease | None) -> contextlib.AbstractContextManager[object]:
    """`holding(lease)` on another thread (one that works for the holder: an
    inline call's), or nothing when there is no lease to carry."""
    return holding(lease) if lease is not None else contextlib.nullcontext()


def held(execution_id: str) -> Lease | None:
    """The lease this context holds on the execution, if any."""
    return (_HELD.get() or {}).get(execution_id)


def fence_of(execution_id: str) -> Fence | None:
    lease = held(execution_id)
    return lease.fence if lease is not None else None


def check_lease(lease_seconds: float, settings: Settings) -> None:
    """Start-up: the lease against the provider's timeouts. The heartbeat
    renews every third of the lease, so a root call longer than the lease is
    safe; the lease must still leave a renewal time to land (at least
    MIN_LEASE_SECONDS, else ValueError). A root call that may outlast the
    lease (timeout x attempts) is logged once: it rests on the heartbeat, so
    a node whose storage is unreachable for two thirds of the lease loses
    such an execution to another node mid-call (its writes are then fenced)."""
    if lease_seconds < MIN_LEASE_SECONDS:
        raise ValueError(
            f"--lease-seconds {lease_seconds:g} is shorter than {MIN_LEASE_SECONDS:g} s: a heartbeat "
            "every third of it would not leave a storage round trip time to land"
        )
    longest_call = settings.llm_timeout_seconds * (settings.llm_max_retries + 1)
    if longest_call > lease_seconds:
        log.info(
            "lease_shorter_than_root_call",
            lease_seconds=lease_seconds,
            heartbeat_seconds=round(lease_seconds / 3, 3),
            longest_root_call_seconds=longest_call,
        )


# --- the heartbeat ---------------------------------------------------------------------------------
class Heartbeat:
    """One thread renewing every registered lease each third of its length."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def keeping(self, lease: Lease) -> Iterator[Lease]:
        """Renew `lease` in the background while the body runs."""
        with self._lock:
            self._leases[id(lease)] = lease
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
                self._thread.start()
            self._lock.notify_all()
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.pop(id(lease), None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def _due(self, now: float) -> tuple[list[Lease], float]:
        """The leases to renew now, and how long to sleep after."""
        due, wait = [], 1.0
        for lease in self._leases.values():
            if lease.lost.is_set():
                continue
            renew_at = lease.until - 2 * lease.seconds / 3
            if renew_at <= now:
                due.append(lease)
            else:
                wait = min(wait, renew_at - now)
        return due, max(wait, 0.02)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                due, wait = self._due(time.time())
                if not due:
                    self._lock.wait(wait)
                    continue
            for lease in due:
                if lease.lost.is_set():
                    continue
                try:
                    lease.renew()
                except ConflictError:
                    continue  # `lost` is set: the holder stops at its next write or check
                except Exception:  # storage unreachable: try again at the next tick
                    log.warning("lease_renewal_failed", execution_id=lease.execution_id, exc_info=True)
                    time.sleep(min(lease.seconds / 10, 1.0))
