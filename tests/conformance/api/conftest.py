"""A real appliance for the spec-clause checks: `rlm-rs control serve` and
`rlm-rs gateway serve` as processes on embedded storage, the scripted
provider with the replies these checks need, one READY session of one text
document. The checks talk only HTTP to the gateway (black box)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.gateway.conftest import _start, _stop, free_port, rlm, wait_until

DOC_TEXT = "Annual report 2024.\nRevenue grew 12% to $4.5M in 2024.\n"
# Turn 0 queues a sub-call and yields; turn 1 reads an untagged span and
# answers with the sub-call's text.
SUBCALL_ROOT = [
    "```repl\nstate['work']['schema'] = sorted(state['_tool_schema'])\n"
    "tool.queue_llm('s', 'summarize the report')\ntool.YIELD('wait')\n```",
    "```repl\nhead = context[0][0:6]\ntool.FINAL(state['_tool_results']['llm']['s']['text'] + ' ' + head)\n```",
]
SCRIPT = {
    "executions": [{"match": "summarize", "root": SUBCALL_ROOT}],
    "sub": [{"match": "summarize", "text": "a summary"}],
    "default_sub": "ok",
}


@dataclass
class Appliance:
    base_url: str
    api_key: str
    session_id: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"authorization": f"Bearer {self.api_key}"}, timeout=30
        )


@pytest.fixture(scope="session")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    root = tmp_path_factory.mktemp("conformance_api")
    data_dir = root / "data"
    script = root / "script.json"
    script.write_text(json.dumps(SCRIPT))
    env = {
        **os.environ,
        "RLM_DATA_DIR": str(data_dir),
        "RLM_STORAGE_BACKEND": "embedded",
        "LLM_PROVIDER": "scripted",
        "RLM_SCRIPTED_PROVIDER_FILE": str(script),
    }
    env.pop("RLM_GRPC_ADDRESS", None)
    api_key = (
        rlm(env, "keys", "create", "--tenant", "conf", "--data-dir", str(data_dir)).strip().splitlines()[-1]
    )
    doc = root / "report.txt"
    doc.write_text(DOC_TEXT)
    uri = (
        rlm(env, "upload", "--tenant", "conf", "--data-dir", str(data_dir), str(doc)).strip().splitlines()[-1]
    )
    grpc_target, http_port = f"127.0.0.1:{free_port()}", free_port()
    procs = [
        _start(
            env, root / "control.log", "control", "serve", "--grpc-address", grpc_target, "--dev-unsandboxed"
        )
    ]
    try:
        procs.append(
            _start(env, root / "gateway.log", "gateway", "serve", "--port", str(http_port),
                   "--grpc-address", grpc_target)
        )  # fmt: skip
        base_url = f"http://127.0.0.1:{http_port}"
        wait_until(
            lambda: httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200,
            "the appliance",
            timeout=90,
        )
        headers = {"authorization": f"Bearer {api_key}"}
        body = {
            "docs": [{"source_name": "report.txt", "mime_type": "text/plain", "raw_s3_uri": uri}],
            "options": {"enable_search": True, "readiness_mode": "STRICT"},
        }
        created = httpx.post(f"{base_url}/v1/sessions", headers=headers, json=body, timeout=30)
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        rlm(env, "ingest", "worker", "--once", "--data-dir", str(data_dir), timeout=120)
        wait_until(
            lambda: (
                httpx.get(f"{base_url}/v1/sessions/{session_id}", headers=headers, timeout=5).json()["status"]
                == "READY"
            ),
            "the session to become READY",
            timeout=90,
        )
        yield Appliance(base_url, api_key, session_id)
    finally:
        for proc in reversed(procs):
            _stop(proc)
