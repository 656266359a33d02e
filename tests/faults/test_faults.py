"""Faults on real processes: the sandbox pool killed mid-execution and
restarted (the control plane retries an unreachable pool for up to
SANDBOX_RETRY_SECONDS before a step counts as failed); the blob store failing transiently and permanently during
ingestion. Each: the expected status, nothing lost or duplicated, the system
serving the next request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from rlm_rs.control.server import start_control_plane
from rlm_rs.errors import RlmError
from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.scripted import ScriptedProvider
from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.v1 import execution_pb2, execution_pb2_grpc

SLOW_TURN = "```repl\ntry:\n    context[0].regex(r'(a|aa)+$')\nexcept RuntimeError:\n    state['work']['slow'] = True\n```"
FINAL_TURN = "```repl\ntool.FINAL('done after ' + str(state['work'].get('last_error', 'no error'))[:12])\n```"


def _start_pool(socket_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE"}
    return subprocess.Popen(
        [sys.executable, "-m", "rlm_rs.cli", "sandbox", "serve", "--socket", str(socket_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _wait_healthy(client: PoolSandbox, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.healthy(timeout=1.0):
            return
        time.sleep(0.1)
    raise AssertionError("pool did not become healthy")


def _register(storage: Storage, settings: Settings, text: bytes) -> str:
    storage.blobs.put("raw/f.txt", text)
    session = {"tenant_id": "t", "session_id": "s1", "status": "CREATING", "ttl_epoch": 4_000_000_000,
               "options": {"enable_search": False, "readiness_mode": "STRICT"}, "defaults": {}}  # fmt: skip
    storage.metadata.put_document({"tenant_id": "t", "session_id": "s1", "doc_id": "d0", "doc_index": 0,
                                   "source_name": "f.txt", "mime_type": "text/plain",
                                   "raw_s3_uri": storage.blobs.uri("raw/f.txt"),
                                   "ingest_status": "REGISTERED"})  # fmt: skip
    storage.metadata.put_session(session)
    IngestionWorker(storage, settings).run_once()
    return "s1"


def test_pool_killed_mid_execution_and_restarted(tmp_path: Path) -> None:
    socket_path = tmp_path / "pool.sock"
    settings = Settings(
        RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="p", LAMBDA_FUNCTION_NAME=str(socket_path)
    )
    storage = open_storage(settings)
    _register(storage, settings, b"a" * 60 + b"!")
    pool = _start_pool(socket_path)
    client = PoolSandbox(str(socket_path))
    _wait_healthy(client)
    provider = ScriptedProvider({"executions": [{"match": "", "root": [SLOW_TURN, SLOW_TURN, FINAL_TURN]}]})
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=client, provider=provider)
    key, _ = storage.metadata.create_api_key("t")
    auth = (("authorization", f"Bearer {key}"),)
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    stub = execution_pb2_grpc.ExecutionServiceStub(channel)
    restarted: dict[str, Any] = {}
    try:
        started = stub.StartExecution(
            execution_pb2.StartExecutionRequest(session_id="s1", question="q"), metadata=auth
        )
        time.sleep(0.3)  # the first (slow) step is now inside a pool worker
        os.killpg(pool.pid, signal.SIGKILL)
        pool.wait(10)

        def restart() -> None:
            time.sleep(1.0)
            socket_path.unlink(missing_ok=True)
            restarted["pool"] = _start_pool(socket_path)

        thread = threading.Thread(target=restart)
        thread.start()
        done = stub.WaitExecution(
            execution_pb2.WaitExecutionRequest(execution_id=started.execution_id, timeout_seconds=90),
            metadata=auth,
        )
        thread.join()
        steps = stub.ListSteps(
            execution_pb2.ListStepsRequest(execution_id=started.execution_id), metadata=auth
        ).steps
    finally:
        channel.close()
        plane.stop(1)
        for process in (pool, restarted.get("pool")):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(15)
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED, done.error
    assert "pool" in restarted
    # the step in flight when the pool died was retried once the pool was back
    # (steps are pure: nothing was committed twice), so no turn was wasted
    assert [s.turn_index for s in steps] == [0, 1, 2] and all(s.success for s in steps)
    assert steps[-1].final.is_final and done.answer == "done after no error"


class FlakyBlobs:
    """Test-only fault hook: the real blob store, failing `get` on demand."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def get(self, key: str) -> bytes:
        self.calls += 1
        if key.startswith("raw/") and self.failures > 0:
            self.failures -= 1
            raise RlmError("S3_READ_ERROR", "injected read failure", {"key": key})
        data: bytes = self.real.get(key)
        return data


