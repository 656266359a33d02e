"""The search artifact format on its own (rlm_rs/storage/search.py): chunking, the
file's owner table, the read-only open, and the answers to a bad session record."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from pathlib import Path

import pytest

from rlm_rs.errors import RlmError
from rlm_rs.storage import keys
from rlm_rs.storage.search import (
    CHUNK_CHARS,
    OVERLAP_CHARS,
    ArtifactRef,
    IndexedText,
    SearchIndex,
    artifact_doc_ids,
    build_artifact,
    chunk_ranges,
    file_sha256,
)

TEXT = "The lamp burned colza oil. " * 300  # 8,100 chars: five overlapping chunks


def _session(path: Path, tenant: str = "t1", session: str = "s1") -> dict[str, object]:
    key = keys.search_artifact_key(tenant, session, 1, file_sha256(path))
    record = {"version": 1, "key": key, "sha256": file_sha256(path), "size": 1, "doc_ids": ["d0"]}
    return {"tenant_id": tenant, "session_id": session, "search_index": record}


def test_chunks_overlap_and_cover_the_text() -> None:
    ranges = chunk_ranges(len(TEXT))
    assert ranges[0] == (0, CHUNK_CHARS) and ranges[-1][1] == len(TEXT)
    assert all(b[0] == a[1] - OVERLAP_CHARS for a, b in itertools.pairwise(ranges))
    assert chunk_ranges(0) == []


def test_an_artifact_names_its_owner_and_opens_only_read_only(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    assert build_artifact(path, "t1", "s1", 1, [IndexedText("d0", 0, TEXT)]) == ["d0"]
    assert artifact_doc_ids(path) == ["d0"]
    index = SearchIndex(lambda key, sha256: str(path))
    hits = index.search(_session(path), "colza", k=3)
    assert len(hits) == 3 and all(h["doc_index"] == 0 for h in hits)
    assert index.search(_session(path), "!!!") == []  # no terms: no hits, no query
    uri = f"{path.as_uri()}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn, pytest.raises(sqlite3.OperationalError):
        conn.execute("INSERT INTO artifact VALUES ('x', 'y')")  # read-only: refused


@pytest.mark.parametrize(
    "record, message",
    [
        ({"version": "one"}, "malformed"),
        ({"version": 1, "key": "search/t2/s1/v000001-x.sqlite3", "sha256": "x", "size": 1, "doc_ids": []},
         "not in its own folder"),
    ],
)  # fmt: skip
def test_a_bad_session_record_is_checksum_mismatch(record: dict[str, object], message: str) -> None:
    index = SearchIndex(lambda key, sha256: pytest.fail("nothing may be fetched"))
    with pytest.raises(RlmError) as caught:
        index.search({"tenant_id": "t1", "session_id": "s1", "search_index": record}, "colza")
    assert caught.value.code == "CHECKSUM_MISMATCH" and message in caught.value.message


def test_a_file_that_is_not_an_artifact_is_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(RlmError) as caught:
        SearchIndex(lambda key, sha256: str(path)).search(_session(path), "colza")
    assert caught.value.code == "CHECKSUM_MISMATCH" and "cannot be read" in caught.value.message
    assert ArtifactRef.of({}) is None
