"""Optional search accelerator (docs/ingestion.md): one SQLite FTS5 artifact per session.

The ingestion worker builds a session's index once its documents are parsed
(`publish_artifact`): canonical text cut into CHUNK_CHARS-character chunks
overlapping by OVERLAP_CHARS, with doc_index and character range, in a
self-contained SQLite file that is uploaded to the blob store under
`keys.search_artifact_key` (content addressed, versioned) and recorded in the
session (`search_index`: version, key, sha256, size, doc_ids). Every node
searches the same bytes (`SearchIndex`): it fetches the artifact once into its
document cache, checks its SHA-256, and opens it read-only and immutable. Hits
are `{score, doc_index, start_char, end_char, preview}` (docs/api.md), higher
score better. Search is never the truth: citations come from what code reads.
A reader never opens an artifact outside the caller's own session folder, nor
one whose embedded tenant and session are not the caller's.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_rs.errors import ConflictError, RlmError
from rlm_rs.storage import keys
from rlm_rs.storage.interfaces import BlobStore
from rlm_rs.storage.metadata import now_iso

CHUNK_CHARS = 2_000
OVERLAP_CHARS = 200
PREVIEW_CHARS = 200
ARTIFACT_FORMAT = "rlm-rs-search/1"
CONTENT_TYPE = "application/vnd.sqlite3"
_READ_BYTES = 1 << 20
_TOKEN = re.compile(r"\w+", re.UNICODE)
_SCHEMA = (
    "CREATE TABLE artifact (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE VIRTUAL TABLE chunks USING fts5(body, doc_id UNINDEXED, doc_index UNINDEXED, "
    "start_char UNINDEXED, end_char UNINDEXED)",
)

# (key, expected SHA-256) -> a verified local path of the artifact (the
# node's document cache: control/corpus.py DocumentCache.verified_path)
Fetch = Callable[[str, str], str]


def chunk_ranges(length: int) -> list[tuple[int, int]]:
    ranges = []
    start = 0
    while start < length:
        end = min(start + CHUNK_CHARS, length)
        ranges.append((start, end))
        if end == length:
            break
        start = end - OVERLAP_CHARS
    return ranges


@dataclass(frozen=True)
class IndexedText:
    """One parsed document as the builder indexes it."""

    doc_id: str
    doc_index: int
    text: str


@dataclass(frozen=True)
class ArtifactRef:
    """What the session record keeps of its current index (`search_index`)."""

    version: int
    key: str
    sha256: str
    size: int
    doc_ids: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        return {"version": self.version, "key": self.key, "sha256": self.sha256, "size": self.size,
                "doc_ids": list(self.doc_ids), "built_at": now_iso()}  # fmt: skip

    @classmethod
    def of(cls, session: Mapping[str, Any]) -> ArtifactRef | None:
        """The session's current index, or None before the first is published."""
        found = session.get("search_index")
        if not isinstance(found, Mapping):
            return None
        try:
            return cls(int(found["version"]), str(found["key"]), str(found["sha256"]),
                       int(found["size"]), tuple(str(d) for d in found["doc_ids"]))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise _invalid("the session's search index record is malformed") from None

    def covers(self, doc_ids: Iterable[str]) -> bool:
        return set(doc_ids) <= set(self.doc_ids)


def _invalid(message: str) -> RlmError:
    return RlmError("CHECKSUM_MISMATCH", message)


