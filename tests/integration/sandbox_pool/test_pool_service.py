"""The pool as a service: gRPC over a Unix socket, health, reflection, status,
fd passing, the pool's own policy, strict mode, and the client's failure mode."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rlm_rs.canonical import build_offsets
from rlm_rs.errors import RlmError
from rlm_rs.sandbox.client import (
    InProcessSandbox,
    PoolSandbox,
    make_sandbox_client,
    temporary_pool,
)
from rlm_rs.sandbox.policy import cap_limits, default_policy
from rlm_rs.sandbox.pool.doctor import run_doctor
from rlm_rs.sandbox.pool.server import HARDENED_HEALTH_NAME, pool_policy
from rlm_rs.sandbox.v1.sandbox_pb2 import ContextDocument, SandboxPolicy, StepLimits, StepRequest, StepResult
from rlm_rs.settings import Settings

pytestmark = pytest.mark.root


def unsafe(code: str, **kwargs: object) -> StepRequest:
    return StepRequest(
        code=code,
        state_json="{}",
        unsafe_disable_policy_layers=True,
        limits=StepLimits(max_step_seconds=5),
        **kwargs,  # type: ignore[arg-type]
    )


def test_trivial_step_runs_in_the_pool(pool: PoolSandbox) -> None:
    result = pool.run_step(StepRequest(code="print(6 * 7)", state_json="{}", turn_index=3))
    assert result.success, result.error
    assert result.stdout.strip() == "42"
    assert result.isolation == "pool"
    assert result.turn_index == 3


def test_health_serves_every_name(pool: PoolSandbox) -> None:
    with grpc.insecure_channel(f"unix:{pool.socket_path}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "rlm_rs.sandbox.v1.SandboxService", HARDENED_HEALTH_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_the_sandbox_service(pool: PoolSandbox) -> None:
    with grpc.insecure_channel(f"unix:{pool.socket_path}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        names = {s.name for s in reply.list_services_response.service}
    assert {"rlm_rs.sandbox.v1.SandboxService", "grpc.health.v1.Health"} <= names


def test_status_reports_every_layer_active(pool: PoolSandbox) -> None:
    status = pool.status()
    layers = {layer.name: layer for layer in status.layers}
    assert len(layers) == 16
    assert all(layer.active for layer in layers.values()), [
        (layer.name, layer.detail) for layer in layers.values() if not layer.active
    ]
    assert status.policy.seccomp_enabled
    assert status.warm_workers >= 1


def test_zygote_is_single_threaded_and_free_of_grpc(pool: PoolSandbox) -> None:
    assert pool.server_pid is not None
    (zygote,) = psutil.Process(pool.server_pid).children()
    assert zygote.num_threads() == 1
    maps = Path(f"/proc/{zygote.pid}/maps").read_text()
    assert "cygrpc" not in maps and "grpc" not in maps


def test_unsafe_flag_is_refused_without_test_mode(pool: PoolSandbox) -> None:
    result = pool.run_step(unsafe("print('no')"))
    assert not result.success
    assert result.error.code == "VALIDATION_ERROR"


def test_hardening_fields_in_a_request_are_ignored(unsafe_pool: PoolSandbox) -> None:
    """StepLimits cannot express hardening; a client that still sends a whole
    SandboxPolicy in its place (the old wire) gets the pool's hardening anyway."""
    request = unsafe("import socket\nsocket.socket()")
    old = SandboxPolicy(max_step_seconds=5, seccomp_allowlist=["socket", "connect"], sandbox_uid=1)
    request.limits.MergeFromString(old.SerializeToString())
    assert len(UnknownFieldSet(request.limits)) == 3  # they travel to the pool as they are
    result = unsafe_pool.run_step(request)
    assert result.error.code == "LAMBDA_ERROR"
    assert json.loads(result.error.details_json)["exit"]["signal"] == "SIGSYS"


def test_step_limits_are_capped_by_the_pool_and_every_cap_is_named() -> None:
    pool = pool_policy()
    requested = StepLimits(max_step_seconds=10_000, max_stdout_chars=5)
    requested.builtins_allowlist.extend(["print", "eval"])
    merged, capped = cap_limits(requested, pool)
    assert merged.max_step_seconds == pool.max_step_seconds
    assert merged.max_stdout_chars == 5
    assert merged.max_instructions == default_policy().max_instructions  # unset: the default
    assert list(merged.builtins_allowlist) == ["print"]
    assert capped == ["max_step_seconds", "builtins_allowlist"]


