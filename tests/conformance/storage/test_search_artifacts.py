"""Session search artifacts on both back ends (embedded; S3 on a moto server):
every node answers the same hits from the one artifact the ingestion worker
published; a document added later gets a new index version; a corrupt or
mismatched artifact is a clear tool error; a tenant never reads another
tenant's artifact. Real ingestion worker, real SQLite files, real HTTP to moto."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.control.corpus import DocumentCache
from rlm_rs.control.tools import ToolResolver
from rlm_rs.domain import SessionRecord, consumed_zero, default_budgets
from rlm_rs.errors import RlmError
from rlm_rs.ingestion.indexing import SessionIndexer
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, keys, open_storage
from rlm_rs.storage.search import SearchIndex, artifact_doc_ids
from rlm_rs.storage.uploads import store_upload
from rlm_rs.v1.common_pb2 import SearchRequest, ToolRequests
from tests.conformance.storage.conftest import make_settings

TEXTS = {
    "light.txt": "The Harrow Point light was first lit in 1852. Its lamp burned colza oil.",
    "log.txt": "The keeper wrote the weather in the log each morning, and the oil used.",
}
LATER = ("storm.txt", "A great storm in 1881 broke the lantern glass; the colza lamp was saved.")


@dataclass
class Shared:
    storage: Storage
    settings: Settings
    tmp: Path

    def node(self, name: str) -> tuple[DocumentCache, SearchIndex]:
        """Another node on the same storage: its own document cache and reader."""
        docs = DocumentCache(self.storage, self.tmp / name / "doc-cache")
        return docs, SearchIndex(docs.verified_path)


@pytest.fixture(params=["embedded", "aws"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, endpoint)
    storage = open_storage(settings)
    storage.init()
    yield Shared(storage, settings, tmp_path)
    storage.close()


def _register(shared: Shared, tenant: str, session_id: str, files: dict[str, str], start: int = 0) -> None:
    for index, (name, text) in enumerate(files.items(), start):
        uri = store_upload(shared.storage.blobs, tenant, name, text.encode())
        shared.storage.metadata.put_document({
            "tenant_id": tenant, "session_id": session_id, "doc_id": f"doc_{index}", "doc_index": index,
            "source_name": name, "mime_type": "text/plain", "raw_s3_uri": uri, "ingest_status": "REGISTERED",
        })  # fmt: skip


def _ready_session(shared: Shared, tenant: str = "acme", session_id: str = "sess_s") -> SessionRecord:
    _register(shared, tenant, session_id, TEXTS)
    shared.storage.metadata.put_session({
        "tenant_id": tenant, "session_id": session_id, "status": "CREATING", "created_at": "2026-01-01T00:00:00Z",
        "ttl_epoch": int(time.time() + 3600), "options": {"enable_search": True, "readiness_mode": "STRICT"},
        "doc_count": len(TEXTS),
    })  # fmt: skip
    IngestionWorker(shared.storage, shared.settings).run_once()
    session = shared.storage.metadata.get_session(tenant, session_id)
    assert session["status"] == "READY", session
    return session


def _resolve(storage: Storage, index: SearchIndex, session: SessionRecord, query: str) -> dict[str, Any]:
    """One search through the control plane's tool resolution (what ResolveTools and steps use)."""
    resolver = ToolResolver(storage, ScriptedProvider({"executions": []}), index)
    consumed = consumed_zero()
    requests = ToolRequests(search=[SearchRequest(key="q", query=query, k=5)])
    resolution = resolver.resolve(requests, tenant_id=session["tenant_id"], session=session, sub_model="sub",
                                  budgets=default_budgets(), consumed=consumed)  # fmt: skip
    resolver.scheduler.close()
    return {"status": resolution.statuses["q"], **resolution.search["q"]}


def test_every_node_answers_the_same_hits_from_one_published_artifact(shared: Shared) -> None:
    session = _ready_session(shared)
    ref = session["search_index"]
    assert ref["version"] == 1 and sorted(ref["doc_ids"]) == ["doc_0", "doc_1"]
    docs = shared.storage.metadata.list_documents("sess_s")
    assert {d["ingest_status"] for d in docs} == {"INDEXED"}  # search_ready only after the commit
    assert ref["key"].startswith(keys.search_session_prefix("acme", "sess_s"))
    assert shared.storage.blobs.head(ref["key"]) is not None
    (_, a), (b_docs, b) = shared.node("a"), shared.node("b")
    hits_a, hits_b = a.search(session, "colza oil lamp"), b.search(session, "colza oil lamp")
    assert hits_a and hits_a == hits_b
    assert hits_a[0]["doc_index"] == 0 and "colza" in hits_a[0]["preview"]
    assert b.search(session, "colza", doc_ids=["doc_1"]) == []  # the filter holds
    local = Path(b_docs.verified_path(ref["key"], ref["sha256"]))
    assert artifact_doc_ids(local) == ["doc_0", "doc_1"]
    if shared.settings.storage_backend == "aws":  # B searches its own verified, read-only copy
        assert local.is_relative_to(shared.tmp / "b" / "doc-cache")
        shared.storage.blobs.delete(ref["key"])
        assert b.search(session, "colza oil lamp") == hits_b  # fetched once: no second download


