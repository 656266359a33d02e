"""Publishing a session's search index artifact (storage/search.py) from its parsed text.

Called by the ingestion worker after each of the session's documents is
parsed. It builds only when no document is still being parsed, over every
document waiting for the index (INDEXING) and those already in it (INDEXED),
uploads the artifact, records it in the session conditionally on the
session's version, and only then marks the waiting documents INDEXED: a
document is never INDEXED before an artifact that holds it is committed. A
builder that loses the race re-reads and retries; it never overwrites.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlm_rs.errors import ConflictError
from rlm_rs.observability import get_logger
from rlm_rs.storage import Storage
from rlm_rs.storage.keys import key_of
from rlm_rs.storage.search import ArtifactRef, IndexedText, publish_artifact

ATTEMPTS = 4
# not in the index yet, and not waiting for it yet (PARSED turns INDEXING next)
_COMING = ("REGISTERED", "PARSING", "PARSED")
_MEMBERS = ("INDEXING", "INDEXED")
log = get_logger(component="ingestion")


class SessionIndexer:
    def __init__(self, storage: Storage, work_dir: Path | None = None) -> None:
        self.storage = storage
        self.work_dir = work_dir  # where an artifact is built before its upload (default: TMPDIR)

    def index(self, session: Mapping[str, Any]) -> ArtifactRef | None:
        """Bring the session's artifact up to its parsed documents when none is
        being parsed; returns the committed ref (None: nothing to do yet)."""
        for _ in range(ATTEMPTS):
            try:
                return self._attempt(session["tenant_id"], session["session_id"])
            except ConflictError:  # another builder committed first, or the session changed
                continue
        raise ConflictError("CONFLICT", "the session's search index kept changing while it was built")

    def _attempt(self, tenant_id: str, session_id: str) -> ArtifactRef | None:
        meta = self.storage.metadata
        # a strongly consistent read: its version conditions the commit
        current = meta.get_session(tenant_id, session_id)
        if current.get("status") != "CREATING":
            return ArtifactRef.of(current)  # decided, deleted or expired meanwhile
        docs = meta.list_documents(session_id)
        if any(d.get("ingest_status") in _COMING for d in docs):
            return None  # the last document to reach INDEXING builds the index
        strict = ((current.get("options") or {}).get("readiness_mode") or "STRICT").upper() == "STRICT"
        if strict and any(d.get("ingest_status") == "FAILED" for d in docs):
            return None  # the session fails: no index to build
        members = [d for d in docs if d.get("ingest_status") in _MEMBERS]
        waiting = [d["doc_id"] for d in members if d.get("ingest_status") == "INDEXING"]
        ref = ArtifactRef.of(current)
        if not waiting:
            return ref
        if ref is None or not ref.covers(d["doc_id"] for d in members):
            ref = self._publish(current, members, (ref.version if ref else 0) + 1)
        for doc_id in waiting:
            with contextlib.suppress(ConflictError):  # marked by a racing builder
                indexed = {"ingest_status": "INDEXED", "search_version": ref.version}
                meta.update_document(session_id, doc_id, indexed, from_statuses=("INDEXING",))
        return ref

    def _publish(
        self, session: Mapping[str, Any], members: Sequence[Mapping[str, Any]], version: int
    ) -> ArtifactRef:
        tenant_id, session_id = session["tenant_id"], session["session_id"]
        texts = self._texts(members)
        ref = publish_artifact(self.storage.blobs, tenant_id, session_id, version, texts, self.work_dir)
        self.storage.metadata.update_session(
            tenant_id, session_id, {"search_index": ref.record()}, expected_version=int(session["version"])
        )  # CONFLICT when another builder or a status change came first: the caller retries
        log.info("search_index_published", session_id=session_id, version=version, size=ref.size,
                 documents=len(ref.doc_ids))  # fmt: skip
        return ref

    def _texts(self, members: Sequence[Mapping[str, Any]]) -> Iterator[IndexedText]:
        """The members' canonical text, one document in memory at a time."""
        for doc in members:
            text = self.storage.blobs.get(key_of(doc["text_s3_uri"])).decode("utf-8")
            yield IndexedText(doc["doc_id"], int(doc["doc_index"]), text)
