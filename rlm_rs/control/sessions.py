"""SessionService: create (documents REGISTERED, TTL), get with readiness,
delete, list (newest first, rlm_rs/control/listings.py), upload (streamed,
rlm_rs/storage/uploads.py). Another tenant's session is indistinguishable from a missing
one. A document's raw_s3_uri must name one of the caller's own uploads
(rlm_rs/storage/uploads.py); anything else, another tenant's upload or an
internal object included, answers exactly like a missing object. A session
past expires_at answers SESSION_EXPIRED (and is marked EXPIRED); a deleted
one (DELETING) answers SESSION_NOT_FOUND. Deleting stops the session's
executions and removes its data (rlm_rs/control/lifecycle.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc

from rlm_rs import codec, wire_enums
from rlm_rs.control import listings
from rlm_rs.control._rpc import current_caller
from rlm_rs.control.budgets import CeilingSource, budgets_to_dict, merge_budgets
from rlm_rs.control.lifecycle import SessionReaper
from rlm_rs.control.quotas import Quotas
from rlm_rs.control.validation import check_models
from rlm_rs.domain import PARSED_STATUSES, IngestStatus, ReadinessMode, SessionRecord, SessionStatus
from rlm_rs.errors import RlmError
from rlm_rs.limits import (
    DEFAULT_TTL_MINUTES,
    MAX_DOCS_PER_SESSION,
    MAX_MIME_TYPE_CHARS,
    MAX_S3_URI_CHARS,
    MAX_S3_VERSION_CHARS,
    MAX_SOURCE_NAME_CHARS,
    MAX_TTL_MINUTES,
)
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import new_id, now_iso
from rlm_rs.storage.uploads import RawGrants, readable_raw_key, stream_upload
from rlm_rs.v1 import session_pb2, session_pb2_grpc
from rlm_rs.v1.common_pb2 import Models

_SUPPORTED_MIME = {
    "",
    "application/pdf",
    "text/html",
    "application/xhtml+xml",
    "text/plain",
    "text/markdown",
    "text/x-markdown",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


def load_session(storage: Storage, tenant_id: str, session_id: str) -> SessionRecord:
    """The caller's live session, or SESSION_NOT_FOUND / SESSION_EXPIRED."""
    if not session_id:
        raise RlmError("VALIDATION_ERROR", "session_id is required")
    session = storage.metadata.get_session(tenant_id, session_id)
    if session["status"] == SessionStatus.DELETING:
        raise RlmError("SESSION_NOT_FOUND", "session not found", {"session_id": session_id})
    if session["status"] == SessionStatus.EXPIRED or float(session.get("ttl_epoch") or 0) <= time.time():
        if session["status"] != SessionStatus.EXPIRED:
            with contextlib.suppress(RlmError):
                storage.metadata.update_session(tenant_id, session_id, {"status": SessionStatus.EXPIRED})
        raise RlmError("SESSION_EXPIRED", "session has expired", {"session_id": session_id})
    return session


def session_message(storage: Storage, session: SessionRecord) -> session_pb2.Session:
    docs = storage.metadata.list_documents(session["session_id"])
    options = session.get("options") or {}
    statuses = [d.get("ingest_status") for d in docs]
    parsed = all(s in PARSED_STATUSES or s == IngestStatus.FAILED for s in statuses)
    search_ready = bool(options.get("enable_search")) and all(
        s in (IngestStatus.INDEXED, IngestStatus.FAILED) for s in statuses
    )
    defaults = session.get("defaults") or {}
    message = session_pb2.Session(
        session_id=session["session_id"],
        tenant_id=session["tenant_id"],
        status=wire_enums.SESSION_STATUS.to_proto(session["status"]),
        created_at=session.get("created_at", ""),
        expires_at=session.get("expires_at", ""),
        readiness=session_pb2.Readiness(
            parsed_ready=parsed, search_ready=search_ready, ready=session["status"] == SessionStatus.READY
        ),
        options=session_pb2.SessionOptions(
            enable_search=bool(options.get("enable_search")),
            readiness_mode=wire_enums.READINESS_MODE.to_proto(
                options.get("readiness_mode") or ReadinessMode.STRICT
            ),
        ),
        models_default=Models(**(defaults.get("models_default") or {})),
        doc_count=int(session.get("doc_count") or len(docs)),
        total_chars=int(session.get("total_chars") or 0),
    )
    codec.from_json(message.budgets_default, defaults.get("budgets_default") or {})
    for doc in docs:
        message.docs.append(
            session_pb2.DocumentStatus(
                doc_id=doc["doc_id"],
                doc_index=int(doc["doc_index"]),
                ingest_status=wire_enums.INGEST_STATUS.to_proto(doc["ingest_status"]),
                text_s3_uri=doc.get("text_s3_uri") or "",
                meta_s3_uri=doc.get("meta_s3_uri") or "",
                offsets_s3_uri=doc.get("offsets_s3_uri") or "",
                source_name=doc.get("source_name") or "",
                mime_type=doc.get("mime_type") or "",
                char_length=int(doc.get("char_length") or 0),
                page_count=int(doc.get("page_count") or 0),
                failure_reason=doc.get("failure_reason") or "",
                text_checksum=doc.get("text_checksum") or "",
            )
        )
    return message


