"""Live execution events: what WatchExecution and GET /v1/executions/{id}/events stream.

Each event is an execution_state item (PK `EXEC#<id>`, SK `EVENT#<event_id>`)
written as it happens, so any control plane can serve a watcher and a watcher
can resume from the last id it saw. Event ids are `<turn:06d>.<seq:04d>`,
ordered as strings; `seq` restarts each turn, so a turn replayed after a lease
takeover writes the same ids again (the put overwrites) instead of appending a
second copy. The `status` event closes the stream: its id is
`<next_turn:06d>.9999`, after every event of the turns before it.

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
from typing import Any, cast

from rlm_rs.canonical import canonical_json
from rlm_rs.control.executions.leases import held
from rlm_rs.control.executions.signals import Signals
from rlm_rs.control.executions.traces import redact
from rlm_rs.domain import EventRecord, EventType, ExecutionRecord
from rlm_rs.errors import ConflictError
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import now_iso

EVENT_TEXT_CHARS = 2_000
EVENT_DATA_CHARS = 32_000  # a whole event's data; past it only its size is kept
STATUS_SEQ = 9999
_MAX_TRACKED = 10_000


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

    def emit(self, execution: ExecutionRecord, turn: int, kind: EventType, data: dict[str, Any]) -> str:
        execution_id = execution["execution_id"]
        with self._lock:
            if kind == EventType.STATUS:
                seq = STATUS_SEQ
                self._seq.pop(execution_id, None)
            else:
                last_turn, seq = self._seq.get(execution_id, (turn, 0))
                seq = seq if last_turn == turn else 0
                self._seq[execution_id] = (turn, seq + 1)
                self._seq.move_to_end(execution_id)
                if len(self._seq) > _MAX_TRACKED:
                    self._seq.popitem(last=False)
        eid = event_id(turn, min(seq, STATUS_SEQ - 1) if kind != EventType.STATUS else seq)
        if (execution.get("options") or {}).get("redact_trace"):
            data = redact(data)  # events are a live copy of the trace
        data_json = canonical_json(data)
        if len(data_json) > EVENT_DATA_CHARS:
            data_json = canonical_json({"truncated": True, "chars": len(data_json)})
        item = {
                "event_id": eid,
                "execution_id": execution_id,
                "type": str(kind),
                "turn_index": turn,
                "at": now_iso(),
                "data_json": data_json,
                "ttl_epoch": execution.get("ttl_epoch"),
        }  # fmt: skip
        lease = held(execution_id)  # the holder's events are fenced by its lease
        try:
            self.storage.metadata.put_event(execution_id, eid, item, lease.fence if lease else None)
        except ConflictError:
            if lease is None:
                raise
            current = self.storage.metadata.read_execution(execution["session_id"], execution_id)
            raise lease.refused(cast(ExecutionRecord | None, current)) from None
        self.written.notify(execution_id)
        return eid

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
