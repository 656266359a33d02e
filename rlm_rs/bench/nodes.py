"""`rlm-rs bench nodes`: executions per second of one node and of two nodes on one
moto server (DynamoDB + S3), with a fixed root-model latency.

Each node is the four processes of `rlm-rs up` (started by the supervisor's own code on
its own ports and data directory); the root model is the OpenAI-compatible fake server,
each root call sleeping --root-latency. The same N two-turn executions run on node A
alone, then spread over A and B. On a shared small machine the moto process and both
nodes compete for the same cores: read the ratio together with the load it printed.
It must never leave a process behind (every node is stopped in a finally).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench._plane import free_port, moto_server

DESCRIPTION = "executions per second, one node vs two nodes on one moto server (fixed root latency)"
READ = "```repl\nprint(context[0][:6])\n```"
FINAL = "```repl\ntool.FINAL('in ' + context[0][:6])\n```"
FINISHED = {"COMPLETED", "FAILED", "TIMEOUT", "BUDGET_EXCEEDED", "MAX_TURNS_EXCEEDED", "CANCELLED"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=32, help="executions per phase (default 32)")
    parser.add_argument("--root-latency", type=float, default=1.0, help="seconds per root call (default 1)")


def _reply(latency: float) -> Any:
    def reply(messages: list[dict[str, str]]) -> str:
        time.sleep(latency)
        return READ if "Turn 1 of" in messages[-1]["content"] else FINAL

    return reply


def _node(data_dir: Path, env: dict[str, str], init_storage: bool) -> Any:
    from rlm_rs.appliance.supervisor import Appliance

    app = Appliance(data_dir, free_port(), free_port(), ready_timeout=120.0)
    app.env.update(env)
    app._say = lambda text: None  # type: ignore[method-assign]
    for sub in ("run", "logs"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    if init_storage:
        app._init_storage()
    for component in app._plan():
        app._start(component)
    return app


def _phase(urls: list[str], key: str, session_id: str, executions: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}

    def one(index: int) -> str:
        with httpx.Client(base_url=urls[index % len(urls)], headers=headers, timeout=120) as client:
            made = client.post(f"/v1/sessions/{session_id}/executions", json={"question": f"q{index}"})
            if made.status_code >= 300:
                return f"start HTTP {made.status_code}: {made.text[:200]}"
            execution_id = made.json()["execution_id"]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                waited = client.post(f"/v1/executions/{execution_id}/wait", json={"timeout_seconds": 20})
                if waited.status_code >= 300:  # refused or unavailable: count it, retry shortly
                    errors.append(f"wait HTTP {waited.status_code}: {waited.text[:200]}")
                    time.sleep(0.5)
                    continue
                if waited.json()["status"] in FINISHED:
                    return str(waited.json()["status"])
            return "not finished in 300 s"

    errors: list[str] = []
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=executions) as pool:
        statuses = list(pool.map(one, range(executions)))
    wall = time.monotonic() - started
    return {
        "nodes": len(urls), "executions": executions, "completed": statuses.count("COMPLETED"),
        "wall_seconds": wall, "executions_per_second": executions / wall,
        "load_average_1m": max(load_before, os.getloadavg()[0]),
        "other_outcomes": sorted(set(s for s in statuses if s != "COMPLETED"))[:3],
        "wait_errors": len(errors), "first_wait_error": errors[0] if errors else "",
    }  # fmt: skip


def _storage_env(endpoint: str) -> dict[str, str]:
    unique = uuid.uuid4().hex[:8]
    return {
        "RLM_STORAGE_BACKEND": "aws", "API_KEY_PEPPER": "bench", "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "DDB_TABLE_PREFIX": f"n{unique}_rlm_",
        "S3_BUCKET": f"rlm-nodes-{unique}",
        "RATE_LIMITS_JSON": UNLIMITED_RATE, "RLM_QUOTAS_JSON": UNLIMITED_QUOTAS,
    }  # fmt: skip


def _ready_session(app: Any, env: dict[str, str], data_dir: Path) -> tuple[str, str]:
    """(an API key, a READY session's id), made through node `app`'s gateway."""
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.uploads import store_upload

    storage = open_storage(
        Settings(
            RLM_STORAGE_BACKEND="aws", RLM_DATA_DIR=data_dir, API_KEY_PEPPER="bench",
            AWS_ENDPOINT_URL=env["AWS_ENDPOINT_URL"], AWS_REGION="us-east-1",
            DDB_TABLE_PREFIX=env["DDB_TABLE_PREFIX"], S3_BUCKET=env["S3_BUCKET"],
        )
    )  # fmt: skip
    try:
        key, _ = storage.metadata.create_api_key("bench")
        uri = store_upload(storage.blobs, "bench", "a.txt", b"Lisbon is where the office is.")
    finally:
        storage.close()
    with httpx.Client(
        base_url=app.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        docs = [{"source_name": "a.txt", "mime_type": "text/plain", "raw_s3_uri": uri}]
        session_id = client.post("/v1/sessions", json={"docs": docs}).json()["session_id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/sessions/{session_id}").json()["status"] != "READY":
            if time.monotonic() > deadline:
                raise RuntimeError("the bench session never became READY")
            time.sleep(0.2)
    return key, session_id


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.providers.testing_server import OpenAICompatibleServer

    moto, endpoint = moto_server()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    apps: list[Any] = []
    results: dict[str, Any] = {"root_latency_seconds": args.root_latency, "cores": os.cpu_count()}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="rlm-bench-nodes-") as directory,
            OpenAICompatibleServer(_reply(args.root_latency)) as llm,
        ):
            env = {**_storage_env(endpoint), "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url,
                   "OPENAI_API_KEY": "sk-bench", "RLM_LLM_MAX_RETRIES": "0"}  # fmt: skip
            apps.append(_node(Path(directory) / "a", env, init_storage=True))
            key, session_id = _ready_session(apps[0], env, Path(directory) / "bench")
            results["one_node"] = _phase([apps[0].base_url], key, session_id, args.executions)
            apps.append(_node(Path(directory) / "b", env, init_storage=False))
            results["two_nodes"] = _phase([app.base_url for app in apps], key, session_id, args.executions)
            for app in reversed(apps):
                app.stop()
            apps.clear()
    finally:
        for app in apps:
            app.stop()
        moto.kill()
        moto.wait(10)
    one, two = results["one_node"], results["two_nodes"]
    results["two_over_one"] = two["executions_per_second"] / one["executions_per_second"]
    return results
