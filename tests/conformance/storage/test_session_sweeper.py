"""The session sweeper on both back ends: an expired session's data (parsed
text, search index artifacts, offloaded state, trace, offloaded contexts, the
sub-call cache entries it wrote, step and event records, every node's
document cache) is removed; another live session's data is not. Real engine,
real ingestion, real sandbox steps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.control.executions import ExecutionEngine, finish
from rlm_rs.control.lifecycle import SessionReaper
from rlm_rs.domain.records import SessionRecord
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import InProcessSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.metadata import PURGED
from rlm_rs.storage.uploads import store_upload
from tests.conformance.storage.conftest import make_settings

TENANT = "acme"
TEXT = "The Harrow Point light was first lit in 1852. Its lamp burned colza oil. " * 40
BIG_STATE_STEP = (
    "head = context[0][0:60]\n"
    "state['work']['big'] = 'x' * 400000\n"  # past the inline limit: offloaded to a state object
    "tool.queue_llm('gist', 'Summarise: ' + head)\n"
    "tool.queue_search('oil', 'colza oil', k=3)\n"
)
# CONTEXTS mode: the span the search found, past the (lowered) inline limit: a contexts/ blob
CONTEXTS_STEP = (
    "hit = state['_tool_results']['search']['oil']['hits'][0]\n"
    "context[0].slice(hit['start_char'], hit['start_char'] + 1500, tag='context')\n"
    "tool.FINAL('found')\n"
)


@dataclass
class Node:
    storage: Storage
    settings: Settings
    engine: ExecutionEngine
    reaper: SessionReaper


@pytest.fixture(params=["embedded", "aws"])
def node(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    from rlm_rs.storage import open_storage

    monkeypatch.setattr(finish, "CONTEXTS_INLINE_LIMIT_CHARS", 1000)
    endpoint = request.getfixturevalue("moto_endpoint") if request.param == "aws" else None
    settings = make_settings(request.param, tmp_path, endpoint)
    storage = open_storage(settings)
    storage.init()
    provider = ScriptedProvider({"executions": [], "sub": [], "default_sub": "a lighthouse"})
    engine = ExecutionEngine(storage, settings, InProcessSandbox(), provider)
    reaper = SessionReaper(storage, cancel=engine.cancel, docs=engine.docs, settle_seconds=0)
    yield Node(storage, settings, engine, reaper)
    engine.close()
    storage.close()


def _session(node: Node, name: str) -> SessionRecord:
    """A READY, search-enabled session of one document, through the real ingestion worker."""
    meta = node.storage.metadata
    uri = store_upload(node.storage.blobs, TENANT, f"{name}.txt", (name + ": " + TEXT).encode())
    session: SessionRecord = {
        "tenant_id": TENANT, "session_id": f"sess_{name}", "status": "CREATING",
        "created_at": "2026-01-01T00:00:00Z", "expires_at": "", "ttl_epoch": int(time.time() + 3600),
        "doc_count": 1, "total_chars": 0, "options": {"enable_search": True, "readiness_mode": "STRICT"},
        "defaults": {},
    }  # fmt: skip
    meta.put_document({"tenant_id": TENANT, "session_id": session["session_id"], "doc_id": "doc_0",
                       "doc_index": 0, "source_name": f"{name}.txt", "mime_type": "text/plain",
                       "raw_s3_uri": uri, "ingest_status": "REGISTERED", "ttl_epoch": session["ttl_epoch"]})  # fmt: skip
    meta.put_session(dict(session))
    IngestionWorker(node.storage, node.settings).run_once()
    ready = meta.get_session(TENANT, session["session_id"])
    assert ready["status"] == "READY", ready
    return ready


def _run(node: Node, session: SessionRecord, prompt_word: str) -> str:
    """A runtime execution with an offloaded state, a cached sub-call, a search
    (the artifact in the node's cache), offloaded contexts and a trace."""
    engine = node.engine
    options = {"output_mode": "CONTEXTS"}
    execution = engine.create(
        TENANT, session, mode="RUNTIME", question="", models={}, budgets={}, options=options
    )
    step = engine.runtime_step(
        TENANT, execution["execution_id"], BIG_STATE_STEP.replace("Summarise", prompt_word), None, True
    )
    assert step.success, step.error
    final = engine.runtime_step(TENANT, execution["execution_id"], CONTEXTS_STEP, None, False)
    assert final.success and engine.get(TENANT, execution["execution_id"])["status"] == "COMPLETED"
    return str(execution["execution_id"])


def _footprint(node: Node, session_id: str, execution_id: str) -> dict[str, Any]:
    blobs, meta = node.storage.blobs, node.storage.metadata
    return {
        "parsed": list(blobs.list(f"parsed/{TENANT}/{session_id}/")),
        "state": list(blobs.list(f"state/{TENANT}/{execution_id}/")),
        "traces": list(blobs.list(f"traces/{TENANT}/{session_id}/")),
        "contexts": list(blobs.list(f"contexts/{TENANT}/{session_id}/")),
        "search": list(blobs.list(f"search/{TENANT}/{session_id}/")),
        "cache": list(blobs.list(f"cache/{TENANT}/sessions/{session_id}/")),  # one marker per entry written
        "records": meta.items.query("execution_state", f"EXEC#{execution_id}"),
        "doc_cache": _cached_files(node.settings.data_dir / "doc-cache", session_id),
    }


def _cached_files(cache_dir: Path, session_id: str) -> list[str]:
    """A node's downloaded copies of the session: parsed text and search artifacts."""
    return sorted(str(p) for p in cache_dir.rglob("*.*") if session_id in str(p))


def test_sweeper_removes_an_expired_sessions_data_and_nothing_else(node: Node) -> None:
    meta, blobs = node.storage.metadata, node.storage.blobs
    doomed, kept = _session(node, "doomed"), _session(node, "kept")
    doomed_exec, kept_exec = _run(node, doomed, "Summarise"), _run(node, kept, "Condense")
    before, kept_before = (
        _footprint(node, doomed["session_id"], doomed_exec),
        _footprint(node, kept["session_id"], kept_exec),
    )
    cache_entries = list(blobs.list(f"cache/{TENANT}/llm/"))
    assert len(cache_entries) == 2
    for name in ("parsed", "state", "traces", "contexts", "search", "cache", "records"):
        assert before[name], name  # the attack surface really existed
    local_text = node.engine.docs.path(meta.list_documents(doomed["session_id"])[0]["text_s3_uri"])
    assert Path(local_text).is_file()  # embedded: the blob itself; aws: the node's downloaded copy
    if node.settings.storage_backend == "aws":
        assert any("/search/" in p for p in before["doc_cache"]), before["doc_cache"]

    meta.update_session(TENANT, doomed["session_id"], {"ttl_epoch": int(time.time()) - 1})
    assert node.reaper.sweep() == 1

    after = _footprint(node, doomed["session_id"], doomed_exec)
    assert after == {
        "parsed": [],
        "state": [],
        "traces": [],
        "contexts": [],
        "search": [],
        "cache": [],
        "records": [],
        "doc_cache": [],
    }
    assert not Path(local_text).exists()
    assert len(list(blobs.list(f"cache/{TENANT}/llm/"))) == 1  # only the kept session's entry is left
    assert meta.get_session(TENANT, doomed["session_id"])["status"] == "EXPIRED"
    scrubbed = meta.get_execution(TENANT, doomed_exec)
    assert scrubbed["answer"] is None and scrubbed["citations"] == [] and scrubbed["status"] == "COMPLETED"
    assert _footprint(node, kept["session_id"], kept_exec) == kept_before  # the live session is untouched
    assert meta.get_session(TENANT, kept["session_id"])["status"] == "READY"
    uploads = list(blobs.list(f"raw/{TENANT}/"))
    assert len(uploads) == 2  # raw uploads are the tenant's, not the session's

    # a second pass after the settle window takes it out of the status index;
    # its records go once they are past their TTL (DynamoDB's TTL on AWS)
    node.reaper.sweep()
    assert [s["session_id"] for s in meta.sessions_with_status(PURGED)] == [doomed["session_id"]]
    assert meta.sessions_with_status("EXPIRED") == []
    node.reaper.sweep(now=time.time() + node.reaper.tombstone_seconds + 60)
    assert meta.find_session(doomed["session_id"]) is None
    assert (
        meta.list_executions(doomed["session_id"]) == [] and meta.list_documents(doomed["session_id"]) == []
    )


def test_every_node_drops_its_own_copies_of_a_deleted_session(node: Node, tmp_path: Path) -> None:
    """Node A deletes a session; node B (its own document cache on the same
    shared storage, holding the session's text and search artifact) drops its
    copies on its next sweep, and the artifact is gone from the blob store."""
    from rlm_rs.control.corpus import DocumentCache
    from rlm_rs.storage.search import SearchIndex

    meta = node.storage.metadata
    b_cache = tmp_path / "node-b" / "doc-cache"
    b_docs = DocumentCache(node.storage, b_cache)
    b_reaper = SessionReaper(node.storage, cancel=node.engine.cancel, docs=b_docs)
    session = _session(node, "shared")
    doc = meta.list_documents(session["session_id"])[0]
    assert SearchIndex(b_docs.verified_path).search(session, "colza oil")  # B fetched the artifact
    b_text = Path(b_docs.path(doc["text_s3_uri"]))
    artifact = session["search_index"]["key"]
    b_artifact = Path(b_docs.verified_path(artifact, session["search_index"]["sha256"]))
    assert b_text.is_file() and b_artifact.is_file()
    if node.settings.storage_backend == "aws":  # B's own downloads
        assert len(_cached_files(b_cache, session["session_id"])) == 2  # the text and the artifact

    node.reaper.delete(TENANT, session["session_id"])  # on node A

    assert list(node.storage.blobs.list(f"search/{TENANT}/{session['session_id']}/")) == []
    b_reaper.sweep()
    assert not b_text.exists() and not b_artifact.exists()  # embedded: the blobs A deleted; aws: B's copies
    assert b_docs.cached_sessions() == [] and _cached_files(b_cache, session["session_id"]) == []
