"""A real appliance for the spec-clause checks (tests/_appliance.py): the
control plane and the gateway as processes on embedded storage, the scripted
provider with the replies these checks need, one READY session of one text
document. The checks talk only HTTP to the gateway (black box)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests._appliance import appliance_env, create_key, ready_session, running, text_doc, upload

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
    env = appliance_env(root, SCRIPT)
    api_key = create_key(env, "conf")
    doc = root / "report.txt"
    doc.write_text(DOC_TEXT)
    uri = upload(env, "conf", doc)
    with running(env, root) as (base_url, _):
        body = {
            "docs": [text_doc("report.txt", uri)],
            "options": {"enable_search": True, "readiness_mode": "STRICT"},
        }
        session = ready_session(env, base_url, api_key, body)
        yield Appliance(base_url, api_key, session["session_id"])
