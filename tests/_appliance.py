"""A real appliance as processes, for the tests that talk to it over HTTP.

`rlm-rs control serve` (the in-process sandbox, asked for explicitly: no pool,
docs/gateway.md) and `rlm-rs gateway serve` on free loopback ports over
embedded storage in a tmp dir, the scripted provider, API keys from
`rlm-rs keys create`, documents from `rlm-rs upload` and READY sessions
(`rlm-rs ingest worker --once`). Shared by tests/integration/gateway/ and
tests/conformance/api/. Every wait is bounded; it never leaves a process running.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


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


def start_process(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "rlm_rs.cli", *args], env=env, stdout=out, stderr=out)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def appliance_env(root: Path, script: dict[str, Any], **extra: str) -> dict[str, str]:
    """The processes' environment: embedded storage in `root`/data, the scripted
    provider answering from `script`, then `extra`."""
    script_file = root / "script.json"
    script_file.write_text(json.dumps(script))
    env = {
        **os.environ,
        "RLM_DATA_DIR": str(root / "data"),
        "RLM_STORAGE_BACKEND": "embedded",
        "LLM_PROVIDER": "scripted",
        "RLM_SCRIPTED_PROVIDER_FILE": str(script_file),
        **extra,
    }
    env.pop("RLM_GRPC_ADDRESS", None)
    return env


def create_key(env: dict[str, str], tenant: str) -> str:
    out = rlm(env, "keys", "create", "--tenant", tenant, "--data-dir", env["RLM_DATA_DIR"])
    return out.strip().splitlines()[-1]


def upload(env: dict[str, str], tenant: str, path: Path) -> str:
    """The raw_s3_uri of `path`, uploaded for `tenant`."""
    return (
        rlm(env, "upload", "--tenant", tenant, "--data-dir", env["RLM_DATA_DIR"], str(path))
        .strip()
        .splitlines()[-1]
    )


@contextlib.contextmanager
def running(env: dict[str, str], root: Path) -> Iterator[tuple[str, str]]:
    """(the gateway's base URL, the control plane's gRPC target) while both
    serve and answer ready; logs in `root` (control.log, gateway.log)."""
    grpc_target, http_port = f"127.0.0.1:{free_port()}", free_port()
    procs = [
        start_process(
            env, root / "control.log", "control", "serve", "--grpc-address", grpc_target, "--dev-unsandboxed"
        )
    ]
    try:
        procs.append(
            start_process(env, root / "gateway.log", "gateway", "serve", "--port", str(http_port),
                          "--grpc-address", grpc_target)
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{http_port}"
        wait_until(
            lambda: httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200,
            "the gateway and control plane",
            timeout=90,  # two Python servers starting on a loaded 2-core host
        )
        yield base_url, grpc_target
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def ready_session(env: dict[str, str], base_url: str, api_key: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/sessions with `body`, ingest it, wait until READY: the created session."""
    headers = {"authorization": f"Bearer {api_key}"}
    created = httpx.post(f"{base_url}/v1/sessions", headers=headers, json=body, timeout=30)
    assert created.status_code == 201, created.text
    session: dict[str, Any] = created.json()
    rlm(env, "ingest", "worker", "--once", "--data-dir", env["RLM_DATA_DIR"], timeout=120)
    wait_until(
        lambda: (
            httpx.get(f"{base_url}/v1/sessions/{session['session_id']}", headers=headers, timeout=5).json()[
                "status"
            ]
            == "READY"
        ),
        "the session to become READY",
        timeout=90,
    )
    return session


def text_doc(name: str, raw_uri: str) -> dict[str, str]:
    """One plain-text document of a CreateSession body."""
    return {"source_name": name, "mime_type": "text/plain", "raw_s3_uri": raw_uri}
