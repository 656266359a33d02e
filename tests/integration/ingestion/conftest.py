"""Embedded storage in a temp dir, a helper that registers a session the way
the control plane does (session CREATING, documents REGISTERED), and one that
serves an app (the parser service) over real HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="p")


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    store = open_storage(settings)
    yield store
    store.close()


def register_session(
    storage: Storage,
    files: list[tuple[str, bytes, str]],
    *,
    session_id: str = "s1",
    tenant_id: str = "t1",
    readiness_mode: str = "STRICT",
    enable_search: bool = False,
) -> None:
    for index, (name, data, mime) in enumerate(files):
        key = f"raw/{tenant_id}/{session_id}/{index}/{name}"
        storage.blobs.put(key, data)
        storage.metadata.put_document({
            "tenant_id": tenant_id, "session_id": session_id, "doc_id": f"d{index}",
            "doc_index": index, "source_name": name, "mime_type": mime,
            "raw_s3_uri": storage.blobs.uri(key), "ingest_status": "REGISTERED",
        })  # fmt: skip
    # the session last, as the control plane does: a worker never sees it without its documents
    storage.metadata.put_session({
        "tenant_id": tenant_id, "session_id": session_id, "status": "CREATING",
        "options": {"enable_search": enable_search, "readiness_mode": readiness_mode},
        "doc_count": len(files), "created_at": "2026-11-24T00:00:00Z",
    })  # fmt: skip


def statuses(storage: Storage, session_id: str = "s1") -> list[Any]:
    return [d["ingest_status"] for d in storage.metadata.list_documents(session_id)]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free port; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
