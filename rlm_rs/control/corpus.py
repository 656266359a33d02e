"""A session's parsed documents as local files: the node's document cache.

Embedded storage already keeps blobs as files, so the manifest points at
them directly; with S3, objects are downloaded once per node into
RLM_DATA_DIR/doc-cache (immutable keys make the cache always valid). The
sandbox receives these paths in its manifest (the pool opens them and passes
read-only fds); citations and GetSpan read them through TextFile.
Open TextFiles are kept for the MAX_OPEN_TEXTS most recently used documents.
A deleted or expired session's files and open texts are dropped by
`drop_session` (rlm_rs/control/lifecycle.py); nothing here decides who may read.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from rlm_rs.citations import CitedDocument
from rlm_rs.domain import PARSED_STATUSES, DocumentRecord
from rlm_rs.errors import RlmError
from rlm_rs.storage import Storage
from rlm_rs.storage.keys import key_of, parsed_session_prefix
from rlm_rs.textfile import TextFile
from rlm_rs.v1.sandbox_pb2 import ContextDocument

MAX_OPEN_TEXTS = 256


class DocumentCache:
    def __init__(self, storage: Storage, cache_dir: Path) -> None:
        self.storage = storage
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        # uri -> open TextFile, least recently used first. An evicted entry is
        # not closed here: a reader may still hold it; its mapping goes when
        # the last reference does.
        self._texts: collections.OrderedDict[str, TextFile] = collections.OrderedDict()

    def path(self, uri: str) -> str:
        key = key_of(uri)
        local = self.storage.blobs.local_path(key)
        if local is not None:
            return str(local)
        target = self.cache_dir / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self.storage.blobs.get(key)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        return str(target)

    def parsed_documents(self, session_id: str) -> list[DocumentRecord]:
        documents = self.storage.metadata.list_documents(session_id)
        return [d for d in documents if d.get("ingest_status") in PARSED_STATUSES]

    def manifest(self, session_id: str) -> list[ContextDocument]:
        """The step's context: parsed documents in doc_index order, re-indexed from 0."""
        return self._manifest(self.parsed_documents(session_id))

    def _manifest(self, documents: list[DocumentRecord]) -> list[ContextDocument]:
        manifest = []
        for position, doc in enumerate(documents):
            manifest.append(
                ContextDocument(
                    doc_index=position,
                    doc_id=doc["doc_id"],
                    source_name=doc.get("source_name") or "",
                    mime_type=doc.get("mime_type") or "",
                    char_length=int(doc.get("char_length") or 0),
                    byte_length=int(doc.get("byte_length") or 0),
                    text_path=self.path(doc["text_s3_uri"]),
                    offsets_path=self.path(doc["offsets_s3_uri"]),
                    meta_path=self.path(meta) if (meta := doc.get("meta_s3_uri")) else "",
                )
            )
        return manifest

    def text(self, doc: DocumentRecord) -> TextFile:
        if doc.get("ingest_status") not in PARSED_STATUSES:
            raise RlmError("SESSION_NOT_READY", "the document is not parsed", {"doc_id": doc["doc_id"]})
        uri = doc["text_s3_uri"]
        with self._lock:
            cached = self._texts.get(uri)
            if cached is None:
                cached = TextFile.open_path(self.path(uri), self.path(doc["offsets_s3_uri"]))
                self._texts[uri] = cached
                while len(self._texts) > MAX_OPEN_TEXTS:
                    self._texts.popitem(last=False)
            else:
                self._texts.move_to_end(uri)
            return cached

    # --- lifecycle ------------------------------------------------------------------
    def drop_session(self, tenant_id: str, session_id: str, execution_ids: Iterable[str] = ()) -> int:
        """Forget a session's open texts and remove this node's copies of its
        files (S3 downloads, children's span documents); returns the number
        of files removed. The blobs themselves are the lifecycle's to delete."""
        prefix = parsed_session_prefix(tenant_id, session_id)
        with self._lock:
            for uri in [u for u in self._texts if key_of(u).startswith(prefix)]:
                del self._texts[uri]
        folders = [self.cache_dir / prefix]
        folders += [self.cache_dir / "derived" / execution_id for execution_id in execution_ids]
        removed = 0
        for folder in folders:
            if folder.is_dir():
                removed += sum(1 for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.cache_dir / "parsed" / tenant_id).rmdir()  # when it was the tenant's last one
        return removed

    def cached_sessions(self) -> list[tuple[str, str]]:
        """(tenant_id, session_id) of every session with files in this node's cache."""
        root = self.cache_dir / "parsed"
        if not root.is_dir():
            return []
        return sorted(
            (tenant.name, session.name)
            for tenant in root.iterdir()
            if tenant.is_dir()
            for session in tenant.iterdir()
            if session.is_dir()
        )

    def cited(self, session_id: str) -> tuple[list[ContextDocument], dict[int, CitedDocument]]:
        """The session's manifest and each entry's text (for citations), from one listing."""
        documents = self.parsed_documents(session_id)
        manifest = self._manifest(documents)
        docs = {d["doc_id"]: d for d in documents}
        return manifest, {
            entry.doc_index: CitedDocument(entry.doc_id, self.text(docs[entry.doc_id]))
            for entry in manifest
            if entry.doc_id in docs
        }
