"""The node's document cache of S3 downloads is bounded by size: past
RLM_DOC_CACHE_MAX_BYTES the least recently used files go (except those used
within the idle window), an evicted file comes back from S3 on its next use,
and a restarted node knows what its cache already holds. Against a moto
server over HTTP (the embedded back end reads its blob files in place)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_rs.canonical import build_offsets
from rlm_rs.control.corpus import DocumentCache
from rlm_rs.storage import Storage, open_storage
from rlm_rs.storage.keys import parsed_document_prefix
from tests.conformance.storage.conftest import make_settings

SIZE = 1_000


@pytest.fixture
def s3(moto_endpoint: str, tmp_path: Path) -> Iterator[Storage]:
    store = open_storage(make_settings("aws", tmp_path, moto_endpoint))
    store.init()
    yield store
    store.close()


def _docs(storage: Storage, count: int, session: str = "s1") -> list[str]:
    uris = []
    for index in range(count):
        key = parsed_document_prefix("t1", session, f"d{index}") + "text.txt"
        storage.blobs.put(key, bytes([65 + index]) * SIZE)
        uris.append(storage.blobs.uri(key))
    return uris


def test_the_cache_evicts_the_least_recently_used_past_its_size(s3: Storage, tmp_path: Path) -> None:
    cache = DocumentCache(s3, tmp_path / "doc-cache", max_bytes=int(2.5 * SIZE), min_idle_seconds=0)
    a, b, c, d = _docs(s3, 4)
    path_a, path_b = cache.path(a), cache.path(b)
    cache.path(a)  # a is now more recent than b
    path_c = cache.path(c)  # over the bound: b goes
    assert Path(path_a).is_file() and Path(path_c).is_file() and not Path(path_b).exists()
    assert cache.cached_bytes == 2 * SIZE and cache.evicted_files == 1
    on_disk = sum(p.stat().st_size for p in (tmp_path / "doc-cache").rglob("*") if p.is_file())
    assert on_disk == cache.cached_bytes <= cache.max_bytes

    # an evicted file comes back from S3, whole, on its next use
    assert Path(cache.path(b)).read_bytes() == b"B" * SIZE
    assert not Path(path_a).exists()  # a was the least recently used then

    # a restarted node counts what is on disk and keeps to the bound
    again = DocumentCache(s3, tmp_path / "doc-cache", max_bytes=int(2.5 * SIZE), min_idle_seconds=0)
    assert again.cached_bytes == 2 * SIZE
    again.path(d)
    assert again.cached_bytes == 2 * SIZE and again.evicted_files == 1


def test_recently_used_files_stay_and_open_texts_of_evicted_ones_go(s3: Storage, tmp_path: Path) -> None:
    cache = DocumentCache(s3, tmp_path / "doc-cache", max_bytes=SIZE + 500, min_idle_seconds=3600)
    a, b = _docs(s3, 2)
    path_a, path_b = cache.path(a), cache.path(b)
    # both used within the idle window: the bound is soft rather than pull a file from a step
    assert Path(path_a).is_file() and Path(path_b).is_file() and cache.evicted_files == 0

    cache.min_idle_seconds = 0
    text_uri = _docs(s3, 3)[2]
    offsets_key = parsed_document_prefix("t1", "s1", "d2") + "offsets.json"
    s3.blobs.put(offsets_key, json.dumps(build_offsets("C" * SIZE, "d2")).encode())
    doc = {"doc_id": "d2", "ingest_status": "PARSED", "text_s3_uri": text_uri,
           "offsets_s3_uri": s3.blobs.uri(offsets_key)}  # fmt: skip
    assert cache.text(doc).slice(0, 3) == "CCC"  # type: ignore[arg-type]
    assert not Path(path_a).exists() and not Path(path_b).exists()
    assert cache.cached_bytes <= cache.max_bytes

    cache.path(a)  # the text is evicted now: its open TextFile is no longer kept
    assert text_uri not in cache._texts
    assert Path(cache.path(text_uri)).read_bytes() == b"C" * SIZE


def test_dropping_a_session_forgets_its_bytes(s3: Storage, tmp_path: Path) -> None:
    cache = DocumentCache(s3, tmp_path / "doc-cache", max_bytes=10 * SIZE, min_idle_seconds=0)
    for uri in _docs(s3, 2, "gone") + _docs(s3, 1, "kept"):
        cache.path(uri)
    assert cache.cached_bytes == 3 * SIZE
    assert cache.drop_session("t1", "gone") == 2
    assert cache.cached_bytes == SIZE and cache.cached_sessions() == [("t1", "kept")]
