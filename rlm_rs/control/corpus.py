"""A session's parsed documents as local files: the node's document cache.

Embedded storage already keeps blobs as files, so the manifest points at
them directly; with S3, objects are downloaded once per node into
RLM_DATA_DIR/doc-cache (immutable keys make the cache always valid). The
sandbox receives these paths in its manifest (the pool opens them and passes
read-only fds); citations and GetSpan read them through TextFile.
Open TextFiles are kept for the MAX_OPEN_TEXTS most recently used documents.
The downloads are bounded by size (RLM_DOC_CACHE_MAX_BYTES): past it, the
least recently used files are removed, except those used in the last
`min_idle_seconds` (a step may be about to open them), so the bound is soft
under a burst. A deleted or expired session's files and open texts are
dropped by `drop_session` (rlm_rs/control/lifecycle.py); nothing here
decides who may read. The session search artifacts (storage/search.py) are
cached here too, through `verified_path`: a copy whose SHA-256 is not the
one the session recorded is never handed out.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from rlm_rs.citations import CitedDocument
from rlm_rs.domain import PARSED_STATUSES, DocumentRecord
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument
from rlm_rs.storage import Storage, keys
from rlm_rs.storage.keys import key_of
from rlm_rs.storage.search import file_sha256
from rlm_rs.textfile import TextFile

MAX_OPEN_TEXTS = 256
DEFAULT_MAX_BYTES = 4 * 1024**3
# A downloaded file used this recently is never evicted: the step whose
# manifest named it may not have opened it yet.
MIN_IDLE_SECONDS = 60.0


class DocumentCache:
    def __init__(
        self,
        storage: Storage,
        cache_dir: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_idle_seconds: float = MIN_IDLE_SECONDS,
    ) -> None:
        self.storage = storage
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.min_idle_seconds = min_idle_seconds
        self._lock = threading.RLock()  # text() calls path() while holding it
        # uri -> open TextFile, least recently used first. An evicted entry is
        # not closed here: a reader may still hold it; its mapping goes when
        # the last reference does.
        self._texts: collections.OrderedDict[str, TextFile] = collections.OrderedDict()
        # downloaded key -> (bytes, monotonic last use), least recently used first
        self._files: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self.cached_bytes = 0
        self.evicted_files = 0
        self._verified: set[tuple[str, str]] = set()  # (key, sha256) checked by this process
        self._load_index()

    def _roots(self) -> list[Path]:
        return [self.cache_dir / prefix.rstrip("/") for prefix in keys.NODE_CACHED_PREFIXES]

    def _load_index(self) -> None:
        """What an earlier run left in the cache, oldest first (by mtime)."""
        found = []
        for root in self._roots():
            for file in root.rglob("*") if root.is_dir() else ():
                with contextlib.suppress(OSError):
                    if file.is_file() and not file.name.startswith(".tmp-"):
                        stat = file.stat()
                        found.append(
                            (stat.st_mtime, file.relative_to(self.cache_dir).as_posix(), stat.st_size)
                        )
        for _, key, size in sorted(found):
            self._files[key] = (size, 0.0)
            self.cached_bytes += size

    def path(self, uri: str) -> str:
        key = key_of(uri)
        local = self.storage.blobs.local_path(key)
        if local is not None:
            return str(local)
        target = self.cache_dir / key
        with self._lock:
            if key in self._files and target.exists():
                self._files[key] = (self._files[key][0], time.monotonic())
                self._files.move_to_end(key)
                return str(target)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self.storage.blobs.get(key)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        with self._lock:
            size, _ = self._files.pop(key, (0, 0.0))
            self.cached_bytes -= size
            size = target.stat().st_size
            self._files[key] = (size, time.monotonic())
            self.cached_bytes += size
            self._evict()
        return str(target)

    def verified_path(self, key: str, sha256: str) -> str:
        """A local copy of the immutable blob `key` whose SHA-256 is `sha256`
        (checked once per process). A bad downloaded copy is fetched once more;
        a blob that is itself wrong is CHECKSUM_MISMATCH, and no copy is kept."""
        uri = self.storage.blobs.uri(key)
        downloaded = self.storage.blobs.local_path(key) is None
        for _ in range(2 if downloaded else 1):
            path = self.path(uri)
            with self._lock:
                if (key, sha256) in self._verified:
                    return path
            if _sha256_or_none(path) == sha256:
                with self._lock:
                    self._verified.add((key, sha256))
                return path
            self._forget(key)
        raise RlmError("CHECKSUM_MISMATCH", "the session's search index failed its digest check")

    def _forget(self, key: str) -> None:
        """Drop this node's copy of one download (a bad or evicted file)."""
        with self._lock:
            size, _ = self._files.pop(key, (0, 0.0))
            self.cached_bytes -= size
            self._verified = {v for v in self._verified if v[0] != key}
            if self.storage.blobs.local_path(key) is None:
                with contextlib.suppress(FileNotFoundError):
                    (self.cache_dir / key).unlink()

    def _evict(self) -> None:
        """Remove least recently used downloads until under `max_bytes`
        (caller holds the lock); stops at the first one used too recently."""
        now = time.monotonic()
        while self.cached_bytes > self.max_bytes and self._files:
            key, (size, used) = next(iter(self._files.items()))
            if used and now - used < self.min_idle_seconds:
                return
            del self._files[key]
            self.cached_bytes -= size
            self.evicted_files += 1
            self._verified = {v for v in self._verified if v[0] != key}
            with contextlib.suppress(FileNotFoundError):
                (self.cache_dir / key).unlink()
            for uri in [u for u in self._texts if key_of(u) == key]:
                del self._texts[uri]  # an open text of it would keep its disk space

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
        prefixes = keys.node_cached_prefixes(tenant_id, session_id)
        with self._lock:
            for uri in [u for u in self._texts if key_of(u).startswith(prefixes)]:
                del self._texts[uri]
            for key in [k for k in self._files if k.startswith(prefixes)]:
                self.cached_bytes -= self._files.pop(key)[0]
            self._verified = {v for v in self._verified if not v[0].startswith(prefixes)}
        folders = [self.cache_dir / prefix for prefix in prefixes]
        folders += [self.cache_dir / "derived" / execution_id for execution_id in execution_ids]
        removed = 0
        for folder in folders:
            if folder.is_dir():
                removed += sum(1 for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
        for root in self._roots():
            with contextlib.suppress(OSError):
                (root / tenant_id).rmdir()  # when it was the tenant's last one
        return removed

    def cached_sessions(self) -> list[tuple[str, str]]:
        """(tenant_id, session_id) of every session with files in this node's cache."""
        return sorted(
            {
                (tenant.name, session.name)
                for root in self._roots()
                if root.is_dir()
                for tenant in root.iterdir()
                if tenant.is_dir()
                for session in tenant.iterdir()
                if session.is_dir()
            }
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


def _sha256_or_none(path: str) -> str | None:
    """The file's SHA-256, or None when it went meanwhile (a purge, an eviction)."""
    try:
        return file_sha256(path)
    except OSError:
        return None
