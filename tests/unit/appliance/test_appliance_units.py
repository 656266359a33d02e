"""Small pieces of the appliance: provider choice, socket path, corpus, demo without a server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from rlm_rs.appliance.demo import MIME_TYPES, SCRIPT_FILE, corpus_files, run_demo
from rlm_rs.appliance.supervisor import choose_provider, socket_path_for


@pytest.mark.parametrize(
    ("env", "provider"),
    [
        ({}, "scripted"),
        ({"OPENAI_API_KEY": "sk-x"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "openai"),
        ({"OPENAI_API_KEY": "sk-x", "LLM_PROVIDER": "scripted"}, "scripted"),
    ],
)
def test_provider_choice(env: dict[str, str], provider: str) -> None:
    assert choose_provider(env) == provider


def test_socket_path_stays_within_sun_path(tmp_path: Path) -> None:
    assert socket_path_for(tmp_path) == tmp_path / "run" / "sandbox.sock"
    deep = tmp_path / ("d" * 120)
    path = socket_path_for(deep)
    assert len(str(path)) < 108 and path != socket_path_for(tmp_path / ("e" * 120))
    with socket.socket(socket.AF_UNIX) as sock:  # the kernel accepts it
        path.parent.mkdir(parents=True, exist_ok=True)
        sock.bind(str(path))
    path.unlink()


def test_corpus_has_every_format_and_the_script_parses() -> None:
    suffixes = {p.suffix for p in corpus_files()}
    assert suffixes == set(MIME_TYPES)
    script = json.loads(SCRIPT_FILE.read_text(encoding="utf-8"))
    assert all(reply.startswith("```repl\n") for reply in script["executions"][0]["root"])


def test_demo_without_an_appliance_says_how_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        code = run_demo(
            base_url=f"http://127.0.0.1:{port}", api_key=None, data_dir=tmp_path,
            question="q", timeout=10,
        )  # fmt: skip
    assert code == 1
    assert "rlm-rs up --demo" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was written to the data dir
