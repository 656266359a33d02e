"""The ingestion worker on real embedded storage, in-process and via the HTTP parser."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from rlm_rs.control.corpus import DocumentCache
from rlm_rs.ingestion.service import create_app
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.storage.search import SearchIndex
from rlm_rs.textfile import TextFile
from tests.integration.ingestion.conftest import register_session, serve, statuses
from tests.unit.ingestion.conftest import HTML, make_docx, make_pdf

GOOD = [
    ("report.pdf", make_pdf(["Revenue grew 12% in Lisbon.", "Risks: currency."]), "application/pdf"),
    ("review.docx", make_docx(), ""),
    ("notes.html", HTML, "text/html"),
    ("plain.txt", "Zürich lease ends in 2027.\n".encode(), "text/plain"),
]  # fmt: skip
BAD = ("broken.pdf", b"%PDF-1.4 truncated", "application/pdf")


def test_documents_are_parsed_and_the_session_becomes_ready(storage: Storage, settings: Settings) -> None:
    register_session(storage, GOOD)
    assert IngestionWorker(storage, settings).run_once() == 4
    assert statuses(storage) == ["PARSED"] * 4
    session = storage.metadata.get_session("t1", "s1")
    assert session["status"] == "READY" and session["total_chars"] > 0
    for doc in storage.metadata.list_documents("s1"):
        assert doc["text_s3_uri"] == storage.blobs.uri(f"parsed/t1/s1/{doc['doc_id']}/text.txt")
        text_path = storage.blobs.local_path(doc["text_s3_uri"].split("/", 3)[3])
        offsets_path = storage.blobs.local_path(doc["offsets_s3_uri"].split("/", 3)[3])
        text = TextFile.open_path(str(text_path), str(offsets_path))
        assert len(text) == doc["char_length"] and doc["text_checksum"].startswith("sha256:")
    assert IngestionWorker(storage, settings).run_once() == 0  # idempotent: nothing left


def test_strict_session_fails_when_a_document_fails(storage: Storage, settings: Settings) -> None:
    register_session(storage, [GOOD[3], BAD])
    IngestionWorker(storage, settings).run_once()
    docs = storage.metadata.list_documents("s1")
    assert [d["ingest_status"] for d in docs] == ["PARSED", "FAILED"]
    assert str(docs[1]["failure_reason"]).startswith("CORRUPT_DOCUMENT:")
    assert storage.metadata.get_session("t1", "s1")["status"] == "FAILED"


def test_lax_session_is_ready_with_one_good_document(storage: Storage, settings: Settings) -> None:
    register_session(storage, [BAD, GOOD[3]], readiness_mode="LAX")
    IngestionWorker(storage, settings).run_once()
    assert storage.metadata.get_session("t1", "s1")["status"] == "READY"


def test_lax_session_fails_when_every_document_fails(storage: Storage, settings: Settings) -> None:
    register_session(storage, [BAD], readiness_mode="LAX")
    IngestionWorker(storage, settings).run_once()
    assert storage.metadata.get_session("t1", "s1")["status"] == "FAILED"


def test_search_sessions_are_indexed_and_searchable(storage: Storage, settings: Settings) -> None:
    register_session(storage, GOOD, enable_search=True)
    worker = IngestionWorker(storage, settings)
    worker.run_once()
    assert statuses(storage) == ["INDEXED"] * 4
    assert storage.metadata.get_session("t1", "s1")["status"] == "READY"
    session = storage.metadata.get_session("t1", "s1")
    index = SearchIndex(DocumentCache(storage, settings.data_dir / "doc-cache").verified_path)
    hits = index.search(session, "Zürich lease", k=3)
    assert hits[0]["doc_index"] == 3 and hits[0]["preview"].startswith("Zürich")
    assert set(hits[0]) == {"score", "doc_index", "start_char", "end_char", "preview"}
    assert index.search(session, "Zürich", doc_ids=["d0"]) == []
    assert session["search_index"]["version"] == 1 and len(session["search_index"]["doc_ids"]) == 4


def test_two_workers_never_parse_the_same_document(storage: Storage, settings: Settings) -> None:
    register_session(storage, GOOD * 2)
    workers = [IngestionWorker(storage, settings, owner=f"w{i}") for i in range(2)]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda w=w: counts.append(w.run_once())) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum(counts) == 8 and statuses(storage) == ["PARSED"] * 8
    assert storage.metadata.get_session("t1", "s1")["status"] == "READY"


@pytest.fixture
def parser_service(storage: Storage) -> Iterator[str]:
    with serve(create_app(storage.blobs)) as url:
        yield url


def test_parse_contract_over_http(storage: Storage, parser_service: str) -> None:
    storage.blobs.put("raw/x/plain.txt", b"hello world")
    body = {"request_id": "r1", "source": {"s3_uri": storage.blobs.uri("raw/x/plain.txt")},
            "output": {"s3_prefix": "parsed/t1/s1/dx"}, "options": {"timeout_seconds": 30}}  # fmt: skip
    response = httpx.post(f"{parser_service}/parse", json=body).json()
    assert response["status"] == "success" and response["request_id"] == "r1"
    assert response["outputs"]["text_s3_uri"] == storage.blobs.uri("parsed/t1/s1/dx/text.txt")
    assert response["stats"]["char_length"] == 11 and response["text_checksum"].startswith("sha256:")
    assert json.loads(storage.blobs.get("parsed/t1/s1/dx/meta.json"))["doc_id"] == "dx"
    storage.blobs.put("raw/x/img.png", b"\x89PNG")
    body["source"] = {"s3_uri": storage.blobs.uri("raw/x/img.png")}
    failed = httpx.post(f"{parser_service}/parse", json=body).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "UNSUPPORTED_FORMAT"
    invalid = httpx.post(f"{parser_service}/parse", json={"request_id": 1})
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "VALIDATION_ERROR"
    missing = httpx.post(
        f"{parser_service}/parse",
        json={**body, "source": {"s3_uri": storage.blobs.uri("raw/none")}},
    )
    assert missing.status_code == 502 and missing.json()["error"]["code"] == "S3_READ_ERROR"


def test_worker_uses_the_parser_service_when_configured(
    storage: Storage, settings: Settings, parser_service: str
) -> None:
    register_session(storage, GOOD[2:])
    remote = settings.model_copy(update={"parser_service_url": parser_service})
    assert IngestionWorker(storage, remote).run_once() == 2
    assert storage.metadata.get_session("t1", "s1")["status"] == "READY"
