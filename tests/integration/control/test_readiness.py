"""Readiness tells the truth: real `rlm-rs server` and `rlm-rs gateway serve` processes.

Without a pool the control plane refuses to start unless development mode is asked
for; in development mode readiness says the sandbox is NOT_HARDENED. The provider's
health comes from a real request to the OpenAI-compatible server (a local test
server): SERVING while it answers, NOT_SERVING once it is gone, and `rlm-rs demo`
then says in one line which URL and model failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlm_rs.providers.probe import probe_provider
from rlm_rs.providers.testing_server import OpenAICompatibleServer
from rlm_rs.settings import Settings
from tests._appliance import free_port, start_process, stop_process, wait_until

REPO = Path(__file__).resolve().parents[3]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_", "RLM_", "LAMBDA_"))}
    return {**env, "RLM_DATA_DIR": str(tmp_path / "data"), **extra}


def health(target: str, service: str) -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_control_plane_without_a_pool_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "control", "serve", "--grpc-address", f"127.0.0.1:{free_port()}"],
        env=base_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # one line, JSON
    refused = json.loads(line)
    assert refused["event"] == "control_plane_refused"
    assert "LAMBDA_FUNCTION_NAME" in refused["reason"] and "--dev-unsandboxed" in refused["reason"]


@pytest.fixture
def model() -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(lambda messages: "ok") as server:
        yield server


def test_dev_mode_is_not_hardened_and_the_provider_probe_follows_the_server(
    tmp_path: Path, model: OpenAICompatibleServer
) -> None:
    grpc_target, http_port = f"127.0.0.1:{free_port()}", free_port()
    ready_url = f"http://127.0.0.1:{http_port}/health/ready"
    env = base_env(
        tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=model.base_url, OPENAI_API_KEY="sk-test-probe"
    )
    server_log, gateway_log = tmp_path / "server.log", tmp_path / "gateway.log"
    server = start_process(
        {**env, "RLM_DEV_UNSANDBOXED": "1"}, server_log, "server", "--grpc-address", grpc_target
    )
    gateway = start_process(
        env, gateway_log, "gateway", "serve", "--port", str(http_port), "--grpc-target", grpc_target
    )
    try:
        wait_until(lambda: httpx.get(ready_url, timeout=2).status_code == 200, "readiness", 120)
        ready = httpx.get(ready_url, timeout=5).json()
        assert ready["components"]["sandbox"] == "NOT_HARDENED"
        assert ready["components"]["provider"] == "SERVING"
        assert health(grpc_target, "sandbox_hardened") == "NOT_SERVING"
        assert model.model_list_requests >= 1  # a real request, not "configured"

        model.__exit__()  # the provider goes away
        wait_until(lambda: httpx.get(ready_url, timeout=2).status_code == 503, "provider NOT_SERVING", 30)
        down = httpx.get(ready_url, timeout=5).json()["error"]
        assert down["code"] == "SERVICE_UNAVAILABLE"
        assert down["details"]["components"]["provider"] == "NOT_SERVING"
        assert health(grpc_target, "provider") == "NOT_SERVING"

        demo = subprocess.run(
            [sys.executable, "-m", "rlm_rs.cli", "demo", "--base-url", f"http://127.0.0.1:{http_port}",
             "--data-dir", str(tmp_path / "data")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert demo.returncode == 1
        (line,) = demo.stderr.splitlines()
        assert line.startswith("rlm-rs demo: the appliance's model provider is not answering: ")
        assert f"openai at {model.base_url} (model gpt-4o): cannot connect" in line
        assert "{" not in line  # no Python dict as the error
    finally:
        stop_process(gateway)
        stop_process(server)
    records = log_records(server_log)
    warning = next(r for r in records if r["event"] == "sandbox_not_hardened")
    assert warning["level"] == "warning" and "DEVELOPMENT MODE" in warning["message"]
    probes = [r for r in records if r["event"] == "provider_probe"]
    assert [p["ok"] for p in probes] == [True, False]
    assert model.base_url in probes[-1]["detail"] and "sk-test-probe" not in server_log.read_text()


def test_the_probe_names_what_failed(model: OpenAICompatibleServer) -> None:
    def probe(**fields: Any) -> str:
        settings = Settings(LLM_PROVIDER="openai", OPENAI_BASE_URL=model.base_url, **fields)
        result = probe_provider(settings, timeout=2)
        return ("ok: " if result.ok else "failed: ") + result.detail

    assert probe() == f"ok: openai at {model.base_url} (model gpt-4o): answering"
    assert probe(DEFAULT_ROOT_MODEL="gpt-9") == (
        f"failed: openai at {model.base_url} (model gpt-9): model gpt-9 is not offered "
        "(offers: gpt-4o, gpt-4o-mini, test-model)"
    )
    model.fail_status = 401
    assert probe(OPENAI_API_KEY="sk-wrong").endswith("the API key was rejected (HTTP 401)")
    model.fail_status = 503
    assert probe().endswith("GET /models answered HTTP 503")
    dead = f"http://user:secret@127.0.0.1:{free_port()}/v1"
    result = probe_provider(Settings(LLM_PROVIDER="openai", OPENAI_BASE_URL=dead), timeout=2)
    assert not result.ok and "cannot connect" in result.detail and "secret" not in result.detail
    assert probe_provider(Settings(LLM_PROVIDER="scripted")).ok
    started = time.monotonic()
    model.delay_seconds = 5
    model.fail_status = None
    assert (
        "no answer within 1 s"
        in probe_provider(Settings(LLM_PROVIDER="openai", OPENAI_BASE_URL=model.base_url), timeout=1).detail
    )
    assert time.monotonic() - started < 4