@pytest.mark.parametrize(
    ("failures", "status", "reason"), [(2, "PARSED", None), (10, "FAILED", "S3_READ_ERROR")]
)
def test_blob_store_failures_during_ingestion(
    tmp_path: Path, failures: int, status: str, reason: str | None
) -> None:
    settings = Settings(RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="p")
    real = open_storage(settings)
    flaky = Storage(real.metadata, FlakyBlobs(real.blobs, failures))
    real.blobs.put("raw/f.txt", b"hello world")
    real.metadata.put_document({"tenant_id": "t", "session_id": "s1", "doc_id": "d0", "doc_index": 0,
                                "source_name": "f.txt", "mime_type": "text/plain",
                                "raw_s3_uri": real.blobs.uri("raw/f.txt"), "ingest_status": "REGISTERED"})  # fmt: skip
    real.metadata.put_session({"tenant_id": "t", "session_id": "s1", "status": "CREATING",
                               "options": {"readiness_mode": "STRICT"}})  # fmt: skip
    IngestionWorker(flaky, settings).run_once()
    (doc,) = real.metadata.list_documents("s1")
    assert doc["ingest_status"] == status
    if reason:
        assert str(doc["failure_reason"]).startswith(reason)
        assert real.metadata.get_session("t", "s1")["status"] == "FAILED"
    else:
        assert real.blobs.get(doc["text_s3_uri"].split("/", 3)[3]) == b"hello world"
    # the worker is still healthy: a new session parses on the next pass
    real.blobs.put("raw/g.txt", b"second")
    real.metadata.put_document({"tenant_id": "t", "session_id": "s2", "doc_id": "d0", "doc_index": 0,
                                "source_name": "g.txt", "mime_type": "text/plain",
                                "raw_s3_uri": real.blobs.uri("raw/g.txt"), "ingest_status": "REGISTERED"})  # fmt: skip
    real.metadata.put_session({"tenant_id": "t", "session_id": "s2", "status": "CREATING", "options": {}})
    IngestionWorker(real, settings).run_once()
    assert real.metadata.get_session("t", "s2")["status"] == "READY"


def test_100mb_single_line_text_is_parsed_without_hurting_the_worker(tmp_path: Path) -> None:
    """Not malformed, just hostile in shape: one 100 MB line. It parses (it is
    valid text), its offsets make it sliceable, and the next document parses too."""
    from rlm_rs.textfile import TextFile

    settings = Settings(RLM_DATA_DIR=tmp_path / "data", API_KEY_PEPPER="p")
    storage = open_storage(settings)
    line = ("word " * 20_000_000).encode()  # 100 MB, no newline
    storage.blobs.put("raw/line.txt", line)
    storage.metadata.put_document({"tenant_id": "t", "session_id": "s1", "doc_id": "d0", "doc_index": 0,
                                   "source_name": "line.txt", "mime_type": "text/plain",
                                   "raw_s3_uri": storage.blobs.uri("raw/line.txt"),
                                   "ingest_status": "REGISTERED"})  # fmt: skip
    storage.metadata.put_session({"tenant_id": "t", "session_id": "s1", "status": "CREATING", "options": {}})
    del line
    IngestionWorker(storage, settings).run_once()
    (doc,) = storage.metadata.list_documents("s1")
    # parser v2 drops the line's trailing space
    assert doc["ingest_status"] == "PARSED" and doc["char_length"] == 100_000_000 - 1
    text = TextFile.open_path(str(storage.blobs.local_path(doc["text_s3_uri"].split("/", 3)[3])),
                              str(storage.blobs.local_path(doc["offsets_s3_uri"].split("/", 3)[3])))  # fmt: skip
    assert text.slice(50_000_000, 50_000_010) == "word word "[:10]
    storage.blobs.put("raw/small.txt", b"next")
    storage.metadata.put_document({"tenant_id": "t", "session_id": "s2", "doc_id": "d0", "doc_index": 0,
                                   "source_name": "small.txt", "mime_type": "text/plain",
                                   "raw_s3_uri": storage.blobs.uri("raw/small.txt"),
                                   "ingest_status": "REGISTERED"})  # fmt: skip
    storage.metadata.put_session({"tenant_id": "t", "session_id": "s2", "status": "CREATING", "options": {}})
    IngestionWorker(storage, settings).run_once()
    assert storage.metadata.get_session("t", "s2")["status"] == "READY"
