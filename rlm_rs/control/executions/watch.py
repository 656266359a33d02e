"""Waiting for an execution and watching its events.

`wait` returns as soon as the execution has ended or the timeout passed;
`watch` yields the events past a given id as they are written (events.py)
and ends with the `status` event. Both sleep until this process signals a
change to *that* execution (signals.py: a status change for waiters, a new
event for watchers), and read storage again only then, or every
POLL_SECONDS for what another control plane wrote. Neither changes a record
(but a missing status event of an execution that ended before events
existed is written once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.finish import status_event
from rlm_rs.control.executions.signals import POLL_SECONDS
from rlm_rs.domain import TERMINAL_STATUSES, EventRecord, EventType, ExecutionRecord
from rlm_rs.limits import MAX_WAIT_TIMEOUT_SECONDS


def wait(ctx: Context, tenant_id: str, execution_id: str, timeout_seconds: float) -> ExecutionRecord:
    """The record once it has ended, or when `timeout_seconds` passed (as read
    at most POLL_SECONDS before, when no change was signalled since)."""
    deadline = time.monotonic() + max(0.0, min(timeout_seconds, MAX_WAIT_TIMEOUT_SECONDS))
    signals = ctx.records.status_changed
    seen = signals.seq(execution_id)  # before the read: a change after it wakes the wait below
    execution = ctx.records.get(tenant_id, execution_id)
    while execution["status"] not in TERMINAL_STATUSES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return execution
        signalled = signals.wait(execution_id, seen, min(remaining, POLL_SECONDS))
        if not signalled and time.monotonic() >= deadline:
            return execution
        seen = signals.seq(execution_id)
        execution = ctx.records.get(tenant_id, execution_id)
    return execution


def watch(
    ctx: Context,
    tenant_id: str,
    execution_id: str,
    after_event_id: str = "",
    *,
    poll_seconds: float = 0.25,
    stop: Callable[[], bool] | None = None,
) -> Iterator[EventRecord]:
    """Events past `after_event_id` as they are written, ending with the
    `status` event (at once when the caller already has it). `stop()` true
    (the caller went away) ends the watch; it is asked every `poll_seconds`."""
    ctx.records.get(tenant_id, execution_id)  # NOT_FOUND for a foreign or unknown id
    cursor = _Cursor(ctx, tenant_id, execution_id, after_event_id)
    while stop is None or not stop():
        seen = ctx.events.written.seq(execution_id)
        if cursor.due(seen):
            fresh = ctx.events.after(execution_id, cursor.last)
            yield from fresh
            if cursor.advance(fresh):
                return
        ctx.events.written.wait(execution_id, seen, poll_seconds)


class _Cursor:
    """Where a watch is, and when it reads storage next."""

    def __init__(self, ctx: Context, tenant_id: str, execution_id: str, last: str) -> None:
        self.ctx, self.tenant_id, self.execution_id, self.last = ctx, tenant_id, execution_id, last
        self.read_seq: int | None = None  # the signal count at the last read (None: read now)
        self.read_at = 0.0
        self.terminal_seen = False

    def due(self, seq: int) -> bool:
        """Read now: an event was signalled, or POLL_SECONDS passed since the last read."""
        if seq == self.read_seq and time.monotonic() - self.read_at < POLL_SECONDS:
            return False
        self.read_seq, self.read_at = seq, time.monotonic()
        return True

    def advance(self, fresh: list[EventRecord]) -> bool:
        """After yielding `fresh`: True when the stream is complete."""
        if fresh:
            self.last = fresh[-1]["event_id"]
            self.read_seq = None  # more may have come meanwhile: read again at once
            return any(e["type"] == EventType.STATUS for e in fresh)
        execution = self.ctx.records.get(self.tenant_id, self.execution_id)
        if execution["status"] not in TERMINAL_STATUSES:
            return False
        if self.terminal_seen and _closed(self.ctx, execution, self.last):
            return True
        self.terminal_seen = True  # its status event may be a moment behind the record
        self.read_seq = None
        return False


def _closed(ctx: Context, execution: ExecutionRecord, last: str) -> bool:
    """An ended execution's stream is complete: write the status event if it
    ended before events existed; True when the caller is already past it."""
    execution_id = execution["execution_id"]
    if not any(e["type"] == EventType.STATUS for e in ctx.events.after(execution_id)):
        status_event(ctx, execution)
    return not ctx.events.after(execution_id, last)
