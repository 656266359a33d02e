"""examples/client/*.py run as a user runs them, against the real appliance, over both transports.

Each example is a subprocess with only RLM_API_KEY in its environment and the
uploaded corpus's URIs on its command line; its output is what is asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.e2e.client.conftest import Appliance
from tests.e2e.conftest import REPO

EXAMPLES = REPO / "examples" / "client"


def run_example(appliance: Appliance, name: str, transport: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
    env["RLM_API_KEY"] = appliance.api_key
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--url", appliance.url(transport), *appliance.uris],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_ask_prints_the_answer_and_verified_citations(appliance: Appliance, transport: str) -> None:
    out = run_example(appliance, "ask.py", transport)
    assert f"transport: {transport}" in out
    assert re.search(r"READY \(4/4 documents parsed\)", out), out
    assert "1 March 1874" in out and "paraffin" in out
    cited = re.findall(r"^\[\d+\] (\S+) \d+-\d+ (verified|NOT VERIFIED): ", out, re.M)
    assert {name for name, _ in cited} == {
        "keepers.docx", "keepers_log.txt", "lamp_room.html", "visitor_leaflet.pdf",
    }  # fmt: skip
    assert all(mark == "verified" for _, mark in cited)


def test_stream_prints_live_events_then_the_answer(appliance: Appliance, transport: str) -> None:
    out = run_example(appliance, "stream.py", transport)
    events = re.findall(r"^event (\d{6}\.\d{4}) turn \d+ (\w+)", out, re.M)
    ids = [event_id for event_id, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    types = [kind for _, kind in events]
    assert types[0] == "turn_started" and types[-1] == "status"
    assert {"root_reply", "step_result", "tool_requests", "tool_results"} <= set(types)
    assert "status COMPLETED" in out
    assert "citations: 4, all verified: True" in out


def test_runtime_drives_steps_resolves_tools_and_cites(appliance: Appliance, transport: str) -> None:
    out = run_example(appliance, "runtime.py", transport)
    assert re.search(r"^step 0: read \d+ spans; stdout: 'keepers_log.txt \d+'", out, re.M), out
    assert "step 1: queued ['summary'] (waiting for the summary)" in out
    assert "resolved: {'summary': 'resolved'}" in out
    assert "step 2: final=True" in out
    assert "status: COMPLETED" in out
    assert "answer: Harrow Point light was first lit on 1 March 1874" in out
    assert re.search(r"^cited keepers_log.txt \d+-\d+ verified$", out, re.M), out


def test_async_asks_concurrently(appliance: Appliance, transport: str) -> None:
    out = run_example(appliance, "async_ask.py", transport)
    assert out.count("Q: ") == 3
    assert out.count("all verified: True") == 3
