"""One writer per execution turn: the Answerer loop's lease, step claims and the commit fence.

An Answerer loop holds its execution by a lease (`lease_owner` = the control
plane's owner name) renewed every turn; the takeover sweep resumes an
execution whose lease ran out. A runtime step (and a ResolveTools call) first *claims* its execution: a
conditional write of `lease_owner` = a fresh token and `lease_until` that
holds only if the record is RUNNING, unchanged since it was read (`version`)
and not claimed by anyone else. The loser gets CONFLICT and runs nothing.
A heartbeat renews the claim while the step runs. Before a turn is committed
(both modes) the writer is *fenced*: the record is re-read and must still be
RUNNING, at the same turn and not held by another owner; the fence renews the
claim for the commit window, and the commit's own update is conditional on
the version the fence left. Nothing here may let two writers commit one turn.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rlm_rs.control.executions.records import as_execution
from rlm_rs.domain import ExecutionRecord, ExecutionStatus
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.storage.metadata import MetadataStore, execution_key

RUNNING = (ExecutionStatus.RUNNING,)

CLAIM_SECONDS = 30.0  # a crashed holder blocks its execution at most this long
COMMIT_WINDOW_SECONDS = 30.0  # the fence -> commit writes must finish inside it


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


def _keys(execution: ExecutionRecord) -> tuple[str, str, str]:
    return execution_key(execution["session_id"], execution["execution_id"])


def _held_by_other(execution: ExecutionRecord, owner: str, now: float) -> bool:
    holder = execution.get("lease_owner")
    return bool(holder) and holder != owner and float(execution.get("lease_until") or 0) > now


class TurnHolder(Protocol):
    """Whoever may commit an execution's turn: a loop's lease or a step's claim."""

    def fence(self, execution: ExecutionRecord, turn: int) -> ExecutionRecord: ...


def renew_lease(metadata: MetadataStore, execution: ExecutionRecord, owner: str, seconds: float) -> bool:
    """Take or renew `owner`'s lease on the execution; False when another owner holds a live one."""
    return metadata.acquire_lease(*_keys(execution), owner=owner, ttl_seconds=seconds) is not None


class LoopLease:
    """An Answerer loop's hold on its executions (this control plane's owner name)."""

    def __init__(self, metadata: MetadataStore, owner: str, seconds: float) -> None:
        self.metadata = metadata
        self.owner = owner
        self.seconds = seconds

    def renew(self, execution: ExecutionRecord) -> bool:
        return renew_lease(self.metadata, execution, self.owner, self.seconds)

    def take(self, execution: ExecutionRecord) -> tuple[ExecutionRecord, bool]:
        """Renew the lease in one conditional write, which holds while the
        execution is RUNNING and nobody else holds it: (the renewed record,
        True); else (the current record, False: ended, or another owner's)."""
        try:
            taken = self.metadata.update_execution(
                execution["session_id"],
                execution["execution_id"],
                {"lease_owner": self.owner, "lease_until": time.time() + self.seconds},
                from_statuses=RUNNING,
                lease_owner=self.owner,
            )
        except ConflictError:
            current = self.metadata.get_execution(execution["tenant_id"], execution["execution_id"])
            return as_execution(current), False
        return as_execution(taken), True

    def fence(self, execution: ExecutionRecord, turn: int) -> ExecutionRecord:
        return fence(self.metadata, execution, self.owner, turn, self.seconds)


def fence(
    metadata: MetadataStore, execution: ExecutionRecord, owner: str, turn: int, window: float
) -> ExecutionRecord:
    """The record, re-claimed by `owner` for `window` seconds, provided it is
    still RUNNING at `turn` and nobody else holds it; else CONFLICT. The
    caller commits with expected_version = the result's version.

    First without reading: a write conditional on the version the caller
    holds (unchanged since then, so still RUNNING at `turn` and this owner's);
    when it fails (a heartbeat, a child's write, a cancel or a takeover
    changed the record) the record is re-read and checked as it is now."""
    changes = {"lease_owner": owner, "lease_until": time.time() + window}
    unchanged = execution["status"] == ExecutionStatus.RUNNING and int(execution["next_turn"]) == turn
    if unchanged and execution.get("version") is not None:
        with contextlib.suppress(ConflictError):
            return as_execution(
                metadata.update_execution(
                    execution["session_id"],
                    execution["execution_id"],
                    changes,
                    expected_version=execution["version"],
                    from_statuses=RUNNING,
                    lease_owner=owner,
                )
            )
    current = as_execution(metadata.get_execution(execution["tenant_id"], execution["execution_id"]))
    now = time.time()
    if current["status"] != ExecutionStatus.RUNNING:
        raise not_running(current)
    if int(current.get("next_turn") or 0) != turn or _held_by_other(current, owner, now):
        raise busy(current)
    try:
        fenced = metadata.update_execution(
            current["session_id"],
            current["execution_id"],
            {"lease_owner": owner, "lease_until": now + window},
            expected_version=current.get("version"),
            from_statuses=RUNNING,
            lease_owner=owner,
        )
    except ConflictError:
        raise busy(current) from None
    return as_execution(fenced)


class StepClaim:
    """A held claim on one execution; `release()` in a finally."""

    def __init__(self, metadata: MetadataStore, execution: ExecutionRecord, token: str, ttl: float) -> None:
        self.metadata = metadata
        self.execution = execution
        self.token = token
        self.ttl = ttl

    @classmethod
    def take(
        cls, metadata: MetadataStore, execution: ExecutionRecord, ttl: float = CLAIM_SECONDS
    ) -> StepClaim:
        now = time.time()
        if execution["status"] != ExecutionStatus.RUNNING:
            raise not_running(execution)
        if _held_by_other(execution, "", now):
            raise busy(execution)
        token = f"step-{uuid.uuid4().hex}"
        try:
            claimed = metadata.update_execution(
                execution["session_id"],
                execution["execution_id"],
                {"lease_owner": token, "lease_until": now + ttl},
                expected_version=execution.get("version"),
                from_statuses=RUNNING,
                lease_owner=token,
            )
        except ConflictError:
            current = as_execution(metadata.get_execution(execution["tenant_id"], execution["execution_id"]))
            raise lost(current) from None
        return cls(metadata, as_execution(claimed), token, ttl)

    def fence(self, execution: ExecutionRecord, turn: int) -> ExecutionRecord:
        self.execution = fence(self.metadata, execution, self.token, turn, COMMIT_WINDOW_SECONDS)
        return self.execution

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the claim every ttl/3 while the body runs (a step, tool
        resolution, children); stopped before the fence, whose conditional
        write a renewal would otherwise race."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 3):
                self.metadata.acquire_lease(*_keys(self.execution), owner=self.token, ttl_seconds=self.ttl)

        thread = threading.Thread(target=beat, name="step-claim", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def release(self) -> None:
        with contextlib.suppress(RlmError):  # else it expires by itself
            self.metadata.release_lease(*_keys(self.execution), owner=self.token)
