"""`rlm-rs up` before it starts anything: its ports come from the settings (flags win),
a busy port or a provider that does not answer is one line naming what to change."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, UpProcess, free_port


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def up(tmp_path: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "up", "--data-dir", str(tmp_path / "data"), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    return {**UpProcess(Path("."), 0, 0).clean_env(), **extra}


def test_the_http_port_comes_from_the_setting_and_a_busy_one_is_named(tmp_path: Path, busy_port: int) -> None:
    result = up(tmp_path, clean_env(RLM_HTTP_PORT=str(busy_port)), "--grpc-port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"rlm-rs up: port {busy_port} (the gateway's HTTP port) is in use; "
        "set RLM_HTTP_PORT or pass --http-port"
    ]


def test_the_grpc_port_comes_from_the_setting_and_a_busy_one_is_named(tmp_path: Path, busy_port: int) -> None:
    env = clean_env(RLM_GRPC_ADDRESS=f"127.0.0.1:{busy_port}")
    result = up(tmp_path, env, "--http-port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"rlm-rs up: port {busy_port} (the control plane's gRPC port) is in use; "
        "set RLM_GRPC_ADDRESS or pass --grpc-port"
    ]
    flagged = up(tmp_path, env, "--http-port", str(busy_port), "--grpc-port", str(free_port()))
    assert f"port {busy_port} (the gateway's HTTP port)" in flagged.stderr  # the flag wins


def test_a_dead_provider_is_one_line_naming_its_url_and_model(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = clean_env(OPENAI_BASE_URL=dead, OPENAI_API_KEY="sk-never-printed", DEFAULT_ROOT_MODEL="gpt-4.1")
    result = up(tmp_path, env, "--http-port", str(free_port()), "--grpc-port", str(free_port()))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"rlm-rs up: openai at {dead} (model gpt-4.1): cannot connect")
    assert line.endswith("(check OPENAI_BASE_URL, OPENAI_API_KEY and DEFAULT_ROOT_MODEL)")
    assert "sk-never-printed" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "logs" / "control-plane.log").exists()  # nothing was started
