"""Live execution events: what WatchExecution and GET /v1/executions/{id}/events stream.

Each event is an execution_state item (PK `EXEC#<id>`, SK `EVENT#<event_id>`)
written as it happens, so any control plane can serve a watcher and a watcher
can resume from the last id it saw. Event ids are `<turn:06d>.<seq:04d>`,
ordered as strings; `seq` restarts each turn, so a turn replayed after a lease
takeover writes the same ids again (the put overwrites) instead of appending a
second copy. The `status` event closes the stream: its id is
`<next_turn:06d>.9999`, after every event of the turns before it.

An event emitted by a lease holder waits in the lease's outbox (leases.py)
and is written, fenced, with the turn's commit (one transaction with the
step record and state), with the status event (at once), or by this log's
flusher at most EVENT_FLUSH_SECONDS after it was emitted (a long root call
or step does not hold its events back longer): watchers see an event within
that delay, and a stale holder's events are never written.

Types (data in parentheses): turn_started (budgets left), root_reply (model,
chars, text clipped, tokens), step_result (success, stdout clipped, error,
span count, final), tool_requests (keys per kind), tool_results (status per
key), child_started / child_finished (key, child execution id, depth,
status), compaction (turns summarised, chars before and after), status
(status, answer clipped, error, budgets_consumed).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, cast

from rlm_rs.canonical import canonical_json
from rlm_rs.control.executions.leases import Lease, held
from rlm_rs.control.executions.signals import Signals
from rlm_rs.control.executions.traces import redact
from rlm_rs.domain import EventRecord, EventType, ExecutionRecord
from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.observability import get_logger
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import now_iso

EVENT_TEXT_CHARS = 2_000
EVENT_DATA_CHARS = 32_000  # a whole event's data; past it only its size is kept
STATUS_SEQ = 9999
_MAX_TRACKED = 10_000
EVENT_FLUSH_SECONDS = 0.5  # the longest an emitted event waits for a write that carries it
log = get_logger(component="engine")


def clip(text: str, limit: int = EVENT_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def event_id(turn: int, seq: int) -> str:
    return f"{turn:06d}.{seq:04d}"


class EventLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.written = Signals()  # WatchExecution's watchers
        self._lock = threading.Lock()
        # execution_id -> (turn, next seq); LRU-bounded: runtime executions that
        # are never finished must not make a long-running process grow
        self._seq: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._flusher = _Flusher(self)

    def _event_id(self, execution_id: str, turn: int, kind: EventType) -> str:
        if kind == EventType.STATUS:
            self._seq.pop(execution_id, None)
            return event_id(turn, STATUS_SEQ)
        last_turn, seq = self._seq.get(execution_id, (turn, 0))
        seq = seq if last_turn == turn else 0
        self._seq[execution_id] = (turn, seq + 1)
        self._seq.move_to_end(execution_id)
        if len(self._seq) > _MAX_TRACKED:
            self._seq.popitem(last=False)
        return event_id(turn, min(seq, STATUS_SEQ - 1))

    def emit(
        self,
        execution: ExecutionRecord,
        turn: int,
        kind: EventType,
        data: dict[str, Any],
        *,
        flush: bool = True,
    ) -> str:
        """Queue the event in the holder's outbox (written with the turn's
        commit, or by the flusher) or, with no lease here, write it. The status
        event is written at once, unless `flush` is False: then the caller
        writes the outbox with the final status (records.end)."""
        execution_id = execution["execution_id"]
        if (execution.get("options") or {}).get("redact_trace"):
            data = redact(data)  # events are a live copy of the trace
        data_json = canonical_json(data)
        if len(data_json) > EVENT_DATA_CHARS:
            data_json = canonical_json({"truncated": True, "chars": len(data_json)})
        lease = held(execution_id)  # the holder's events are fenced by its lease
        with self._lock:  # ids and the outbox in one order
            eid = self._event_id(execution_id, turn, kind)
            item = {
                "event_id": eid, "execution_id": execution_id, "type": str(kind), "turn_index": turn,
                "at": now_iso(), "data_json": data_json, "ttl_epoch": execution.get("ttl_epoch"),
            }  # fmt: skip
            first = lease.outbox.add(item) if lease is not None else False
        if lease is None:
            self.storage.metadata.put_event(execution_id, eid, item)
            self.written.notify(execution_id)
            return eid
        lease.outbox.written = lambda: self.written.notify(execution_id)
        if kind == EventType.STATUS:
            if flush:  # else its caller writes it now, with the final status
                self.flush(lease, execution["session_id"])
        elif first:
            self._flusher.due(lease, execution["session_id"])
        return eid

    def flush(self, lease: Lease, session_id: str) -> None:
        """Write the lease's queued events now; a refused write raises why
        (lease_lost, not_running, busy: leases.py)."""
        try:
            lease.flush_events()
        except ConflictError:
            current = self.storage.metadata.read_execution(session_id, lease.execution_id)
            raise lease.refused(cast(ExecutionRecord | None, current)) from None

    def after(self, execution_id: str, after_event_id: str = "") -> list[EventRecord]:
        """Events with ids past `after_event_id`, in order."""
        items = self.storage.metadata.list_events(execution_id)
        events = [
            EventRecord(
                event_id=item["event_id"],
                execution_id=item["execution_id"],
                type=item["type"],
                turn_index=item["turn_index"],
                at=item["at"],
                data_json=item["data_json"],
            )
            for item in items
            if item["event_id"] > after_event_id
        ]
        return sorted(events, key=lambda e: e["event_id"])


class _Flusher:
    """One thread writing each lease's queued events EVENT_FLUSH_SECONDS
    after the first of them was emitted, unless a commit carried them first.
    A lease found lost drops its events: they are never written."""

    def __init__(self, log_: EventLog) -> None:
        self.log = log_
        self._due: dict[int, tuple[float, Lease, str]] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def due(self, lease: Lease, session_id: str) -> None:
        with self._wake:
            self._due.setdefault(id(lease), (time.monotonic() + EVENT_FLUSH_SECONDS, lease, session_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-flusher", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _take_due(self) -> list[tuple[float, Lease, str]]:
        with self._wake:
            while True:
                now = time.monotonic()
                ready = [entry for entry in self._due.values() if entry[0] <= now]
                if ready:
                    for _, lease, _ in ready:
                        self._due.pop(id(lease), None)
                    return ready
                self._wake.wait(min((e[0] for e in self._due.values()), default=now + 60) - now)

    def _run(self) -> None:
        while True:
            for _, lease, session_id in self._take_due():
                if lease.lost.is_set():
                    lease.outbox.take()
                    continue
                try:
                    self.log.flush(lease, session_id)
                except RlmError:
                    if lease.lost.is_set():
                        lease.outbox.take()
                except Exception:  # storage unreachable: the next write or flush carries them
                    log.warning("event_flush_failed", execution_id=lease.execution_id, exc_info=True)
                    self.due(lease, session_id)
