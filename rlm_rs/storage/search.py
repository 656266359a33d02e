"""Optional search accelerator (docs/ingestion.md): SQLite FTS5 with BM25 over chunks.

Canonical text is cut into CHUNK_CHARS-character chunks overlapping by
OVERLAP_CHARS, indexed with their doc_index and character range. Hits are
`{score, doc_index, start_char, end_char, preview}` (docs/api.md); higher score is
better. Search is never the truth: citations come from what code reads. The
index file lives on the node (embedded: under RLM_DATA_DIR; aws: the node's
local directory, rebuilt from parsed text when missing). A deleted or expired
session's chunks are removed by the lifecycle (rlm_rs/control/lifecycle.py).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

CHUNK_CHARS = 2_000
OVERLAP_CHARS = 200
PREVIEW_CHARS = 200
_TOKEN = re.compile(r"\w+", re.UNICODE)


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


class SearchIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._conn().execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(body, session_id UNINDEXED, "
            "doc_id UNINDEXED, doc_index UNINDEXED, start_char UNINDEXED, end_char UNINDEXED)"
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def index_document(self, session_id: str, doc_id: str, doc_index: int, text: str) -> int:
        """(Re)index one document; idempotent. Returns the number of chunks."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM chunks WHERE session_id=? AND doc_id=?", (session_id, doc_id))
            rows = [(text[a:b], session_id, doc_id, doc_index, a, b) for a, b in chunk_ranges(len(text))]
            conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def search(
        self, session_id: str, query: str, k: int = 10, doc_ids: list[str] | None = None
    ) -> list[dict[str, Any]]:
        terms = _TOKEN.findall(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms[:32])
        sql = (
            "SELECT doc_index, start_char, end_char, body, bm25(chunks) AS rank FROM chunks "
            "WHERE chunks MATCH ? AND session_id = ?"
        )
        params: list[Any] = [match, session_id]
        if doc_ids:
            sql += f" AND doc_id IN ({','.join('?' * len(doc_ids))})"
            params.extend(doc_ids)
        sql += " ORDER BY rank LIMIT ?"
        params.append(max(1, min(k, 100)))
        return [
            {
                "score": round(-float(rank), 6),
                "doc_index": int(doc_index),
                "start_char": int(start),
                "end_char": int(end),
                "preview": body[:PREVIEW_CHARS],
            }
            for doc_index, start, end, body, rank in self._conn().execute(sql, params)
        ]

    def delete_session(self, session_id: str) -> int:
        """Remove every chunk of a session (deleted or expired); returns the count."""
        cursor = self._conn().execute("DELETE FROM chunks WHERE session_id=?", (session_id,))
        return max(cursor.rowcount, 0)

    def sessions(self) -> set[str]:
        """Every session with chunks in this index (the lifecycle's node sweep)."""
        return {row[0] for row in self._conn().execute("SELECT DISTINCT session_id FROM chunks")}

    def count(self, session_id: str) -> int:
        """How many chunks a session has here."""
        row = self._conn().execute("SELECT count(*) FROM chunks WHERE session_id=?", (session_id,)).fetchone()
        return int(row[0])
