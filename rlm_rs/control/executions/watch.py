"""Waiting for an execution and watching its events.

`wait` returns as soon as the execution has ended or the timeout passed;
`watch` yields the events past a given id as they are written (events.py)
and ends with the `status` event. Events and records written by another
control plane are seen by polling storage. Neither ever changes a record
(but a missing status event of an execution that ended before events
existed is written once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from rlm_rs.control.executions.context import Context
from rlm_rs.control.executions.finish import status_event
from rlm_rs.domain import TERMINAL_STATUSES, EventRecord, EventType, ExecutionRecord
from rlm_rs.limits import MAX_WAIT_TIMEOUT_SECONDS


def wait(ctx: Context, tenant_id: str, execution_id: str, timeout_seconds: float) -> ExecutionRecord:
    deadline = time.monotonic() + max(0.0, min(timeout_seconds, MAX_WAIT_TIMEOUT_SECONDS))
    while True:
        execution = ctx.records.get(tenant_id, execution_id)
        remaining = deadline - time.monotonic()
        if execution["status"] in TERMINAL_STATUSES or remaining <= 0:
            return execution
        with ctx.records.changed:
            ctx.records.changed.wait(min(remaining, 0.1))


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
    `status` event (at once when the caller already has it). Events
    written by another control plane are seen by polling storage every
    `poll_seconds`; `stop()` true (the caller went away) ends the watch."""
    ctx.records.get(tenant_id, execution_id)  # NOT_FOUND for a foreign or unknown id
    last = after_event_id
    terminal_seen = False
    while stop is None or not stop():
        fresh = ctx.events.after(execution_id, last)
        for event in fresh:
            yield event
            last = event["event_id"]
            if event["type"] == EventType.STATUS:
                return
        if fresh:
            continue
        execution = ctx.records.get(tenant_id, execution_id)
        if execution["status"] in TERMINAL_STATUSES:
            if terminal_seen:
                if _closed(ctx, execution, last):
                    return
                continue
            terminal_seen = True  # its status event may be a moment behind the record
        with ctx.new_events:
            ctx.new_events.wait(poll_seconds)


def _closed(ctx: Context, execution: ExecutionRecord, last: str) -> bool:
    """An ended execution's stream is complete: write the status event if it
    ended before events existed; True when the caller is already past it."""
    execution_id = execution["execution_id"]
    if not any(e["type"] == EventType.STATUS for e in ctx.events.after(execution_id)):
        status_event(ctx, execution)
    return not ctx.events.after(execution_id, last)
