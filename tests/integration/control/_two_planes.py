"""Two real control-plane processes on one store, for takeover and fencing tests.

Each plane is `rlm-rs server` on its own loopback port with the `openai`
provider pointed at a local OpenAI-compatible server, a short lease and the
in-process sandbox. The helpers start and stop planes, make a READY session
of one stored document through the first plane, and wait on an execution
through the other. They never choose what a test kills or pauses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage
from rlm_rs.v1 import execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc

Auth = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    env: dict[str, str], llm_url: str, port: int, *, lease_seconds: float, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """One control plane on 127.0.0.1:`port` with `env` (its store) over this
    process's environment; its stderr goes to `log` when given."""
    full = {
        **os.environ, **env, "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm_url,
        "OPENAI_API_KEY": "sk-test", "RLM_LLM_MAX_RETRIES": "0",
    }  # fmt: skip
    full.pop("LAMBDA_FUNCTION_NAME", None)
    command = [
        sys.executable, "-m", "rlm_rs.cli", "server", "--grpc-address", f"127.0.0.1:{port}",
        "--lease-seconds", f"{lease_seconds:g}", "--sweep-seconds", "0.3",
        "--dev-unsandboxed",  # no pool in these tests: steps run in the control plane
    ]  # fmt: skip
    if log is None:
        return subprocess.Popen(command, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("wb") as out:
        return subprocess.Popen(command, env=full, stdout=subprocess.DEVNULL, stderr=out)


def wait_ready(port: int, timeout: float = 30) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=timeout)
    channel.close()


def ready_session(
    channel: grpc.Channel, auth: Auth, raw_uri: str, storage: Storage, settings: Settings
) -> str:
    """A session of the one text document at `raw_uri`, ingested here: its id."""
    doc = session_pb2.DocumentInput(source_name="a.txt", mime_type="text/plain", raw_s3_uri=raw_uri)
    session = session_pb2_grpc.SessionServiceStub(channel).CreateSession(
        session_pb2.CreateSessionRequest(docs=[doc]), metadata=auth
    )
    IngestionWorker(storage, settings).run_once()
    return str(session.session_id)


def start_execution(channel: grpc.Channel, auth: Auth, session_id: str, question: str) -> Any:
    return execution_pb2_grpc.ExecutionServiceStub(channel).StartExecution(
        execution_pb2.StartExecutionRequest(session_id=session_id, question=question), metadata=auth
    )


def wait_execution(port: int, auth: Auth, execution_id: str) -> execution_pb2.Execution:
    """The execution once finished (up to 60 s), asked of the plane on `port`."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        waited: execution_pb2.Execution = execution_pb2_grpc.ExecutionServiceStub(channel).WaitExecution(
            execution_pb2.WaitExecutionRequest(execution_id=execution_id, timeout_seconds=60), metadata=auth
        )
    finally:
        channel.close()
    return waited


def stop(processes: Iterable[subprocess.Popen[bytes] | None]) -> None:
    """Each plane still running resumed (if paused), terminated and reaped."""
    for process in processes:
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
            process.wait(15)
