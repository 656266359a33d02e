"""Execution records: creating one, reading it, its children and its step
records, changing it, and its persisted state (inline or offloaded,
rlm_rs/storage/state.py). A status change wakes this process's waiters for
that execution (`status_changed`, signals.py). Nothing here decides what a
turn does; the callers pass the conditions that keep two writers apart
(claims.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from rlm_rs.control.budgets import CeilingSource, merge_budgets
from rlm_rs.control.executions.leases import COMMIT_EVENTS_MAX, Lease, held
from rlm_rs.control.executions.signals import Signals
from rlm_rs.control.quotas import Quotas
from rlm_rs.domain import (
    EventType,
    ExecutionMode,
    ExecutionRecord,
    ExecutionStatus,
    OutputMode,
    SessionRecord,
    SessionStatus,
    StepRecord,
    consumed_zero,
)
from rlm_rs.errors import ConflictError, NotFound, RlmError
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import new_id, now_iso
from rlm_rs.storage.state import load_state, read_state_record, save_state, state_record

State = dict[str, Any]  # an execution's state: work, and the reserved `_` keys


def initial_state() -> State:
    return {"work": {}, "_tool_results": {"llm": {}, "search": {}}, "_tool_status": {}}


def elapsed_ms(execution: ExecutionRecord) -> int:
    return int((time.time() - float(execution.get("started_epoch") or time.time())) * 1000)


def as_execution(item: Mapping[str, Any]) -> ExecutionRecord:
    """A stored execution item, read as an ExecutionRecord (no copy)."""
    return cast(ExecutionRecord, item)


class Records:
    def __init__(
        self, storage: Storage, settings: Settings, quotas: Quotas, *, owner: str, lease_seconds: float
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.quotas = quotas
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.status_changed = Signals()  # WaitExecution's waiters
        self.ceilings = CeilingSource(settings.sandbox_policy_json)  # the pool's report: engine.py, server.py
        merge_budgets(settings.default_budgets_json, ceilings=self.ceilings.configured)  # refused at start

    def create(
        self,
        tenant_id: str,
        session: SessionRecord,
        *,
        mode: ExecutionMode,
        question: str,
        models: dict[str, str],
        budgets: Mapping[str, Any],
        options: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> ExecutionRecord:
        """A new RUNNING execution record, admitted by the tenant's quota;
        `extra` sets the tree fields (execution_id, parent_execution_id,
        depth, corpus, followup_of)."""
        if session["status"] != SessionStatus.READY:
            raise RlmError(
                "SESSION_NOT_READY", f"session is {session['status']}", {"session_id": session["session_id"]}
            )
        defaults = session.get("defaults") or {}
        output_mode = (options.get("output_mode") or OutputMode.ANSWER).upper()
        if output_mode not in tuple(OutputMode):
            raise RlmError("VALIDATION_ERROR", "options.output_mode must be ANSWER or CONTEXTS")
        record: dict[str, Any] = {
            "tenant_id": tenant_id, "session_id": session["session_id"], "execution_id": new_id("exec"),
            "status": ExecutionStatus.RUNNING, "mode": mode, "output_mode": output_mode,
            "question": question, "answer": None, "citations": [],
            "models": self._models(models, defaults.get("models_default") or {}),
            "options": options,
            "budgets_requested": merge_budgets(
                self.settings.default_budgets_json, defaults.get("budgets_default") or {}, budgets,
                ceilings=self.ceilings.current(),
            ),
            "budgets_consumed": consumed_zero(), "next_turn": 0,
            "started_at": now_iso(), "started_epoch": time.time(), "completed_at": None,
            "duration_ms": None, "trace_s3_uri": None, "error": None, "ttl_epoch": session.get("ttl_epoch"),
            "parent_execution_id": None, "depth": 0, "children": [], "followup_of": None,
            **(extra or {}),
        }  # fmt: skip
        if mode == ExecutionMode.ANSWERER:  # leased from birth: the takeover sweep leaves a queued one alone
            # (token 1: the put's version; the loop's own take raises it)
            record.update(lease_owner=self.owner, lease_until=time.time() + self.lease_seconds, lease_token=1)
        return as_execution(self.quotas.create_execution(record, self.storage.metadata.put_execution))

    def _models(self, requested: dict[str, str], session_models: dict[str, str]) -> dict[str, str]:
        """Each model: the request's, else the session's default, else the server's."""
        return {
            "root_model": requested.get("root_model")
            or session_models.get("root_model")
            or self.settings.default_root_model,
            "sub_model": requested.get("sub_model")
            or session_models.get("sub_model")
            or self.settings.default_sub_model,
        }

    def get(self, tenant_id: str, execution_id: str) -> ExecutionRecord:
        """By id alone (a caller's request): the id index, tenant-checked."""
        return as_execution(self.storage.metadata.get_execution(tenant_id, execution_id))

    def reload(self, execution: ExecutionRecord) -> ExecutionRecord:
        """The record as it is now, by a strongly consistent read of the base
        table (what a loop depends on: never the id index, which may lag)."""
        return self.read(execution["session_id"], execution["execution_id"])

    def read(self, session_id: str, execution_id: str) -> ExecutionRecord:
        found = self.storage.metadata.read_execution(session_id, execution_id)
        if found is None:
            raise RlmError("EXECUTION_NOT_FOUND", "execution not found", {"execution_id": execution_id})
        return as_execution(found)

    def _current(self, execution: ExecutionRecord) -> ExecutionRecord | None:
        found = self.storage.metadata.read_execution(execution["session_id"], execution["execution_id"])
        return as_execution(found) if found is not None else None

    def update(
        self, execution: ExecutionRecord, changes: Mapping[str, Any], **condition: Any
    ) -> ExecutionRecord:
        """`condition`: update_execution's. When this context holds the
        execution's lease (leases.py) the write is fenced by it instead: only
        its holder can make it (RUNNING too when `from_statuses` is given)."""
        lease = held(execution["execution_id"])
        if lease is None:
            updated = self.storage.metadata.update_execution(
                execution["session_id"], execution["execution_id"], dict(changes), **condition
            )
        else:
            try:
                updated = self.storage.metadata.fenced_update_execution(
                    lease.fence, dict(changes), running=bool(condition.get("from_statuses"))
                )
            except ConflictError:
                raise lease.refused(self._current(execution)) from None
        if "status" in changes:
            if changes["status"] != ExecutionStatus.RUNNING:
                self.quotas.release_execution(updated)
            self.status_changed.notify(execution["execution_id"])
        return as_execution(updated)

    def end(
        self, execution: ExecutionRecord, changes: Mapping[str, Any], queue_status: Callable[[], object]
    ) -> ExecutionRecord:
        """The execution leaves RUNNING under its held lease: `changes` (the
        final status) and the events waiting in the lease's outbox, with the
        status event `queue_status` puts there, in one fenced transaction, so
        whoever reads the final status also finds the event that closes the
        stream. `queue_status` runs under the outbox's write lock: no flush
        can store that event first. CONFLICT (lease_lost, not_running) with
        nothing written: the status event is dropped then (the execution
        ended some other way)."""
        lease = held(execution["execution_id"])
        if lease is None:
            raise RuntimeError("an execution is ended this way only under its lease")
        with lease.outbox.writing:
            queue_status()
            self._with_waiting_events(
                execution,
                lease,
                lambda events: self.storage.metadata.end_execution(lease.fence, dict(changes), events),
                requeue=lambda event: event["type"] != str(EventType.STATUS),
            )
        ended: dict[str, Any] = {**execution, **changes}
        ended.pop("version", None)
        self.quotas.release_execution(ended)
        self.status_changed.notify(execution["execution_id"])
        return as_execution(ended)

    def commit(
        self,
        execution: ExecutionRecord,
        turn: int,
        changes: Mapping[str, Any],
        states: list[tuple[str, str, dict[str, Any] | None]],
    ) -> ExecutionRecord:
        """One fenced transaction under the held lease: the execution's
        `changes` (which also extend the lease) and the execution_state
        records `states` ((sk, state_json, extra): the step record, the
        state) and the events waiting in the lease's outbox, only while the
        lease is held, the execution RUNNING and at `turn`. CONFLICT
        (not_running, busy or lease_lost) otherwise, with nothing written;
        returns the record as committed (without `version`)."""
        lease = held(execution["execution_id"])
        if lease is None:
            raise RuntimeError("a turn is committed only under its execution's lease")
        items = [
            state_record(
                self.storage.blobs, tenant_id=execution["tenant_id"], execution_id=execution["execution_id"],
                turn_index=turn, state_json=state_json, ttl_epoch=execution.get("ttl_epoch"), sk=sk,
                extra=extra, token=lease.fence.token,
            )
            for sk, state_json, extra in states
        ]  # fmt: skip
        at = time.time()
        fenced = {**changes, "lease_until": at + lease.seconds}
        # the events emitted during the turn go with it
        self._with_waiting_events(
            execution,
            lease,
            lambda events: self.storage.metadata.commit_turn(lease.fence, turn, fenced, items, events),
        )
        lease.extended(at)
        committed: dict[str, Any] = {**execution, **fenced}
        committed.pop("version", None)
        return as_execution(committed)

    def _with_waiting_events(
        self,
        execution: ExecutionRecord,
        lease: Lease,
        write: Callable[[list[dict[str, Any]]], None],
        requeue: Callable[[dict[str, Any]], bool] = lambda event: False,
    ) -> None:
        """`write` with the events waiting in the lease's outbox (past
        COMMIT_EVENTS_MAX the oldest are flushed first), under the outbox's
        write lock. A failed write keeps them queued; a CONFLICT (nothing
        written) raises why and keeps only those `requeue` accepts."""
        with lease.outbox.writing:
            events: list[dict[str, Any]] = []
            try:
                if len(lease.outbox) > COMMIT_EVENTS_MAX:
                    lease.flush_events()
                events = lease.outbox.take()
                write(events)
            except ConflictError:
                lease.outbox.put_back([event for event in events if requeue(event)])
                raise lease.refused(self._current(execution)) from None
            except BaseException:
                lease.outbox.put_back(events)
                raise
        if events:
            lease.outbox.written()

    def children(self, execution: ExecutionRecord) -> list[ExecutionRecord]:
        """The execution's child records, in the order they were started."""
        out = []
        for child_id in execution.get("children") or []:
            try:
                out.append(self.read(execution["session_id"], child_id))
            except NotFound:
                continue  # not created yet (the parent died between the two writes)
        return out

    def steps(self, execution: ExecutionRecord, *, with_state: bool = True) -> list[StepRecord]:
        """The step records in turn order; `with_state` False leaves an
        offloaded state unread (read_state_record reads one later)."""
        items = self.storage.metadata.list_steps(execution["execution_id"])
        items.sort(key=lambda item: int(item["turn_index"]))
        if with_state:
            for item in items:
                item["state_json"] = read_state_record(self.storage.blobs, item)
        return cast(list[StepRecord], items)

    def save_state(
        self,
        execution: ExecutionRecord,
        turn: int,
        state_json: str,
        *,
        sk: str = "STATE",
        extra: dict[str, Any] | None = None,
    ) -> None:
        save_state(
            self.storage.metadata,
            self.storage.blobs,
            tenant_id=execution["tenant_id"],
            execution_id=execution["execution_id"],
            turn_index=turn,
            state_json=state_json,
            ttl_epoch=execution.get("ttl_epoch"),
            sk=sk,
            extra=extra,
        )

    def load_state(self, execution: ExecutionRecord) -> State:
        return self.load_state_text(execution)[0]

    def load_state_text(self, execution: ExecutionRecord) -> tuple[State, str | None]:
        """The persisted state and its canonical text (None for a fresh execution)."""
        loaded = load_state(self.storage.metadata, self.storage.blobs, execution["execution_id"])
        if loaded is None:
            return initial_state(), None
        state: State = json.loads(loaded[0])
        return state, loaded[0]