def test_a_capped_limit_is_named_in_the_result(pool: PoolSandbox) -> None:
    request = StepRequest(code="print(1)", state_json="{}", limits=StepLimits(max_step_seconds=10_000))
    result = pool.run_step(request)
    assert result.success, result.error
    assert list(result.capped_limits) == ["max_step_seconds"]
    assert not pool.run_step(StepRequest(code="print(1)", state_json="{}")).capped_limits


def test_documents_arrive_as_fds_in_manifest_order(unsafe_pool: PoolSandbox, tmp_path: Path) -> None:
    # Per document: text, offsets (if set), meta (if set); fds 4.. in that order.
    def write(name: str, content: str) -> str:
        (tmp_path / name).write_text(content)
        return str(tmp_path / name)

    a_offsets = json.dumps(build_offsets("alpha", "a"))
    manifest = [
        ContextDocument(
            doc_index=0,
            doc_id="a",
            text_path=write("a.txt", "alpha"),
            offsets_path=write("a.offsets", a_offsets),
            meta_path=write("a.meta", '{"doc": "a"}'),
        ),
        ContextDocument(
            doc_index=1, doc_id="b", text_path=write("b.txt", "beta"),
            meta_path=write("b.meta", '{"doc": "b"}'),
        ),
    ]  # fmt: skip
    code = "import os\nprint([os.pread(fd, 200, 0).decode() for fd in range(4, 9)])"
    result = unsafe_pool.run_step(unsafe(code, context_manifest=manifest))
    assert result.success, result.error
    expected = ["alpha", a_offsets, '{"doc": "a"}', "beta", '{"doc": "b"}']
    assert result.stdout.strip() == str(expected)


def test_missing_document_is_a_read_error(pool: PoolSandbox, tmp_path: Path) -> None:
    doc = ContextDocument(doc_index=0, text_path=str(tmp_path / "missing.txt"))
    result = pool.run_step(StepRequest(code="print(1)", state_json='{"a": 1}', context_manifest=[doc]))
    assert result.error.code == "S3_READ_ERROR"
    assert result.state_json == '{"a": 1}'


def test_concurrent_steps_each_get_a_fresh_worker(unsafe_pool: PoolSandbox) -> None:
    results = []
    lock = threading.Lock()

    def one() -> None:
        result = unsafe_pool.run_step(unsafe("import os\nprint(os.getpid())"))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8
    assert all(r.success and r.stdout.strip() == "1" for r in results)


def test_unreachable_pool_raises_lambda_error(tmp_path: Path) -> None:
    client = PoolSandbox(str(tmp_path / "nothing.sock"))
    with pytest.raises(RlmError) as caught:
        client.run_step(StepRequest(code="print(1)", limits=StepLimits(max_step_seconds=0.1)))
    assert caught.value.code == "LAMBDA_ERROR"
    client.close()


def test_client_choice_follows_settings(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "s.sock")
    assert isinstance(make_sandbox_client(Settings(LAMBDA_FUNCTION_NAME=socket_path)), PoolSandbox)
    # In-process is development mode: chosen only when asked for, else refused.
    assert isinstance(make_sandbox_client(Settings(RLM_DEV_UNSANDBOXED="1")), InProcessSandbox)
    with pytest.raises(RlmError) as refused:
        make_sandbox_client(Settings())
    assert "RLM_DEV_UNSANDBOXED=1" in refused.value.message


def test_strict_mode_refuses_a_missing_layer() -> None:
    policy = pool_policy()
    policy.clone_newnet = False
    with pytest.raises(RlmError) as caught, temporary_pool(policy, strict=True):
        pass
    assert caught.value.code == "LAMBDA_ERROR"
    assert "netns" in caught.value.details["log"]