def _readiness_mode(number: int) -> ReadinessMode:
    """A request's readiness mode (unset: STRICT); VALIDATION_ERROR for a number this build lacks."""
    if number == session_pb2.READINESS_MODE_UNSPECIFIED:
        return ReadinessMode.STRICT
    try:
        return wire_enums.READINESS_MODE.to_domain(number)
    except ValueError:
        raise RlmError("VALIDATION_ERROR", "options.readiness_mode must be STRICT or LAX") from None


class SessionServicer(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        reaper: SessionReaper,
        ceilings: CeilingSource | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.quotas = Quotas.from_settings(settings, storage)
        self.reaper = reaper
        self.grants = RawGrants.parse(settings.raw_prefixes_json)  # a bad grant fails start-up
        self.ceilings = ceilings or CeilingSource(settings.sandbox_policy_json)  # the engine's

    def _validate_docs(self, tenant_id: str, docs: Any) -> None:
        if not docs:
            raise RlmError("VALIDATION_ERROR", "docs must list at least one document")
        if len(docs) > MAX_DOCS_PER_SESSION:
            raise RlmError("VALIDATION_ERROR", f"at most {MAX_DOCS_PER_SESSION} documents per session")
        for index, doc in enumerate(docs):
            where = {"doc": index}
            if not doc.source_name or len(doc.source_name) > MAX_SOURCE_NAME_CHARS:
                raise RlmError(
                    "VALIDATION_ERROR",
                    f"docs[{index}].source_name must be 1..{MAX_SOURCE_NAME_CHARS} characters",
                    where,
                )
            for name, bound in (
                ("mime_type", MAX_MIME_TYPE_CHARS),
                ("raw_s3_uri", MAX_S3_URI_CHARS),
                ("raw_s3_version_id", MAX_S3_VERSION_CHARS),
                ("raw_s3_etag", MAX_S3_VERSION_CHARS),
            ):
                if len(getattr(doc, name)) > bound:
                    raise RlmError(
                        "VALIDATION_ERROR", f"docs[{index}].{name} must be at most {bound} characters", where
                    )
            if doc.mime_type.split(";")[0].strip().lower() not in _SUPPORTED_MIME:
                raise RlmError("VALIDATION_ERROR", f"docs[{index}].mime_type is not supported", where)
            try:
                key = readable_raw_key(self.storage.blobs, tenant_id, doc.raw_s3_uri, self.grants)
            except RlmError:
                raise RlmError(
                    "VALIDATION_ERROR", f"docs[{index}].raw_s3_uri is not an s3:// URI", where
                ) from None
            if key is None:  # missing, another tenant's, internal: one answer for all
                raise RlmError(
                    "VALIDATION_ERROR",
                    f"docs[{index}].raw_s3_uri does not exist among this tenant's uploads",
                    where,
                )

    def CreateSession(
        self,
        request: session_pb2.CreateSessionRequest,
        context: grpc.ServicerContext,
    ) -> session_pb2.Session:
        caller = current_caller()
        ttl = request.ttl_minutes or DEFAULT_TTL_MINUTES
        if not 1 <= ttl <= MAX_TTL_MINUTES:
            raise RlmError("VALIDATION_ERROR", f"ttl_minutes must be 1..{MAX_TTL_MINUTES}")
        mode = _readiness_mode(request.options.readiness_mode)
        self._validate_docs(caller.tenant_id, request.docs)
        check_models(request.models_default, "models_default")
        budgets_default = budgets_to_dict(request.budgets_default)
        merge_budgets(
            budgets_default, ceilings=self.ceilings.current()
        )  # validate now, not at the first execution
        enable_search = request.options.enable_search or (
            not request.HasField("options") and self.settings.enable_search_default
        )
        self.quotas.check_session(caller.tenant_id)
        now = time.time()
        session_id = new_id("sess")
        record: SessionRecord = {
            "tenant_id": caller.tenant_id,
            "session_id": session_id,
            "status": SessionStatus.CREATING,
            "created_at": now_iso(now),
            "expires_at": now_iso(now + ttl * 60),
            "ttl_epoch": int(now + ttl * 60),
            "doc_count": len(request.docs),
            "total_chars": 0,
            "options": {"enable_search": enable_search, "readiness_mode": mode},
            "defaults": {
                "models_default": {k: v for k, v in codec.to_json(request.models_default).items() if v},
                "budgets_default": budgets_default,
            },
        }
        for index, doc in enumerate(request.docs):
            self.storage.metadata.put_document(
                {
                    "tenant_id": caller.tenant_id,
                    "session_id": session_id,
                    "doc_id": f"doc_{index:03d}_{new_id('d')[2:14]}",
                    "doc_index": index,
                    "source_name": doc.source_name,
                    "mime_type": doc.mime_type,
                    "raw_s3_uri": doc.raw_s3_uri,
                    "raw_s3_version_id": doc.raw_s3_version_id or None,
                    "raw_s3_etag": doc.raw_s3_etag or None,
                    "ingest_status": IngestStatus.REGISTERED,
                    "ttl_epoch": record["ttl_epoch"],
                }
            )
        # The session is written last: the ingestion worker only looks at
        # sessions, so it never sees one whose documents are half-registered.
        self.quotas.create_session(dict(record))  # admitted by the tenant's quota on every node
        return session_message(self.storage, record)

    def GetSession(
        self, request: session_pb2.GetSessionRequest, context: grpc.ServicerContext
    ) -> session_pb2.Session:
        caller = current_caller()
        session = load_session(self.storage, caller.tenant_id, request.session_id)
        return session_message(self.storage, session)

    def DeleteSession(
        self,
        request: session_pb2.DeleteSessionRequest,
        context: grpc.ServicerContext,
    ) -> session_pb2.DeleteSessionResponse:
        caller = current_caller()
        self.reaper.delete(caller.tenant_id, request.session_id)
        return session_pb2.DeleteSessionResponse(
            session_id=request.session_id, status=session_pb2.SESSION_STATUS_DELETING
        )

    def ListSessions(
        self,
        request: session_pb2.ListSessionsRequest,
        context: grpc.ServicerContext,
    ) -> session_pb2.ListSessionsResponse:
        """The caller's sessions newest first, DELETING ones left out (docs/api.md#listings)."""
        caller = current_caller()
        size = listings.page_size(request.page_size)
        status = listings.status_filter(request.status, wire_enums.SESSION_STATUS)
        filters = {"status": status}
        records, last = self.storage.metadata.list_sessions_page(
            caller.tenant_id,
            limit=size,
            after=listings.decode_cursor(request.page_token, filters),
            status=status,
        )
        response = session_pb2.ListSessionsResponse(next_page_token=listings.encode_cursor(last, filters))
        for session in records:
            response.sessions.append(session_message(self.storage, cast(SessionRecord, session)))
        return response

    def Upload(
        self,
        requests: Iterator[session_pb2.UploadRequest],
        context: grpc.ServicerContext,
    ) -> session_pb2.UploadResult:
        """A raw document streamed into the caller's namespace (docs/api.md#uploads):
        the first chunk names it, the last is marked; nothing is kept otherwise."""
        caller = current_caller()
        first = _next_chunk(requests)
        if first is None:
            raise RlmError("VALIDATION_ERROR", "an upload needs at least one chunk")

        def chunks() -> Iterator[bytes]:
            chunk: session_pb2.UploadRequest | None = first
            while chunk is not None:
                if chunk.data:
                    yield chunk.data
                if chunk.last:
                    return
                chunk = _next_chunk(requests)
            raise RlmError("VALIDATION_ERROR", "the upload ended without its last chunk; nothing was stored")

        stored = stream_upload(
            self.storage.blobs,
            caller.tenant_id,
            first.file_name,
            first.content_type,
            chunks(),
            self.settings.max_upload_bytes,
        )
        return session_pb2.UploadResult(**dataclasses.asdict(stored))


def _next_chunk(requests: Iterator[session_pb2.UploadRequest]) -> session_pb2.UploadRequest | None:
    """The next chunk, None at the stream's end; a caller that went away mid-stream
    is VALIDATION_ERROR (the upload is discarded; nobody reads the answer)."""
    try:
        return next(requests, None)
    except grpc.RpcError:
        raise RlmError("VALIDATION_ERROR", "the upload stream broke; nothing was stored") from None
