"""A stale owner is fenced out, on both back ends: two real control-plane
processes; the owner of an execution is paused with SIGSTOP inside its root
call until the other takes the execution over, then resumed while the new
owner is still running it. The stale owner must stop at once: it pays no
sub-call, writes no event, no step record, no state, no counter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from rlm_rs.storage import open_storage
from rlm_rs.v1 import execution_pb2
from tests.integration.control._two_planes import (
    free_port,
    ready_session,
    serve,
    start_execution,
    stop,
    wait_execution,
)

LEASE_SECONDS = 2
STALE = "```repl\nstate['work']['who'] = 'STALE'\ntool.queue_llm('k', 'STALE sub-call')\ntool.YIELD()\n```"
NEW_1 = "```repl\nstate['work']['who'] = 'new owner'\nprint(context[0][:6])\n```"
NEW_2 = "```repl\ntool.FINAL('done by ' + state['work']['who'])\n```"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _storage_env(backend: str, tmp_path: Path, moto: str | None) -> dict[str, str]:
    env = {"RLM_STORAGE_BACKEND": backend, "API_KEY_PEPPER": "pepper"}
    if backend == "aws":
        unique = uuid.uuid4().hex[:8]
        env.update(
            AWS_ENDPOINT_URL=str(moto), AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            DDB_TABLE_PREFIX=f"f{unique}_rlm_", S3_BUCKET=f"rlm-fence-{unique}",
        )  # fmt: skip
    else:
        env["RLM_DATA_DIR"] = str(tmp_path / "shared")
    return env


def _wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("backend", ["embedded", "aws"])
def test_a_paused_owner_resumed_after_takeover_writes_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    moto = request.getfixturevalue("moto_url") if backend == "aws" else None
    env = _storage_env(backend, tmp_path, moto)
    for name, value in env.items():  # this process's own storage client (moto's credentials)
        if name.startswith("AWS_"):
            os.environ.setdefault(name, value)
    settings = Settings(
        RLM_STORAGE_BACKEND=backend, RLM_DATA_DIR=tmp_path / "shared", API_KEY_PEPPER="pepper",
        AWS_ENDPOINT_URL=moto, AWS_REGION="us-east-1",
        DDB_TABLE_PREFIX=env.get("DDB_TABLE_PREFIX", "rlm_"), S3_BUCKET=env.get("S3_BUCKET", "rlm-rs"),
    )  # fmt: skip
    storage = open_storage(settings)
    storage.init()
    key, _ = storage.metadata.create_api_key("t")
    storage.blobs.put("raw/t/u1/a.txt", b"Lisbon is where the office is.")
    auth = (("authorization", f"Bearer {key}"),)

    stale_asked, stale_paused = threading.Event(), threading.Event()
    new_waits, release_new = threading.Event(), threading.Event()
    first_turn_calls = []

    def reply(messages: list[dict[str, str]]) -> str:
        user = messages[-1]["content"]
        if messages[0]["role"] != "system":
            return "a sub-call answer"
        if "Turn 1 of" in user:
            first_turn_calls.append(1)
            if len(first_turn_calls) == 1:  # the first owner: held here until it is paused
                stale_asked.set()
                stale_paused.wait(30)
                return STALE
            return NEW_1
        new_waits.set()  # the new owner's second turn waits until the stale one has resumed
        release_new.wait(60)
        return NEW_2

    logs = tmp_path / "logs"
    logs.mkdir()
    with OpenAICompatibleServer(reply) as llm:
        port_a, port_b = free_port(), free_port()
        first = serve({"RLM_DATA_DIR": str(tmp_path / "a"), **env}, llm.base_url, port_a,
                      lease_seconds=LEASE_SECONDS, log=logs / "a.log")  # fmt: skip
        second: subprocess.Popen[bytes] | None = None
        try:
            channel_a = grpc.insecure_channel(f"127.0.0.1:{port_a}")
            grpc.channel_ready_future(channel_a).result(timeout=60)
            session_id = ready_session(
                channel_a, auth, storage.blobs.uri("raw/t/u1/a.txt"), storage, settings
            )
            started = start_execution(channel_a, auth, session_id, "Where?")
            assert stale_asked.wait(30), "the first owner never asked for its first turn"
            # B starts only now, so A is the owner; then A freezes inside its root call
            second = serve({"RLM_DATA_DIR": str(tmp_path / "b"), **env}, llm.base_url, port_b,
                           lease_seconds=LEASE_SECONDS, log=logs / "b.log")  # fmt: skip
            os.kill(first.pid, signal.SIGSTOP)
            stale_paused.set()  # A's reply is in its socket; A reads it when resumed
            assert new_waits.wait(60), "the second process never took the execution over"
            os.kill(first.pid, signal.SIGCONT)  # B holds the execution, mid-run
            stopped = _wait_for(lambda: b"lease_lost" in (logs / "a.log").read_bytes(), 10)
            time.sleep(1.0)  # anything the stale owner still did would land now
            release_new.set()
            waited = wait_execution(port_b, auth, started.execution_id)
            channel_a.close()
            assert first.poll() is None, "the stale owner died instead of stopping its loop"
        finally:
            release_new.set()
            stop((first, second))
        seen = [json.dumps(r["messages"]) for r in llm.requests]

    assert (
        waited.status == execution_pb2.EXECUTION_STATUS_COMPLETED and waited.answer == "done by new owner"
    ), waited.error
    assert waited.budgets_consumed.turns == 2 and waited.budgets_consumed.llm_subcalls == 0
    assert not any("STALE sub-call" in text for text in seen), "the stale owner paid a sub-call"
    execution_id = started.execution_id
    written = storage.metadata.items.query("execution_state", f"EXEC#{execution_id}")
    assert written and not any("STALE" in json.dumps(item) for item in written), "the stale owner wrote"
    steps = [item for item in written if item["SK"].startswith("STEP#")]
    assert [item["turn_index"] for item in steps] == [0, 1]
    record = storage.metadata.get_execution("t", execution_id)
    assert record["next_turn"] == 2 and record["status"] == "COMPLETED"
    assert stopped, "the stale owner never logged that it lost the lease"
    storage.close()