def test_degraded_pool_says_so_in_health_and_status() -> None:
    policy = pool_policy()
    policy.clone_newipc = False
    with temporary_pool(policy) as degraded:
        layers = {layer.name: layer for layer in degraded.status().layers}
        assert not layers["ipcns"].active
        assert layers["ipcns"].detail == "disabled by policy"
        with grpc.insecure_channel(f"unix:{degraded.socket_path}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=HARDENED_HEALTH_NAME))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert degraded.run_step(StepRequest(code="print(1)", state_json="{}")).success


def test_doctor_reports_every_layer_active() -> None:
    report = run_doctor(Settings())
    assert report["all_active"], report["missing"]
    assert [layer["name"] for layer in report["layers"]][:2] == ["netns", "mountns"]
    assert "socket" not in report["seccomp"]["allow"]
    assert report["rlimits"]["RLIMIT_FSIZE"] == 0
    assert os.geteuid() != 0 or report["running_as_root"]


def test_pool_policy_comes_from_settings() -> None:
    settings = Settings(RLM_SANDBOX_POLICY_JSON='{"warm_workers": 3, "seccomp_allowlist": ["read", "write"]}')
    policy = pool_policy(settings)
    assert policy.warm_workers == 3
    assert list(policy.seccomp_allowlist) == ["read", "write"]
    assert policy.max_step_seconds == pool_policy().max_step_seconds


def test_zygote_death_is_a_lambda_error_and_the_pool_exits() -> None:
    with temporary_pool(allow_unsafe=True) as doomed:
        assert doomed.server_pid is not None
        server = psutil.Process(doomed.server_pid)
        (zygote,) = server.children()
        zygote.kill()
        give_up = time.monotonic() + 15
        with pytest.raises(RlmError) as caught:
            while time.monotonic() < give_up:  # until the front stops serving
                result = doomed.run_step(unsafe("print(1)"))
                # A worker hardened and handed over before the kill may still
                # answer; anything else is a clean LAMBDA_ERROR.
                assert result.success or result.error.code == "LAMBDA_ERROR"
                time.sleep(0.05)
        assert caught.value.code == "LAMBDA_ERROR"
        assert server.wait(15) is not None
        # The front removed what the killed zygote could not.
        assert not Path(f"/sys/fs/cgroup/memory/rlm-sandbox/{zygote.pid}").exists()


def test_many_documents_fit_and_too_many_are_refused(pool: PoolSandbox, tmp_path: Path) -> None:
    def manifest(count: int) -> list[ContextDocument]:
        docs = []
        for index in range(count):
            text = f"document {index}"
            (tmp_path / f"{index}.txt").write_text(text)
            offsets = tmp_path / f"{index}.offsets.json"
            offsets.write_text(json.dumps(build_offsets(text, f"d{index}")))
            meta = tmp_path / f"{index}.meta.json"
            meta.write_text("{}")
            docs.append(
                ContextDocument(
                    doc_index=index,
                    doc_id=f"d{index}",
                    text_path=str(tmp_path / f"{index}.txt"),
                    offsets_path=str(offsets),
                    meta_path=str(meta),
                )
            )
        return docs

    code = "print(len(context), context[79][0:11])"
    result = pool.run_step(StepRequest(code=code, state_json="{}", context_manifest=manifest(80)))
    assert result.success, result.error
    assert result.stdout.strip() == "80 document 79"
    refused = pool.run_step(StepRequest(code=code, state_json="{}", context_manifest=manifest(90)))
    assert refused.error.code == "VALIDATION_ERROR"


def test_sigkill_of_a_busy_worker_in_the_production_pool(pool: PoolSandbox) -> None:
    # Done-when: SIGKILL mid-step -> an error result for that step; the next succeeds.
    assert pool.server_pid is not None
    outcome: list[StepResult] = []
    request = StepRequest(
        code="while True:\n    pass",
        state_json='{"keep": 1}',
        limits=StepLimits(max_step_seconds=20, max_instructions=10**12),
    )
    thread = threading.Thread(target=lambda: outcome.append(pool.run_step(request)))
    thread.start()
    victims: list[psutil.Process] = []
    give_up = time.monotonic() + 10
    while not victims and time.monotonic() < give_up:
        time.sleep(0.05)
        for zygote in psutil.Process(pool.server_pid).children():
            victims = [w for w in zygote.children() if w.status() == psutil.STATUS_RUNNING]
    assert victims
    for worker in victims:
        worker.kill()
    thread.join(30)
    assert outcome[0].error.code == "LAMBDA_ERROR"
    assert json.loads(outcome[0].error.details_json)["exit"] == {"signal": "SIGKILL"}
    assert outcome[0].state_json == '{"keep": 1}'
    after = pool.run_step(StepRequest(code="print(6 * 7)", state_json="{}"))
    assert after.success and after.stdout.strip() == "42"
