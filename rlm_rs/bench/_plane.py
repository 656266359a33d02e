"""What `bench orchestrator` and `bench aws` share: a real control plane on
loopback (gRPC, the in-process sandbox, the scripted provider of SCRIPT, so
model latency is ~0) over a given storage, with an API key, one ingested
session and its storage round-trips counted; and a moto server in its own
process. Never used by a deployment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rlm_rs.bench._storage_calls import CallLog, count_storage_calls

# Three turns: read, a sub-call + YIELD, FINAL.
SCRIPT = {
    "executions": [{"match": "", "root": [
        "```repl\nhits = context[0].find('Lisbon')\nstate['work']['hits'] = len(hits)\nprint(hits[:1])\n```",
        "```repl\ntool.queue_llm('city', 'Which office grew fastest? ' + context[0][:200])\n"
        "tool.YIELD()\n```",
        "```repl\ncontext[0].find('Lisbon')\ntool.FINAL(state['_tool_results']['llm']['city']['text'])\n```",
    ]}],
    "sub": [{"match": "office", "text": "Lisbon"}],
    "default_sub": "?",
}  # fmt: skip
TURNS = 3
TEXT = ("The Lisbon office grew fastest. " * 400).encode()


@dataclass
class BenchPlane:
    """A running control plane, its storage (calls counted when
    `calls.enabled`), and a synchronous StartExecution of the session."""

    storage: Any
    plane: Any
    calls: CallLog
    stub: Any
    request: Any
    auth: tuple[tuple[str, str], ...]

    def start_execution(self, _: int = 0) -> str:
        """One synchronous 3-turn execution; its final status (the domain's name)."""
        from rlm_rs.wire_enums import EXECUTION_STATUS

        return str(
            EXECUTION_STATUS.to_domain(self.stub.StartExecution(self.request, metadata=self.auth).status)
        )


@contextmanager
def bench_plane(settings: Any, *, init_storage: bool = False) -> Iterator[BenchPlane]:
    """A control plane on `settings` with one READY session; stopped on exit."""
    import grpc

    from rlm_rs.control.server import start_control_plane
    from rlm_rs.providers.scripted import ScriptedProvider
    from rlm_rs.sandbox.client import InProcessSandbox
    from rlm_rs.storage import open_storage
    from rlm_rs.v1 import execution_pb2, execution_pb2_grpc

    storage = open_storage(settings)
    if init_storage:
        storage.init()
    calls = count_storage_calls(storage)
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox(),
                                provider=ScriptedProvider(SCRIPT))  # fmt: skip
    key, _ = storage.metadata.create_api_key("bench")
    auth = (("authorization", f"Bearer {key}"),)
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    try:
        request = execution_pb2.StartExecutionRequest(
            session_id=_ready_session(storage, settings, channel, auth),
            question="Which office grew fastest?",
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=120),
        )
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        yield BenchPlane(storage, plane, calls, stub, request, auth)
    finally:
        channel.close()
        plane.stop(1)
        storage.close()


def _ready_session(storage: Any, settings: Any, channel: Any, auth: tuple[tuple[str, str], ...]) -> str:
    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.storage.uploads import store_upload
    from rlm_rs.v1 import session_pb2, session_pb2_grpc

    uri = store_upload(storage.blobs, "bench", "bench.txt", TEXT)
    session = session_pb2_grpc.SessionServiceStub(channel).CreateSession(
        session_pb2.CreateSessionRequest(docs=[session_pb2.DocumentInput(
            source_name="bench.txt", mime_type="text/plain", raw_s3_uri=uri)]),
        metadata=auth)  # fmt: skip
    IngestionWorker(storage, settings).run_once()
    return str(session.session_id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """A moto server (DynamoDB + S3) in its own process on loopback, and its
    URL; this process's boto3 clients get dummy credentials unless it has some."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the moto server did not start")
