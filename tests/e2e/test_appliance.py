"""End to end: `rlm-rs up` as a real process, the demo against it, stop, start again.

Checks what a newcomer relies on: every component comes up, the demo's answer carries
citations that all verify, SIGTERM leaves no process behind, and a second `up` on the
same data directory serves the same session, execution and citations.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import REPO, UpProcess, free_port


def run_demo(up: UpProcess, *extra: str) -> tuple[dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "demo", "--base-url", up.base_url,
         "--data-dir", str(up.data_dir), "--json", "--timeout", "150", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    key_line = next(line for line in result.stdout.splitlines() if "API key" in line)
    key = key_line.rsplit(" ", 1)[-1]
    # the trace as a page that opens (not an s3:// path), and counts in words
    viewer = f"{up.base_url}/v1/executions/"
    assert f"Trace viewer: {viewer}" in result.stdout and f"/view#key={key}" in result.stdout
    assert "s3://" not in result.stdout.split("Trace viewer:")[1].splitlines()[0]
    assert "(2 turns, 1 sub-call)" in result.stdout, result.stdout
    return json.loads(result.stdout.strip().splitlines()[-1]), key


def test_up_demo_stop_start_keeps_data(appliance_factory: type[UpProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = appliance_factory(data_dir, free_port(), free_port())
    up.start()
    out = "\n".join(up.lines)
    assert "Provider: scripted" in out
    for name in ("sandbox pool", "control plane", "ingestion worker", "gateway"):
        assert f"{name:<16} ready" in out, out
    assert str(data_dir) in out and f"127.0.0.1:{up.grpc_port}" in out
    assert "keys create" in out

    demo, api_key = run_demo(up)
    assert demo["status"] == "COMPLETED"
    assert len(demo["citations"]) >= 4  # one from each of txt, HTML, DOCX and PDF
    assert all(c["valid"] for c in demo["citations"])
    assert "1 March 1874" in demo["answer"] and "paraffin" in demo["answer"]
    assert demo["trace_s3_uri"].startswith("s3://")

    assert len(up.seen_pids) >= 4
    assert up.stop() == 0
    assert up.alive_leftovers() == [], "processes left after SIGTERM"
    assert "stopped" in "\n".join(up.lines)

    again = appliance_factory(data_dir, free_port(), free_port())
    again.start()
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=again.base_url, headers=headers, timeout=30) as client:
        execution = client.get(f"/v1/executions/{demo['execution_id']}").json()
        assert execution["status"] == "COMPLETED"
        assert execution["answer"] == demo["answer"]
        session = client.get(f"/v1/sessions/{demo['session_id']}").json()
        assert session["status"] == "READY" and len(session["docs"]) == 4
        for citation in demo["citations"]:
            verified = client.post("/v1/citations/verify", json={"ref": citation["ref"]}).json()
            assert verified["valid"] is True and verified["text"] == citation["text"]
    assert again.stop() == 0
    assert again.alive_leftovers() == []


def test_second_up_on_the_same_data_dir_is_refused(
    appliance_factory: type[UpProcess], tmp_path: Path
) -> None:
    up = appliance_factory(tmp_path / "data", free_port(), free_port())
    up.start()
    second = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "up", "--data-dir", str(up.data_dir),
         "--http-port", str(free_port()), "--grpc-port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert second.returncode == 1
    assert "another appliance is running" in second.stderr
    assert up.stop() == 0
    assert up.alive_leftovers() == []


def test_openai_base_url_selects_the_openai_provider(
    appliance_factory: type[UpProcess], tmp_path: Path
) -> None:
    """With OPENAI_BASE_URL set, `up` says `openai` and the demo runs against that server."""
    from rlm_rs.appliance.demo import SCRIPT_FILE
    from rlm_rs.providers.testing_server import OpenAICompatibleServer

    script = json.loads(SCRIPT_FILE.read_text(encoding="utf-8"))
    roots = script["executions"][0]["root"]
    root_calls: list[int] = []

    def reply(messages: list[dict[str, str]]) -> str:
        if "root model" not in messages[0].get("content", ""):  # a sub-call
            return str(script["sub"][0]["text"])
        root_calls.append(1)
        return str(roots[min(len(root_calls), len(roots)) - 1])

    with OpenAICompatibleServer(reply) as model:
        up = appliance_factory(
            tmp_path / "data", free_port(), free_port(),
            extra_env={"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-local-test"},
        )  # fmt: skip
        up.start()
        assert f"Provider: openai ({model.base_url})" in "\n".join(up.lines)
        demo, _key = run_demo(up, "--model", "test-model")
        assert demo["status"] == "COMPLETED" and all(c["valid"] for c in demo["citations"])
        assert len(root_calls) == 2 and len(model.requests) == 3  # two root turns, one sub-call
        assert {r["model"] for r in model.requests} == {"test-model"}  # --model: root and sub
        assert up.stop() == 0
    assert up.alive_leftovers() == []
