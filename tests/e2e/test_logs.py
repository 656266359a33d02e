"""End to end: the real log files of a running `rlm-rs up`, after forced internal errors.

Every line of every component's log is one JSON object; no API key the test created
appears anywhere (the keys travel in `authorization` metadata into requests that fail
with internal errors, whose tracebacks are logged); request lines carry request_id and
tenant_id, step lines execution_id and turn_index, and the gateway's lines request_id.
A second `up` whose control plane cannot start prints a log tail from that run only.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil

from rlm_rs.v1 import common_pb2, execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc
from tests.e2e.conftest import REPO, UpProcess, free_port
from tests.e2e.test_appliance import run_demo

COMPONENT_LOGS = ("sandbox-pool.log", "control-plane.log", "ingestion-worker.log", "gateway.log")


def create_key(data_dir: Path, tenant: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "keys", "create", "--tenant", tenant, "--data-dir", str(data_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def corrupt_session_record(data_dir: Path, tenant: str, session_id: str) -> None:
    """A session record that is JSON but not a record (SQLite's listing index reads
    every body as JSON, so a torn body cannot be written): any read of it is an
    internal error."""
    with sqlite3.connect(data_dir / "metadata.sqlite3") as db:
        db.execute(
            "INSERT INTO rlm_sessions (pk, sk, gsi1pk, gsi2pk, body) VALUES (?, ?, NULL, NULL, ?)",
            (f"TENANT#{tenant}", f"SESSION#{session_id}", '["status", "READY", "not a record"]'),
        )


def read_log_lines(data_dir: Path) -> dict[str, list[str]]:
    logs = data_dir / "logs"
    return {name: (logs / name).read_text(encoding="utf-8").splitlines() for name in COMPONENT_LOGS}


def parsed(lines: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    records, not_json = [], []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            not_json.append(line)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            not_json.append(line)
    return records, not_json


def force_internal_errors(up: UpProcess, keys: dict[str, str]) -> list[str]:
    """Calls that end INTERNAL (or with any status) while a key is in their metadata;
    returns the status names seen."""
    seen: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{up.grpc_port}") as channel:
        sessions = session_pb2_grpc.SessionServiceStub(channel)
        executions = execution_pb2_grpc.ExecutionServiceStub(channel)
        calls: list[tuple[Any, Any, str]] = [
            (sessions.GetSession, session_pb2.GetSessionRequest(session_id="sess_corrupt"), keys["corrupt"]),
            (
                sessions.DeleteSession,
                session_pb2.DeleteSessionRequest(session_id="sess_corrupt"),
                keys["corrupt"],
            ),
            (sessions.ListSessions, session_pb2.ListSessionsRequest(page_token="²"), keys["a"]),
        ]
        for method, request, key in calls:
            try:
                method(request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
                seen.append("OK")
            except grpc.RpcError as exc:
                seen.append(exc.code().name)
        # A 3 MB request in the frame of a failing call: rendering it must not
        # take the control plane's threads (it took over 10 minutes with locals).
        big = execution_pb2.ResolveToolsRequest(
            execution_id="exec_" + "x" * 20,
            tool_requests=common_pb2.ToolRequests(
                llm=[common_pb2.LlmRequest(key=f"k{i}", prompt="p" * 30_000) for i in range(100)]
            ),
        )
        started = time.monotonic()
        try:
            executions.ResolveTools(big, metadata=(("authorization", f"Bearer {keys['b']}"),), timeout=60)
            seen.append("OK")
        except grpc.RpcError as exc:
            seen.append(exc.code().name)
        assert time.monotonic() - started < 20, "a 3 MB request took the control plane too long"
    with httpx.Client(base_url=up.base_url, timeout=30) as client:
        failed = client.get(
            "/v1/sessions/sess_corrupt",
            headers={"authorization": f"Bearer {keys['corrupt']}", "x-request-id": "logs-e2e-corrupt"},
        )
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "INTERNAL_ERROR"
        assert "Traceback" not in failed.text and keys["corrupt"] not in failed.text
        for key in keys.values():  # keys in headers of ordinary and refused requests
            client.get("/v1/sessions", headers={"authorization": f"Bearer {key}"})
            client.get("/v1/sessions", headers={"authorization": f"Bearer {key}x"})
    return seen


def pool_environment(up: UpProcess) -> dict[str, str]:
    for pid in up.seen_pids:
        try:
            process = psutil.Process(pid)
            if "sandbox" in process.cmdline() and "serve" in process.cmdline():
                return dict(process.environ())
        except psutil.Error:
            continue
    raise AssertionError("no sandbox pool process among the appliance's children")


def test_real_logs_are_json_with_context_and_hold_no_key(
    appliance_factory: type[UpProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    up = appliance_factory(data_dir, free_port(), free_port())
    up.start()
    assert pool_environment(up)["RLM_SANDBOX_DOCUMENT_ROOT"] == str(data_dir.resolve())
    keys = {name: create_key(data_dir, f"logs-{name}") for name in ("a", "b", "corrupt")}
    demo, keys["demo"] = run_demo(up)
    assert demo["status"] == "COMPLETED"
    corrupt_session_record(data_dir, "logs-corrupt", "sess_corrupt")
    seen = force_internal_errors(up, keys)
    assert seen[:2] == ["INTERNAL", "INTERNAL"], seen  # the corrupt record, read two ways
    time.sleep(1.0)  # the last lines reach the files (each process writes unbuffered)

    logs = read_log_lines(data_dir)
    everything = "\n".join(line for lines in logs.values() for line in lines)
    for name, key in keys.items():
        secret = key[len("rlm_key_") + 4 :]  # everything after the public 4-character prefix
        assert key not in everything, f"the {name} key is in a log file"
        assert secret[:12] not in everything, f"part of the {name} key is in a log file"

    records: dict[str, list[dict[str, Any]]] = {}
    for name, lines in logs.items():
        records[name], not_json = parsed(lines)
        assert not_json == [], f"{name}: lines that are not JSON: {not_json[:5]}"
        assert records[name], f"{name} is empty"

    control = records["control-plane.log"]
    failures = [r for r in control if r.get("event") == "rpc_failed"]
    assert len(failures) >= 2, "the forced internal errors were not logged"
    for failure in failures:
        text = json.dumps(failure)
        assert failure.get("exception") or failure.get("traceback"), failure  # the frames are there
        assert "locals" not in text and "Bearer rlm_key" not in text
        assert failure.get("request_id") and failure.get("method")

    calls = [r for r in control if r.get("event") == "rpc"]
    assert calls and all(r.get("request_id") and r.get("method") for r in calls)
    corrupt_calls = [r for r in calls if r.get("tenant_id") == "logs-corrupt"]
    assert {r["code"] for r in corrupt_calls} >= {"INTERNAL_ERROR"}
    via_gateway = [r for r in control if r.get("request_id") == "logs-e2e-corrupt"]
    assert {r.get("event") for r in via_gateway} >= {"rpc_failed", "rpc"}
    assert all(r.get("tenant_id") == "logs-corrupt" for r in via_gateway)

    steps = [r for r in control if r.get("event") == "step_finished"]
    assert steps and all(r.get("execution_id") and isinstance(r.get("turn_index"), int) for r in steps)
    assert {r["execution_id"] for r in steps} >= {demo["execution_id"]}
    assert sorted({r["turn_index"] for r in steps if r["execution_id"] == demo["execution_id"]}) == [0, 1]

    gateway = records["gateway.log"]
    requests = [r for r in gateway if r.get("event") == "http_request"]
    assert requests and all(r.get("request_id") for r in requests)
    assert any(r["request_id"] == "logs-e2e-corrupt" and r["status"] == 500 for r in requests)
    assert any(r.get("logger", "").startswith("uvicorn") for r in gateway), "uvicorn's own lines"

    assert up.stop() == 0
    assert up.alive_leftovers() == []
    first_run = (data_dir / "logs" / "control-plane.log").read_text(encoding="utf-8")

    # A second run whose control plane cannot start: the printed tail is this run's.
    again = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "up", "--data-dir", str(data_dir),
         "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--ready-timeout", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        env={**up.clean_env(), "RLM_TLS_CERT_FILE": str(tmp_path / "missing.pem"),
             "RLM_TLS_KEY_FILE": str(tmp_path / "missing.key")},
    )  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    assert "control plane exited" in again.stderr
    assert "control_plane_serving" not in again.stderr and "rpc_failed" not in again.stderr
    assert "missing.key" in again.stderr  # the reason (the key file is read first), from this run
    assert (data_dir / "logs" / "control-plane.log.1").read_text(encoding="utf-8") == first_run