def test_a_document_added_later_gets_a_new_index_version_every_node_sees(shared: Shared) -> None:
    session = _ready_session(shared)
    _, b = shared.node("b")
    assert b.search(session, "storm lantern") == []  # B has version 1 cached
    meta = shared.storage.metadata
    _register(shared, "acme", "sess_s", dict([LATER]), start=2)
    meta.update_session("acme", "sess_s", {"status": "CREATING"})  # the session takes a new document
    IngestionWorker(shared.storage, shared.settings).run_once()
    updated = meta.get_session("acme", "sess_s")
    assert updated["status"] == "READY" and updated["search_index"]["version"] == 2
    assert sorted(updated["search_index"]["doc_ids"]) == ["doc_0", "doc_1", "doc_2"]
    assert updated["search_index"]["key"] != session["search_index"]["key"]
    hits = b.search(updated, "storm lantern")
    assert hits and hits[0]["doc_index"] == 2
    _, c = shared.node("c")
    assert c.search(updated, "storm lantern") == hits
    assert {d["search_version"] for d in meta.list_documents("sess_s")} >= {2}


def _parsed_waiting_for_the_index(shared: Shared, session_id: str) -> None:
    """A search session whose documents are parsed and INDEXING, with no build
    running (as a builder that died leaves it: its lease gone)."""
    meta = shared.storage.metadata
    _register(shared, "acme", session_id, TEXTS)
    meta.put_session({"tenant_id": "acme", "session_id": session_id, "status": "CREATING",
                      "options": {"enable_search": True}, "doc_count": 2})  # fmt: skip
    worker = IngestionWorker(shared.storage, shared.settings)
    for doc in meta.list_documents(session_id):
        meta.update_document(session_id, doc["doc_id"], {"ingest_status": "PARSING"})
        assert worker._parse(meta.get_session("acme", session_id), doc)
        meta.update_document(session_id, doc["doc_id"], {"ingest_status": "INDEXING"})


def test_a_build_left_unfinished_is_done_by_the_next_worker_pass(shared: Shared) -> None:
    _parsed_waiting_for_the_index(shared, "sess_u")
    assert "search_index" not in shared.storage.metadata.get_session("acme", "sess_u")
    IngestionWorker(shared.storage, shared.settings).run_once()
    session = shared.storage.metadata.get_session("acme", "sess_u")
    assert session["status"] == "READY" and session["search_index"]["version"] == 1
    assert shared.node("b")[1].search(session, "colza oil")


def test_racing_builders_commit_one_version_and_index_every_document(shared: Shared) -> None:
    meta = shared.storage.metadata
    _parsed_waiting_for_the_index(shared, "sess_r")
    session = meta.get_session("acme", "sess_r")
    results: list[Any] = []
    builders = [
        threading.Thread(target=lambda: results.append(SessionIndexer(shared.storage).index(session)))
        for _ in range(3)
    ]
    for thread in builders:
        thread.start()
    for thread in builders:
        thread.join(60)
    assert len(results) == 3 and len({r.version for r in results}) == 1  # the losers adopted the winner's
    committed = meta.get_session("acme", "sess_r")["search_index"]
    assert committed["version"] == 1 and committed["key"] == results[0].key
    assert {d["ingest_status"] for d in meta.list_documents("sess_r")} == {"INDEXED"}


def test_a_corrupt_or_mismatched_artifact_is_a_clear_search_error(shared: Shared) -> None:
    session = _ready_session(shared)
    _, b = shared.node("b")
    wrong_digest: SessionRecord = {**session, "search_index": {**session["search_index"], "sha256": "0" * 64}}
    with pytest.raises(RlmError) as caught:
        b.search(wrong_digest, "colza")
    assert caught.value.code == "CHECKSUM_MISMATCH" and "digest" in caught.value.message
    # the stored bytes themselves damaged (the record's digest is right)
    ref = session["search_index"]
    data = bytearray(shared.storage.blobs.get(ref["key"]))
    data[len(data) // 2 :] = b"\0" * (len(data) - len(data) // 2)
    local = shared.storage.blobs.local_path(ref["key"])
    if local is not None:
        local.chmod(0o644)
        local.write_bytes(bytes(data))
    else:
        shared.storage.blobs.delete(ref["key"])
        shared.storage.blobs.put(ref["key"], bytes(data))
    c_docs, c = shared.node("c")
    answer = _resolve(shared.storage, c, session, "colza")
    assert answer["status"] == "error" and answer["hits"] == []
    assert answer["meta"]["error"].startswith("CHECKSUM_MISMATCH"), answer
    assert c_docs.cached_bytes == 0  # no bad copy is kept
    missing: SessionRecord = {k: v for k, v in session.items() if k != "search_index"}  # type: ignore[assignment]
    assert _resolve(shared.storage, c, missing, "colza")["meta"]["error"].startswith("SESSION_NOT_READY")


def test_a_tenant_never_reads_another_tenants_artifact(shared: Shared) -> None:
    victim = _ready_session(shared, "victim", "sess_v")
    attacker = _ready_session(shared, "mallory", "sess_m")
    _, node = shared.node("b")
    assert node.search(victim, "colza oil")  # the victim's artifact is real and readable by the victim
    # 1. the attacker's session record points at the victim's artifact (valid digest)
    pointed: SessionRecord = {**attacker, "search_index": victim["search_index"]}
    answer = _resolve(shared.storage, node, pointed, "colza oil")
    assert answer["status"] == "error" and answer["hits"] == []
    assert "not in its own folder" in answer["meta"]["error"]
    # 2. the victim's bytes copied into the attacker's own folder, digest recorded to match
    ref = victim["search_index"]
    stolen = shared.storage.blobs.get(ref["key"])
    key = keys.search_artifact_key("mallory", "sess_m", 9, ref["sha256"])
    shared.storage.blobs.put(key, stolen)
    copied: SessionRecord = {**attacker, "search_index": {**ref, "key": key, "version": 9}}
    answer = _resolve(shared.storage, node, copied, "colza oil")
    assert answer["status"] == "error" and "belongs to another session" in answer["meta"]["error"]
