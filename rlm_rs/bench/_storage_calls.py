"""Storage round-trips seen by a bench: a counting proxy over the metadata
store's ItemStore and the BlobStore, and their split per Answerer turn.

Every call that would cross the network on AWS (DynamoDB, S3) is logged with
the thread that made it; pure helpers (`uri`, `local_path`) are not. The
split reads only what the contract fixes (a turn ends with the update that
advances `next_turn`; an execution ends with its `status` event), so the same
bench measures any version of the engine. Never use this outside a bench.
"""

from __future__ import annotations

import collections
import statistics
import threading
from dataclasses import dataclass
from typing import Any

from rlm_rs.storage.keys import CACHE_PREFIX

ITEM_CALLS = ("put", "get", "query", "query_index", "update", "delete", "transact")
BLOB_CALLS = ("put", "get", "get_range", "head", "delete", "list", "delete_prefix")
TOOL_PREFIXES = (CACHE_PREFIX,)  # the sub-call cache: tool resolution, not the turn


@dataclass(frozen=True)
class Call:
    thread: str
    op: str  # "items.put execution_state:EVENT", "blobs.get state", ...
    commit: bool = False  # the update that advances next_turn (a turn's last write)
    status_event: bool = False  # the status event (an execution's last write)
    tool: bool = False


class CallLog:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.enabled = False

    def add(self, call: Call) -> None:
        if self.enabled:
            with self._lock:
                self.calls.append(call)

    def take(self) -> list[Call]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def _transact_op(writes: list[Any]) -> Call:
    """One transaction (one request): labelled by what it writes."""
    from rlm_rs.storage.interfaces import Put, Update

    commit = any(isinstance(w, Update) and "next_turn" in w.changes for w in writes)
    status = any(isinstance(w, Put) and w.item.get("type") == "status" for w in writes)
    parts = sorted(
        {f"{w.table}:{str(w.item.get('SK', '')).split('#')[0]}" for w in writes if isinstance(w, Put)}
    )
    label = "items.transact " + ("commit" if commit else "+".join(parts) or "check")
    return Call(threading.current_thread().name, label, commit=commit, status_event=status)


def _item_op(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
    if name == "transact":
        return _transact_op(list(args[0]) if args else list(kwargs.get("writes") or []))
    table = str(args[0]) if args else "?"
    label = f"items.{name} {table}"
    commit = status = False
    if table == "execution_state":
        key = ""
        if name == "put" and len(args) > 1:
            key = str(args[1].get("SK", ""))
            status = args[1].get("type") == "status"
        elif name in ("get", "query") and len(args) > 2:
            key = str(args[2])
        label += ":" + key.split("#")[0]
    if name == "update" and table == "executions":
        changes = args[3] if len(args) > 3 else kwargs.get("changes") or {}
        commit = "next_turn" in changes
    return Call(threading.current_thread().name, label, commit=commit, status_event=status)


def _blob_op(name: str, args: tuple[Any, ...]) -> Call:
    key = str(args[0]) if args else ""
    tool = key.startswith(TOOL_PREFIXES)
    return Call(threading.current_thread().name, f"blobs.{name} {key.split('/')[0]}", tool=tool)


class _Counted:
    def __init__(self, inner: Any, log: CallLog, names: tuple[str, ...], kind: str) -> None:
        self._inner, self._log, self._names, self._kind = inner, log, names, kind

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in self._names:
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            call = _item_op(name, args, kwargs) if self._kind == "items" else _blob_op(name, args)
            self._log.add(call)
            return value(*args, **kwargs)

        return counted


def count_storage_calls(storage: Any) -> CallLog:
    """Wrap `storage` (rlm_rs.storage.Storage) in place; returns the log."""
    log = CallLog()
    storage.metadata.items = _Counted(storage.metadata.items, log, ITEM_CALLS, "items")
    storage.blobs = _Counted(storage.blobs, log, BLOB_CALLS, "blobs")
    return log


def per_turn(calls: list[Call], executions: int) -> dict[str, Any]:
    """Split executions that ran one after another: the Answerer thread's calls
    up to each turn's commit are that turn's (the first turn also carries the
    loop's set-up), the rest up to the status event are finalisation; the
    RPC threads' calls (create, the synchronous wait) are counted per execution."""
    loop = [
        c for c in calls if c.thread.startswith(("answerer", "event-flusher"))
    ]  # events a turn waited to write
    rpc = [c for c in calls if c.thread.startswith("rpc")]
    tools = [c for c in calls if c.tool or c.thread.startswith("tools")]
    turns: list[list[Call]] = []
    first_turns: list[list[Call]] = []
    finishes: list[list[Call]] = []
    current: list[Call] = []
    index = 0
    for call in loop:
        current.append(call)
        if call.commit:
            (first_turns if index == 0 else turns).append(current)
            current, index = [], index + 1
        elif call.status_event:
            finishes.append(current)
            current, index = [], 0
    by_op: collections.Counter[str] = collections.Counter()
    for turn in turns:
        by_op.update(c.op for c in turn if not c.tool)
    counts = [sum(1 for c in turn if not c.tool) for turn in turns]
    return {
        "per_turn_median": statistics.median(counts) if counts else 0,
        "per_turn_mean_by_op": {op: round(n / len(turns), 2) for op, n in sorted(by_op.items())}
        if turns
        else {},
        "first_turn_with_setup_median": statistics.median(len(t) for t in first_turns) if first_turns else 0,
        "finalise_per_execution_median": statistics.median(len(f) for f in finishes) if finishes else 0,
        "tool_calls_per_execution": round(len(tools) / max(executions, 1), 2),
        "rpc_threads_per_execution": round(len(rpc) / max(executions, 1), 2),
    }
