"""One writer per execution turn: the loop's lease, step claims, and how a lost turn is told.

Both an Answerer loop and a runtime step hold their execution by a lease
(leases.py): `lease_owner` (the control plane's owner name for a loop, a
fresh token for a step's *claim*), `lease_until`, and a fencing token
`lease_token` that every taking write raises. A claim is taken only while
the record is RUNNING, unchanged since it was read and not held by anyone
else; the loser gets CONFLICT and runs nothing. Every write of the holder is
then conditional on its owner and token (the turn's commit is one
transaction: the counters, the step record and the state, only while the
lease is held, the execution RUNNING and still at that turn), so a holder
that lost its lease, to a takeover or a cancel, writes nothing more.
Nothing here may let two writers commit one turn.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rlm_rs.control.executions.leases import Lease, busy, lost, not_running
from rlm_rs.control.executions.records import as_execution
from rlm_rs.domain import ExecutionRecord, ExecutionStatus
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.storage.metadata import MetadataStore

RUNNING = (ExecutionStatus.RUNNING,)
__all__ = ["RUNNING", "StepClaim", "busy", "lost", "not_running", "take_loop_lease"]

CLAIM_SECONDS = 30.0  # a crashed holder blocks its execution at most this long


def _current(metadata: MetadataStore, execution: ExecutionRecord) -> ExecutionRecord:
    """The record as it is now (a consistent read of the base table)."""
    found = metadata.read_execution(execution["session_id"], execution["execution_id"])
    if found is None:
        details = {"execution_id": execution["execution_id"]}
        raise RlmError("EXECUTION_NOT_FOUND", "execution not found", details)
    return as_execution(found)


def take_loop_lease(
    metadata: MetadataStore, execution: ExecutionRecord, owner: str, seconds: float
) -> tuple[ExecutionRecord, Lease | None]:
    """An Answerer loop's lease on a RUNNING execution (the record it read, or
    a fresher one): (the leased record, the lease), or (the current record,
    None) when it ended or another owner holds a live lease."""
    for _ in range(3):  # a write between the read and the take (a heartbeat, a child) changes the version
        lease = Lease.take(metadata, execution, owner, seconds)
        if lease is not None and lease.record is not None:
            return lease.record, lease
        execution = _current(metadata, execution)
        holder, until = execution.get("lease_owner"), float(execution.get("lease_until") or 0)
        if execution["status"] != ExecutionStatus.RUNNING:
            return execution, None
        if holder and holder != owner and until > time.time():
            return execution, None
    return execution, None


class StepClaim:
    """A held claim on one execution (a runtime step or tool resolution); `release()` in a finally."""

    def __init__(self, metadata: MetadataStore, lease: Lease, execution: ExecutionRecord) -> None:
        self.metadata = metadata
        self.lease = lease
        self.execution = execution

    @classmethod
    def take(
        cls, metadata: MetadataStore, execution: ExecutionRecord, ttl: float = CLAIM_SECONDS
    ) -> StepClaim:
        if execution["status"] != ExecutionStatus.RUNNING:
            raise not_running(execution)
        lease = Lease.take(metadata, execution, f"step-{uuid.uuid4().hex}", ttl)
        if lease is None or lease.record is None:
            raise lost(_current(metadata, execution))
        return cls(metadata, lease, lease.record)

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the claim every ttl/3 while the body runs (a step, tool
        resolution, children, the commit): renewals are conditional on the
        claim's token only, so they never race the commit."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease.seconds / 3):
                with contextlib.suppress(ConflictError):
                    self.lease.renew()

        thread = threading.Thread(target=beat, name="step-claim", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        """Write the claim's queued events (events.py), then let it go."""
        with contextlib.suppress(RlmError):  # a lost claim's events are never written
            self.lease.flush_events()
        with contextlib.suppress(RlmError):  # else it expires by itself
            self.metadata.release_execution_lease(self.lease.fence)
