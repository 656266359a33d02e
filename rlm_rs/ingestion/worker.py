"""The ingestion worker: registered documents -> parsed (and indexed) -> READY.

For every session in CREATING it takes each REGISTERED document (or one
stuck in PARSING/INDEXING whose lease expired) under a per-document lease, so
two workers never parse the same document, moves it REGISTERED -> PARSING ->
PARSED (-> INDEXING -> INDEXED when the session enables search) or FAILED
with `failure_reason` ("CODE: message"), retrying transient storage or
parser-service faults with backoff. With search, once no document of the
session is still being parsed, one worker builds the session's index artifact
over every parsed document (storage/search.py), uploads it, records it in the
session (conditional on the session's version: a racing builder retries) and
only then marks the documents INDEXED, so `search_ready` holds on every node.
Then it decides the session:

  STRICT: READY when every document is PARSED (INDEXED with search); FAILED
          as soon as one document FAILED.
  LAX:    READY when every document is PARSED/INDEXED or FAILED and at least
          one succeeded; FAILED when all failed.
Documents are parsed concurrently, at most RLM_INGEST_MAX_PARSES at once and
RLM_INGEST_MAX_PARSES_PER_TENANT for one tenant, in a fair order across
tenants and sessions (scheduling.py), and a session is decided as soon as its
last document is done: one tenant's big or slow document never holds up
another tenant's session. Re-running is idempotent: outputs are immutable and
identical for the same input and parser version, and every status change is
conditional.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.ingestion.indexing import SessionIndexer
from rlm_rs.ingestion.scheduling import FairScheduler, PendingDocument
from rlm_rs.ingestion.service import ParseRequest, ParseSource, handle_parse
from rlm_rs.observability import get_logger
from rlm_rs.secrets import parser_auth_token
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.keys import parsed_document_prefix
from rlm_rs.storage.metadata import document_key, now_iso

_DONE = ("PARSED", "INDEXED")
_PARSING = ("REGISTERED", "PARSING")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, RlmError):
        return exc.code in ("S3_READ_ERROR", "PARSER_ERROR")
    return isinstance(exc, httpx.TransportError | httpx.HTTPStatusError)


class IngestionWorker:
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        *,
        owner: str | None = None,
        lease_seconds: float = 300.0,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.owner = owner or f"ingest-{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.indexer = SessionIndexer(storage, settings.data_dir / "tmp")
        self.scheduler = FairScheduler(settings.ingest_max_parses, settings.ingest_max_parses_per_tenant)
        self.log = get_logger(component="ingestion", worker=self.owner)

    # --- loop --------------------------------------------------------------------------
    def run_once(self) -> int:
        """Process every pending document once (concurrently, fairly), decide
        every CREATING session; returns the documents processed."""
        return self._run(None, 0.0)

    def run_forever(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        self._run(stop, poll_seconds)

    def _run(self, stop: threading.Event | None, poll_seconds: float) -> int:
        once = stop is None
        processed = 0
        # A document tried once is not tried again before this time (never, in
        # run_once): a lease another worker holds must not spin this loop.
        not_before: dict[tuple[str, str], float] = {}
        running: dict[Future[int], PendingDocument] = {}
        with ThreadPoolExecutor(self.scheduler.slots, thread_name_prefix="ingest-parse") as pool:
            while stop is None or not stop.is_set():
                now = time.monotonic()
                try:
                    pending = [d for d in self._pending() if not_before.get(d.key, 0.0) <= now]
                    for doc in self.scheduler.take(pending):
                        not_before[doc.key] = math.inf if once else now + poll_seconds
                        running[pool.submit(self._work, doc)] = doc
                except Exception as exc:  # keep serving; the next pass retries
                    if once:
                        raise
                    self.log.error("ingest_pass_failed", error=type(exc).__name__)
                if not running:
                    if stop is None:
                        break
                    stop.wait(poll_seconds)
                    continue
                done, _ = wait(running, timeout=None if once else poll_seconds, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    processed += future.result()
                if not once:
                    not_before = {k: t for k, t in not_before.items() if t > now}
        return processed

    def _pending(self) -> list[PendingDocument]:
        """Documents to parse or index, of every CREATING session; a session
        with nothing left in flight is decided here."""
        pending: list[PendingDocument] = []
        for session in self.storage.metadata.sessions_with_status("CREATING"):
            docs = self.storage.metadata.list_documents(session["session_id"])
            if self._decide_session(session, docs):
                continue
            pending.extend(
                PendingDocument(
                    tenant_id=session["tenant_id"],
                    session_id=session["session_id"],
                    doc_id=doc["doc_id"],
                    doc_index=int(doc.get("doc_index") or 0),
                    session_created_at=str(session.get("created_at") or ""),
                )
                for doc in _takeable(session, docs)
            )
        return pending

    def _work(self, pending: PendingDocument) -> int:
        """One document in a pool thread, then its session's decision; never raises."""
        try:
            session = self.storage.metadata.find_session(pending.session_id)
            if session is None or session.get("status") != "CREATING":
                return 0  # deleted, or decided meanwhile
            doc = self.storage.metadata.get_document(pending.session_id, pending.doc_id)
            if doc is None or doc.get("ingest_status") not in _wanted(session):
                return 0
            processed = self._process(session, doc)
            self._decide_session(session)
            return processed
        except Exception as exc:  # the document stays in flight; its lease expires
            self.log.error("ingest_document_failed", session_id=pending.session_id,
                           doc_id=pending.doc_id, error=type(exc).__name__)  # fmt: skip
            return 0
        finally:
            self.scheduler.release(pending)

    # --- one document --------------------------------------------------------------------
    def _process(self, session: Mapping[str, Any], doc: Mapping[str, Any]) -> int:
        meta = self.storage.metadata
        session_id, doc_id = session["session_id"], doc["doc_id"]
        key = document_key(session_id, doc_id)
        leased = meta.acquire_lease(*key, owner=self.owner, ttl_seconds=self.lease_seconds)
        if leased is None or leased.get("ingest_status") not in _wanted(session):
            if leased is not None:
                meta.release_lease(*key, owner=self.owner)
            return 0
        try:
            parsed = True
            if leased["ingest_status"] in _PARSING:
                meta.update_document(session_id, doc_id, {"ingest_status": "PARSING"},
                                     from_statuses=_PARSING)  # fmt: skip
                parsed = self._parse(session, leased)
            if _search(session):  # a failed parse may be the last one the index waited for
                if parsed:
                    meta.update_document(session_id, doc_id, {"ingest_status": "INDEXING"},
                                         from_statuses=("PARSED", "INDEXING"))  # fmt: skip
                self.indexer.index(session)
            return 1
        finally:
            meta.release_lease(*key, owner=self.owner)

    def _parse(self, session: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
        tenant, session_id, doc_id = session["tenant_id"], session["session_id"], doc["doc_id"]
        request = ParseRequest(
            request_id=f"ingest-{doc_id}-{uuid.uuid4().hex[:8]}",
            source=ParseSource(
                s3_uri=doc["raw_s3_uri"], s3_version_id=doc.get("raw_s3_version_id"),
                s3_etag=doc.get("raw_s3_etag"), mime_type=doc.get("mime_type") or "",
                source_name=doc.get("source_name") or "",
            ),
            output={"s3_prefix": parsed_document_prefix(tenant, session_id, doc_id)},
            doc_id=doc_id,
        )  # fmt: skip
        try:
            response = self._call_parser(request)
        except RlmError as exc:
            response = {"status": "failed", "error": {"code": exc.code, "message": exc.message}}
        except httpx.HTTPError as exc:
            error = {"code": "PARSER_ERROR", "message": type(exc).__name__}
            response = {"status": "failed", "error": error}
        if response["status"] != "success":
            error = response["error"]
            reason = f"{error['code']}: {error['message']}"
            self.storage.metadata.update_document(
                session_id,
                doc_id,
                {"ingest_status": "FAILED", "failure_reason": reason},
                from_statuses=("PARSING",),
            )
            self.log.info("document_failed", session_id=session_id, doc_id=doc_id,
                          error_code=error["code"])  # fmt: skip
            return False
        outputs, stats = response["outputs"], response["stats"]
        self.storage.metadata.update_document(
            session_id, doc_id,
            {
                "ingest_status": "PARSED", "text_s3_uri": outputs["text_s3_uri"],
                "meta_s3_uri": outputs["meta_s3_uri"], "offsets_s3_uri": outputs["offsets_s3_uri"],
                "char_length": stats["char_length"], "byte_length": stats["byte_length"],
                "page_count": stats["page_count"], "parser_version": response["parser_version"],
                "text_checksum": response["text_checksum"], "parsed_at": now_iso(),
                "failure_reason": None,
            },
            from_statuses=("PARSING",),
        )  # fmt: skip
        return True

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.2, max=5),
        reraise=True,
    )
    def _call_parser(self, request: ParseRequest) -> dict[str, Any]:
        if self.settings.parser_service_url:
            url = self.settings.parser_service_url.rstrip("/") + "/parse"
            token = parser_auth_token(self.settings)  # PARSER_SERVICE_AUTH_SECRET_ARN, read once
            headers = {"authorization": f"Bearer {token.get_secret_value()}"} if token else {}
            response = httpx.post(
                url, json=request.model_dump(), headers=headers, timeout=request.options.timeout_seconds + 30
            )
            if response.status_code >= 500:
                response.raise_for_status()
            body: dict[str, Any] = response.json()
            if "error" in body and "status" not in body:  # the service's own error envelope
                error = body["error"]
                raise RlmError(
                    error.get("code", "PARSER_ERROR")
                    if error.get("code") in ("S3_READ_ERROR", "PARSER_ERROR", "VALIDATION_ERROR")
                    else "PARSER_ERROR",
                    error.get("message", "parser service error"),
                )
            return body
        return handle_parse(self.storage.blobs, request)

    # --- the session -------------------------------------------------------------------------
    def _decide_session(
        self, session: Mapping[str, Any], docs: Sequence[Mapping[str, Any]] | None = None
    ) -> bool:
        """Move a CREATING session to READY or FAILED when its documents say so;
        True when it is decided (by this call or another worker)."""
        if docs is None:
            docs = self.storage.metadata.list_documents(session["session_id"])
        options = session.get("options") or {}
        mode = (options.get("readiness_mode") or "STRICT").upper()
        statuses = [d.get("ingest_status") for d in docs]
        done = ("INDEXED",) if _search(session) else _DONE
        failed = statuses.count("FAILED")
        succeeded = sum(1 for s in statuses if s in done)
        pending = len(statuses) - failed - succeeded
        decision: str | None = None
        if mode == "STRICT" and failed:
            decision = "FAILED"
        elif pending == 0:
            decision = "READY" if succeeded and (mode == "LAX" or not failed) else "FAILED"
        if decision is None:
            return False
        total_chars = sum(int(d.get("char_length") or 0) for d in docs)
        try:
            self.storage.metadata.update_session(
                session["tenant_id"], session["session_id"],
                {"status": decision, "total_chars": total_chars, "ready_at": now_iso()},
                from_statuses=("CREATING",),
            )  # fmt: skip
        except ConflictError:  # another worker decided first
            return True
        self.log.info("session_decided", session_id=session["session_id"], status=decision)
        return True


def _search(session: Mapping[str, Any]) -> bool:
    return bool((session.get("options") or {}).get("enable_search"))


def _wanted(session: Mapping[str, Any]) -> tuple[str, ...]:
    """The document statuses this worker takes up for `session` (with search:
    also a parsed document waiting for the index, left by a builder that died)."""
    return (*_PARSING, "PARSED", "INDEXING") if _search(session) else _PARSING


def _takeable(session: Mapping[str, Any], docs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The documents of `session` to schedule: every one still to parse; with
    search and none left to parse, one of those waiting for the index (the one
    whose builder holds its lease, if any), so a session is built once at a time."""
    parsing = [d for d in docs if d.get("ingest_status") in _PARSING]
    if parsing or not _search(session):
        return parsing
    waiting = [d for d in docs if d.get("ingest_status") in ("PARSED", "INDEXING")]
    now = time.time()
    building = [d for d in waiting if float(d.get("lease_until") or 0) > now]
    return (building or waiting)[:1]
