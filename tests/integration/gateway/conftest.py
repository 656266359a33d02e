"""The real stack for gateway end-to-end tests, as separate processes.

Embedded storage in a tmp dir, `rlm-rs control serve` (the control plane) and
`rlm-rs gateway serve` on free loopback ports, an API key per tenant from
`rlm-rs keys create`, a document from `rlm-rs upload`, and a READY session
(`rlm-rs ingest worker --once`). The scripted provider answers root and
sub-model calls. One stack per test session; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DOC_TEXT = "Annual report 2024.\nRevenue grew 12% to $4.5M in 2024.\nThe chief executive is Ada Lovelace.\n"
ROOT_REPLY = (
    "```repl\n"
    "hit = context[0].find('Revenue')[0]\n"
    "line = context[0].slice(hit['start_char'], hit['start_char'] + 34, tag='revenue')\n"
    "tool.FINAL(line)\n"
    "```"
)
# Follow-ups: "remember" keeps the chief executive in state["work"], "recall"
# (a follow-up of it) reads it back in its first step.
REMEMBER_REPLY = (
    "```repl\n"
    "hit = context[0].find('Ada Lovelace')[0]\n"
    "state['work']['ceo'] = context[0][hit['start_char']:hit['end_char']]\n"
    "tool.FINAL('noted')\n"
    "```"
)
RECALL_REPLY = (
    "```repl\n"
    "print('from before:', state['work']['ceo'])\n"
    "tool.FINAL('The chief executive is ' + state['work']['ceo'])\n"
    "```"
)
SCRIPT = {
    "executions": [
        {"match": "revenue", "root": [ROOT_REPLY]},
        {"match": "remember", "root": [REMEMBER_REPLY]},
        {"match": "recall", "root": [RECALL_REPLY]},
    ],
    "sub": [{"match": "summarize", "text": "a summary"}],
    "default_sub": "ok",
}
LIMITED_TENANT = "limited"
UPLOAD_LIMIT = 2 * 1024 * 1024  # RLM_MAX_UPLOAD_BYTES (uploads stream past RLM_MAX_REQUEST_BYTES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rlm(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"rlm-rs {args[0]} failed: {done.stderr[-2000:]}")
    return done.stdout


def wait_until(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Stack:
    base_url: str
    grpc_target: str
    api_key: str
    limited_key: str
    other_key: str
    session_id: str
    doc_id: str
    raw_uri: str
    data_dir: Path
    env: dict[str, str]

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key or self.api_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "rlm_rs.cli", *args], env=env, stdout=out, stderr=out)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway_stack")
    data_dir = root / "data"
    script = root / "script.json"
    script.write_text(json.dumps(SCRIPT))
    env = {
        **os.environ,
        "RLM_DATA_DIR": str(data_dir),
        "RLM_STORAGE_BACKEND": "embedded",
        "LLM_PROVIDER": "scripted",
        "RLM_SCRIPTED_PROVIDER_FILE": str(script),
        "RATE_LIMITS_JSON": json.dumps({"tenants": {LIMITED_TENANT: {"rate_per_second": 0.2, "burst": 2}}}),
        "RLM_MAX_REQUEST_BYTES": str(256 * 1024),
        "RLM_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
    }
    env.pop("RLM_GRPC_ADDRESS", None)

    def key(tenant: str) -> str:
        out = rlm(env, "keys", "create", "--tenant", tenant, "--data-dir", str(data_dir))
        return out.strip().splitlines()[-1]

    api_key, other_key, limited_key = key("t1"), key("t2"), key(LIMITED_TENANT)
    doc = root / "report.txt"
    doc.write_text(DOC_TEXT)
    uri = rlm(env, "upload", "--tenant", "t1", "--data-dir", str(data_dir), str(doc)).strip().splitlines()[-1]

    grpc_port, http_port = free_port(), free_port()
    grpc_target = f"127.0.0.1:{grpc_port}"
    # no pool here: the in-process sandbox, asked for explicitly (docs/gateway.md)
    procs = [
        _start(
            env, root / "server.log", "control", "serve", "--grpc-address", grpc_target, "--dev-unsandboxed"
        )
    ]
    try:
        procs.append(
            _start(
                env,
                root / "gateway.log",
                "gateway",
                "serve",
                "--port",
                str(http_port),
                "--grpc-address",
                grpc_target,
            )
        )
        base_url = f"http://127.0.0.1:{http_port}"
        wait_until(
            lambda: httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200,
            "the gateway and control plane",
            timeout=90,  # two Python servers starting on a loaded 2-core host
        )
        headers = {"authorization": f"Bearer {api_key}"}
        created = httpx.post(
            f"{base_url}/v1/sessions",
            headers=headers,
            json={"docs": [{"source_name": "report.txt", "mime_type": "text/plain",
                            "raw_s3_uri": uri}]},
            timeout=30,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        doc_id = created.json()["docs"][0]["doc_id"]
        rlm(env, "ingest", "worker", "--once", "--data-dir", str(data_dir))
        wait_until(
            lambda: httpx.get(f"{base_url}/v1/sessions/{session_id}", headers=headers, timeout=5)
            .json()["status"] == "READY",
            "the session to become READY",
        )  # fmt: skip
        yield Stack(
            base_url, grpc_target, api_key, limited_key, other_key, session_id, doc_id, uri,
            data_dir, env,
        )  # fmt: skip
    finally:
        for proc in reversed(procs):
            _stop(proc)
