"""Session lifecycle: deleting and expiring sessions, and removing their data.

A deleted session (DELETING) or an expired one (past `ttl_epoch`: EXPIRED) is
stopped first, then purged:
  1. stop: every RUNNING execution of it (children included) is cancelled, so
     no loop starts another turn; the servicers check the session on every
     call, so each read answers SESSION_NOT_FOUND / SESSION_EXPIRED at once;
  2. purge: its parsed text, search index artifacts, traces, contexts,
     offloaded state and the sub-call cache entries its executions wrote (blob
     store, both back ends: `keys.session_prefixes`); its step, state and
     event records; the content of its execution records; this node's
     document cache of it (parsed text and search artifacts).
A turn in flight when the session went may still write a state object or a
trace, so the sweeper purges again until `settle_seconds` after the first
purge, then takes the session out of the status index (PURGED). The records
left (session, documents, executions: ids and statuses) answer "deleted" or
"expired" until their `ttl_epoch`, one TOMBSTONE_SECONDS after the purge;
DynamoDB's TTL then removes them on AWS, the sweeper on embedded storage.
Every node's sweep also drops its own document cache of sessions that are no
longer live (every NODE_SWEEP_EVERY-th pass: it reads each cached session's
record). Raw uploads are the tenant's, not the session's (content addressed:
one upload may serve several sessions): they are never removed here
(docs/scale-out.md, "Blob lifecycle"). Nothing outside a session's own
prefixes is ever deleted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlm_rs.control.corpus import DocumentCache
from rlm_rs.domain import ExecutionStatus, SessionStatus
from rlm_rs.errors import NotFound, RlmError
from rlm_rs.observability import get_logger
from rlm_rs.storage import Storage, keys
from rlm_rs.storage.metadata import PURGED, now_iso

SETTLE_SECONDS = 300.0  # longer than a turn in flight can take to end (root call + step)
TOMBSTONE_SECONDS = 24 * 3600
# The node pass reads the record of every session in the local document
# cache: it runs on the first sweep and every NODE_SWEEP_EVERY-th.
NODE_SWEEP_EVERY = 10
LIVE_STATUSES = tuple(s for s in SessionStatus if s.live)
GONE_STATUSES = (SessionStatus.DELETING, SessionStatus.EXPIRED)
# Execution fields that carry the session's content (emptied by the purge).
_CONTENT_FIELDS: dict[str, Any] = {
    "question": "",
    "answer": None,
    "citations": [],
    "contexts": None,
    "trace_json": None,
}
log = get_logger(component="lifecycle")

Cancel = Callable[[str, str], Any]


@dataclass
class Purged:
    """What one purge removed."""

    blobs: int = 0
    records: int = 0
    cached_files: int = 0


class SessionReaper:
    def __init__(
        self,
        storage: Storage,
        *,
        cancel: Cancel,
        docs: DocumentCache,
        settle_seconds: float = SETTLE_SECONDS,
        tombstone_seconds: float = TOMBSTONE_SECONDS,
    ) -> None:
        self.storage = storage
        self.cancel = cancel
        self.docs = docs
        self.settle_seconds = settle_seconds
        self.tombstone_seconds = tombstone_seconds
        self._lock = threading.Lock()  # one sweep at a time per process
        self._passes = 0

    # --- deleting ------------------------------------------------------------------
    def delete(self, tenant_id: str, session_id: str) -> None:
        """DeleteSession: mark DELETING (another tenant's session is not found),
        stop its executions, purge its data now. A purge that fails here is
        retried by the sweeper (the session stays DELETING until then)."""
        meta = self.storage.metadata
        session: Mapping[str, Any] = meta.get_session(tenant_id, session_id)
        if session["status"] != SessionStatus.DELETING:
            session = meta.update_session(
                tenant_id,
                session_id,
                {
                    "status": SessionStatus.DELETING,
                    "deleted_at": now_iso(),
                    "ttl_epoch": int(time.time() + self.tombstone_seconds),
                },
            )
        self.stop(session)
        try:
            self._settle(session, time.time())
        except Exception as exc:  # storage trouble: the sweep finishes the job
            log.error("session_purge_failed", session_id=session_id, error=type(exc).__name__)

    def stop(self, session: Mapping[str, Any]) -> int:
        """Cancel the session's RUNNING executions; returns how many."""
        stopped = 0
        for execution in self.storage.metadata.list_executions(session["session_id"]):
            if execution.get("status") == ExecutionStatus.RUNNING:
                with contextlib.suppress(RlmError):
                    self.cancel(session["tenant_id"], execution["execution_id"])
                    stopped += 1
        return stopped

    def purge(self, session: Mapping[str, Any]) -> Purged:
        """Remove the session's data (idempotent)."""
        meta, blobs = self.storage.metadata, self.storage.blobs
        tenant_id, session_id = session["tenant_id"], session["session_id"]
        executions = meta.list_executions(session_id)
        done = Purged()
        for prefix in keys.session_prefixes(tenant_id, session_id):
            done.blobs += blobs.delete_prefix(prefix)
        for execution in executions:
            execution_id = execution["execution_id"]
            done.blobs += blobs.delete_prefix(keys.state_prefix(tenant_id, execution_id))
            done.records += meta.delete_execution_data(execution_id)
            if any(execution.get(k) != v for k, v in _CONTENT_FIELDS.items()):
                with contextlib.suppress(RlmError):  # gone meanwhile (TTL)
                    meta.update_execution(session_id, execution_id, dict(_CONTENT_FIELDS))
        markers = keys.session_cache_prefix(tenant_id, session_id)
        for marker in list(blobs.list(markers)):
            blobs.delete(keys.llm_cache_key(tenant_id, marker[len(markers) :]))
            done.blobs += 1
        blobs.delete_prefix(markers)
        done.cached_files = self.docs.drop_session(
            tenant_id, session_id, [e["execution_id"] for e in executions]
        )
        return done

    def _settle(self, session: Mapping[str, Any], now: float) -> None:
        """Purge; after the settle window, take the session out of the sweeps."""
        tenant_id, session_id = session["tenant_id"], session["session_id"]
        purged = self.purge(session)
        log.info(
            "session_purged",
            session_id=session_id,
            status=session["status"],
            blobs=purged.blobs,
            records=purged.records,
            cached_files=purged.cached_files,
        )
        first = session.get("purged_epoch")
        if first is None:
            self.storage.metadata.update_session(
                tenant_id, session_id, {"purged_at": now_iso(now), "purged_epoch": now}
            )
        elif now - float(first) >= self.settle_seconds:
            self.storage.metadata.mark_session_purged(
                tenant_id, session_id, {"ttl_epoch": int(now + self.tombstone_seconds)}
            )

    # --- the sweeper ------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """One pass: expire sessions past their TTL, purge deleted and expired
        ones, remove purged records past their TTL (embedded), and drop this
        node's cached files of sessions no longer live. Returns
        the number of sessions purged."""
        with self._lock:
            now = time.time() if now is None else now
            meta = self.storage.metadata
            handled = 0
            for status in LIVE_STATUSES:
                for session in meta.sessions_with_status(status):
                    if float(session.get("ttl_epoch") or 0) <= now:
                        with contextlib.suppress(RlmError):  # changed meanwhile: the next pass sees it
                            meta.update_session(
                                session["tenant_id"],
                                session["session_id"],
                                {"status": SessionStatus.EXPIRED, "expired_at": now_iso(now)},
                                from_statuses=LIVE_STATUSES,
                            )
            for status in GONE_STATUSES:
                for session in meta.sessions_with_status(status):
                    try:
                        self.stop(session)
                        self._settle(session, now)
                        handled += 1
                    except Exception as exc:  # one bad session must not stop the sweep
                        log.error(
                            "session_purge_failed", session_id=session["session_id"], error=type(exc).__name__
                        )
            for session in meta.sessions_with_status(PURGED):
                if float(session.get("ttl_epoch") or 0) <= now:
                    with contextlib.suppress(RlmError):
                        meta.delete_session_records(session["tenant_id"], session["session_id"])
            if self._passes % NODE_SWEEP_EVERY == 0:
                self.sweep_node(now)
            self._passes += 1
            return handled

    def sweep_node(self, now: float) -> int:
        """Drop this node's document cache (parsed text, search artifacts) of
        every session that is not live (deleted, expired, or gone altogether)."""
        meta = self.storage.metadata
        dropped = 0
        for tenant_id, session_id in self.docs.cached_sessions():
            try:
                session: Mapping[str, Any] | None = meta.get_session(tenant_id, session_id)
            except NotFound:
                session = None
            if not _live(session, now):
                self.docs.drop_session(tenant_id, session_id)
                dropped += 1
        return dropped

    def run(self, stop: threading.Event, interval_seconds: float) -> None:
        """Sweep every `interval_seconds` until `stop` is set."""
        while not stop.wait(interval_seconds):
            try:
                self.sweep()
            except Exception as exc:  # a failed sweep retries next period
                log.error("session_sweep_failed", error=type(exc).__name__)


def _live(session: Mapping[str, Any] | None, now: float) -> bool:
    return (
        session is not None
        and session.get("status") in LIVE_STATUSES
        and float(session.get("ttl_epoch") or 0) > now
    )
