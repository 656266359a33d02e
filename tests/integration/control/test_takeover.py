"""Two real control-plane processes; SIGKILL the one running an execution; the
other takes the lease over and finishes it without repeating the sub-call."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from rlm_rs.ingestion.worker import IngestionWorker
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.v1 import execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc

TURN_1 = "```repl\ntool.queue_llm('city', 'Name the city: ' + context[0][:44])\ntool.YIELD()\n```"
TURN_2 = "```repl\ncontext[0].find('Lisbon')\ntool.FINAL(state['_tool_results']['llm']['city']['text'])\n```"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, base_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RLM_DATA_DIR": str(data_dir),
        "API_KEY_PEPPER": "pepper",
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-test",
        "RLM_LLM_MAX_RETRIES": "0",
    }
    env.pop("LAMBDA_FUNCTION_NAME", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlm_rs.cli",
            "server",
            "--grpc-address",
            f"127.0.0.1:{port}",
            "--lease-seconds",
            "2",
            "--sweep-seconds",
            "0.3",
            "--dev-unsandboxed",  # no pool in this test: steps run in the control plane
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(port: int) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    channel.close()


def _kill_mid_run(
    tmp_path: Path, reply: Callable[[list[dict[str, str]]], str], stalled: threading.Event
) -> tuple[execution_pb2.Execution, Storage, str, list[dict[str, Any]]]:
    """Two control planes on one data dir; start an execution on the first,
    SIGKILL it once `stalled` is set, wait for the result on the second.
    Returns (result, storage, execution id, the sub-calls the provider saw)."""
    data_dir = tmp_path / "data"
    settings = Settings(RLM_DATA_DIR=data_dir, API_KEY_PEPPER="pepper")
    storage = open_storage(settings)
    key, _ = storage.metadata.create_api_key("t")
    storage.blobs.put("raw/t/u1/a.txt", b"Our fastest-growing office is in Lisbon, Portugal.")
    auth = (("authorization", f"Bearer {key}"),)
    with OpenAICompatibleServer(reply) as llm:
        port_a, port_b = _free_port(), _free_port()
        first, second = _serve(data_dir, llm.base_url, port_a), _serve(data_dir, llm.base_url, port_b)
        try:
            _wait_ready(port_a)
            _wait_ready(port_b)
            channel_a = grpc.insecure_channel(f"127.0.0.1:{port_a}")
            session = session_pb2_grpc.SessionServiceStub(channel_a).CreateSession(
                session_pb2.CreateSessionRequest(
                    docs=[
                        session_pb2.DocumentInput(
                            source_name="a.txt",
                            mime_type="text/plain",
                            raw_s3_uri="s3://rlm-rs/raw/t/u1/a.txt",
                        )
                    ]
                ),
                metadata=auth,
            )
            IngestionWorker(storage, settings).run_once()
            started = execution_pb2_grpc.ExecutionServiceStub(channel_a).StartExecution(
                execution_pb2.StartExecutionRequest(session_id=session.session_id, question="Which city?"),
                metadata=auth,
            )
            assert stalled.wait(30), "the first process never reached the stall"
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            channel_a.close()
            channel_b = grpc.insecure_channel(f"127.0.0.1:{port_b}")
            waited = execution_pb2_grpc.ExecutionServiceStub(channel_b).WaitExecution(
                execution_pb2.WaitExecutionRequest(execution_id=started.execution_id, timeout_seconds=60),
                metadata=auth,
            )
            channel_b.close()
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.terminate()
                    process.wait(15)
        sub_calls = [r for r in llm.requests if r["messages"][0]["role"] != "system"]
    return waited, storage, started.execution_id, sub_calls


def test_second_process_takes_over_after_sigkill(tmp_path: Path) -> None:
    turn_2_seen = threading.Event()
    stall_once = threading.Event()

    def reply(messages: list[dict[str, str]]) -> str:
        user = messages[-1]["content"]
        if messages[0]["role"] != "system":
            return "Lisbon"
        if "Turn 1 of" in user:
            return TURN_1
        if not stall_once.is_set():  # the first owner stalls here and gets killed
            stall_once.set()
            turn_2_seen.set()
            time.sleep(4)
        return TURN_2

    waited, storage, execution_id, sub_calls = _kill_mid_run(tmp_path, reply, turn_2_seen)
    assert waited.status == "COMPLETED" and waited.answer == "Lisbon"
    assert waited.budgets_consumed.turns == 2 and waited.budgets_consumed.llm_subcalls == 1
    assert len(sub_calls) == 1  # turn 1 was committed before the kill: its sub-call is not repeated
    record = storage.metadata.get_execution("t", execution_id)
    assert record["lease_owner"] and len(waited.citations) == 1


PARENT_1 = "```repl\ntool.queue_rlm('c', '[child] Name the city', doc_indices=[0])\ntool.YIELD()\n```"
PARENT_2 = "```repl\ntool.FINAL(state['_tool_results']['rlm']['c']['text'])\n```"
CHILD_2 = (
    "```repl\nh = context[0].find('Lisbon')[0]\ncity = context[0][h['start_char']:h['end_char']]\n"
    "tool.FINAL(city if state['_tool_results']['llm']['city']['text'] == city else 'mismatch')\n```"
)


def test_a_child_execution_is_resumed_not_restarted_after_sigkill(tmp_path: Path) -> None:
    child_turn_2_seen = threading.Event()

    def reply(messages: list[dict[str, str]]) -> str:
        user = messages[-1]["content"]
        if messages[0]["role"] != "system":
            return "Lisbon"
        if user.startswith("Question: [child]"):
            if "Turn 1 of" in user:
                return TURN_1
            if not child_turn_2_seen.is_set():  # the first owner stalls inside the child and dies
                child_turn_2_seen.set()
                time.sleep(4)
            return CHILD_2
        return PARENT_1 if "Turn 1 of" in user else PARENT_2

    waited, storage, execution_id, sub_calls = _kill_mid_run(tmp_path, reply, child_turn_2_seen)
    assert waited.status == "COMPLETED" and waited.answer == "Lisbon", waited.error
    assert waited.budgets_consumed.rlm_subcalls == 1 and waited.budgets_consumed.llm_subcalls == 1
    assert len(sub_calls) == 1  # the child's committed turn 1 was not repeated
    parent = storage.metadata.get_execution("t", execution_id)
    (child_id,) = parent["children"]  # the replayed parent turn found its child: no second one
    child = storage.metadata.get_execution("t", child_id)
    assert child["status"] == "COMPLETED" and child["budgets_consumed"]["turns"] == 2
    # the child's turn 1 (before the kill) read [0, 44), its turn 2 (after) "Lisbon" inside it: one merged ref
    assert [(int(c.get("start_char", 0)), int(c["end_char"])) for c in parent["citations"]] == [(0, 44)]