# --- building (the ingestion worker) ---------------------------------------------------
def build_artifact(
    path: Path, tenant_id: str, session_id: str, version: int, docs: Iterable[IndexedText]
) -> list[str]:
    """Write a new index file at `path` (it must not exist) over `docs`, one
    document in memory at a time; returns the doc_ids it holds."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("BEGIN")
        for statement in _SCHEMA:
            conn.execute(statement)
        doc_ids = []
        for doc in docs:
            rows = [(doc.text[a:b], doc.doc_id, doc.doc_index, a, b) for a, b in chunk_ranges(len(doc.text))]
            conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
            doc_ids.append(doc.doc_id)
        about = {"format": ARTIFACT_FORMAT, "tenant_id": tenant_id, "session_id": session_id,
                 "version": str(version), "doc_ids": ",".join(doc_ids)}  # fmt: skip
        conn.executemany("INSERT INTO artifact VALUES (?, ?)", about.items())
        conn.execute("INSERT INTO chunks(chunks) VALUES ('optimize')")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    finally:
        conn.close()
    return doc_ids


def publish_artifact(
    blobs: BlobStore,
    tenant_id: str,
    session_id: str,
    version: int,
    docs: Iterable[IndexedText],
    work_dir: Path | None = None,
) -> ArtifactRef:
    """Build the session's index version `version` (in a temporary folder
    under `work_dir`) and upload it under its content-addressed key (a racing
    builder of the same bytes is no conflict). The caller records the
    returned ref in the session, conditionally."""
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlm-search-", dir=work_dir) as folder:
        path = Path(folder) / "index.sqlite3"
        doc_ids = build_artifact(path, tenant_id, session_id, version, docs)
        digest, size = file_sha256(path), path.stat().st_size
        key = keys.search_artifact_key(tenant_id, session_id, version, digest)
        try:
            blobs.put_stream(key, _read_chunks(path), CONTENT_TYPE)
        except ConflictError:
            existing = blobs.head(key)
            if existing is None or existing.size != size:
                raise
    return ArtifactRef(version, key, digest, size, tuple(doc_ids))


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_READ_BYTES):
            yield chunk


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    for chunk in _read_chunks(Path(path)):
        digest.update(chunk)
    return digest.hexdigest()


# --- reading (every node) -----------------------------------------------------------------
class SearchIndex:
    """A node's reader of session artifacts: fetched once, verified, read-only."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    def search(
        self, session: Mapping[str, Any], query: str, k: int = 10, doc_ids: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Hits of `query` in the caller's `session` (a record read under the
        caller's tenant). SESSION_NOT_READY before the index is published;
        CHECKSUM_MISMATCH when the artifact is not this session's or is corrupt."""
        ref = ArtifactRef.of(session)
        if ref is None:
            raise RlmError("SESSION_NOT_READY", "the session's search index is not built yet")
        terms = _TOKEN.findall(query)
        if not terms:
            return []
        tenant_id, session_id = session["tenant_id"], session["session_id"]
        if not ref.key.startswith(keys.search_session_prefix(tenant_id, session_id)):
            raise _invalid("the session's search index is not in its own folder")
        path = Path(self._fetch(ref.key, ref.sha256))
        try:
            with contextlib.closing(
                sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
            ) as conn:
                _check_owner(conn, tenant_id, session_id)
                return _query(conn, terms, k, doc_ids)
        except (sqlite3.DatabaseError, OSError):  # damaged, or removed meanwhile (a purge, an eviction)
            raise _invalid("the session's search index cannot be read") from None


def _check_owner(conn: sqlite3.Connection, tenant_id: str, session_id: str) -> None:
    about = dict(conn.execute("SELECT name, value FROM artifact").fetchall())
    if about.get("format") != ARTIFACT_FORMAT:
        raise _invalid("the session's search index has an unknown format")
    if about.get("tenant_id") != tenant_id or about.get("session_id") != session_id:
        raise _invalid("the search index belongs to another session")


def _query(
    conn: sqlite3.Connection, terms: list[str], k: int, doc_ids: list[str] | None
) -> list[dict[str, Any]]:
    match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms[:32])
    sql = "SELECT doc_index, start_char, end_char, body, bm25(chunks) FROM chunks WHERE chunks MATCH ?"
    params: list[Any] = [match]
    if doc_ids:
        sql += f" AND doc_id IN ({','.join('?' * len(doc_ids))})"
        params.extend(doc_ids)
    sql += " ORDER BY bm25(chunks), doc_index, start_char LIMIT ?"
    params.append(max(1, min(k, 100)))
    return [
        {
            "score": round(-float(rank), 6),
            "doc_index": int(doc_index),
            "start_char": int(start),
            "end_char": int(end),
            "preview": body[:PREVIEW_CHARS],
        }
        for doc_index, start, end, body, rank in conn.execute(sql, params)
    ]


def artifact_doc_ids(path: Path | str) -> list[str]:
    """The doc_ids an artifact file says it holds (tests, `rlm-rs bench search`)."""
    with contextlib.closing(sqlite3.connect(f"{Path(path).as_uri()}?mode=ro&immutable=1", uri=True)) as conn:
        value = conn.execute("SELECT value FROM artifact WHERE name = 'doc_ids'").fetchone()
    return [d for d in str(value[0] if value else "").split(",") if d]
