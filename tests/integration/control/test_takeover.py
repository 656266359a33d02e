"""Two real control-plane processes; SIGKILL the one running an execution; the
other takes the lease over and finishes it without repeating the sub-call."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from rlm_rs.storage import Storage, open_storage
from rlm_rs.v1 import execution_pb2
from tests.integration.control._two_planes import (
    free_port,
    ready_session,
    serve,
    start_execution,
    stop,
    wait_execution,
    wait_ready,
)

TURN_1 = "```repl\ntool.queue_llm('city', 'Name the city: ' + context[0][:44])\ntool.YIELD()\n```"
TURN_2 = "```repl\ncontext[0].find('Lisbon')\ntool.FINAL(state['_tool_results']['llm']['city']['text'])\n```"


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
    env = {"RLM_DATA_DIR": str(data_dir), "API_KEY_PEPPER": "pepper"}
    with OpenAICompatibleServer(reply) as llm:
        port_a, port_b = free_port(), free_port()
        first = serve(env, llm.base_url, port_a, lease_seconds=2)
        second = serve(env, llm.base_url, port_b, lease_seconds=2)
        try:
            wait_ready(port_a)
            wait_ready(port_b)
            channel_a = grpc.insecure_channel(f"127.0.0.1:{port_a}")
            session_id = ready_session(channel_a, auth, "s3://rlm-rs/raw/t/u1/a.txt", storage, settings)
            started = start_execution(channel_a, auth, session_id, "Which city?")
            assert stalled.wait(30), "the first process never reached the stall"
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            channel_a.close()
            waited = wait_execution(port_b, auth, started.execution_id)
        finally:
            stop((first, second))
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
    assert waited.status == execution_pb2.EXECUTION_STATUS_COMPLETED and waited.answer == "Lisbon"
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
    assert waited.status == execution_pb2.EXECUTION_STATUS_COMPLETED and waited.answer == "Lisbon", (
        waited.error
    )
    assert waited.budgets_consumed.rlm_subcalls == 1 and waited.budgets_consumed.llm_subcalls == 1
    assert len(sub_calls) == 1  # the child's committed turn 1 was not repeated
    parent = storage.metadata.get_execution("t", execution_id)
    (child_id,) = parent["children"]  # the replayed parent turn found its child: no second one
    child = storage.metadata.get_execution("t", child_id)
    assert child["status"] == "COMPLETED" and child["budgets_consumed"]["turns"] == 2
    # the child's turn 1 (before the kill) read [0, 44), its turn 2 (after) "Lisbon" inside it: one merged ref
    assert [(int(c.get("start_char", 0)), int(c["end_char"])) for c in parent["citations"]] == [(0, 44)]
