"""The real stack for gateway end-to-end tests, as separate processes
(tests/_appliance.py): an API key per tenant, one uploaded document and a
READY session of it. The scripted provider answers root and sub-model calls.
One stack per test session; every wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests._appliance import (
    appliance_env,
    create_key,
    free_port,
    ready_session,
    rlm,
    running,
    text_doc,
    upload,
    wait_until,
)

# free_port, rlm and wait_until are tests/_appliance.py's, for the tests that take them from here
__all__ = ["DOC_TEXT", "LIMITED_TENANT", "UPLOAD_LIMIT", "Stack", "free_port", "rlm", "wait_until"]

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("gateway_stack")
    env = appliance_env(
        root,
        SCRIPT,
        RATE_LIMITS_JSON=json.dumps({"tenants": {LIMITED_TENANT: {"rate_per_second": 0.2, "burst": 2}}}),
        RLM_MAX_REQUEST_BYTES=str(256 * 1024),
        RLM_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )
    api_key, other_key, limited_key = (
        create_key(env, "t1"),
        create_key(env, "t2"),
        create_key(env, LIMITED_TENANT),
    )
    doc = root / "report.txt"
    doc.write_text(DOC_TEXT)
    uri = upload(env, "t1", doc)
    with running(env, root) as (base_url, grpc_target):
        session = ready_session(env, base_url, api_key, {"docs": [text_doc("report.txt", uri)]})
        yield Stack(
            base_url, grpc_target, api_key, limited_key, other_key, session["session_id"],
            session["docs"][0]["doc_id"], uri, root / "data", env,
        )  # fmt: skip
