"""`rlm-rs bench aws`: storage requests and control-plane CPU per execution on the AWS back end.

A moto server in its own process (DynamoDB + S3 over HTTP on loopback) and
a real control plane in this one (gRPC on loopback, the in-process sandbox,
the scripted provider of `bench orchestrator`, so model latency is ~0) run
3-turn executions one after another. Reports every storage request per
execution (all threads, counted through a proxy over the stores), per turn,
and this process's CPU per turn (the control plane, its gRPC client and the
in-process sandbox; moto's CPU is its own process's), with the embedded
back end in the same run as the reference. Never used by a deployment.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench._storage_calls import count_storage_calls, per_turn
from rlm_rs.bench.orchestrator import SCRIPT

DESCRIPTION = "storage requests and control-plane CPU per execution on DynamoDB + S3 (a moto server)"
TURNS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=20, help="measured executions per back end")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the moto server did not start")


def _measure(settings: Any, executions: int) -> dict[str, Any]:
    import grpc

    from rlm_rs.control.server import start_control_plane
    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.providers.scripted import ScriptedProvider
    from rlm_rs.sandbox.client import InProcessSandbox
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.uploads import store_upload
    from rlm_rs.v1 import execution_pb2, execution_pb2_grpc, session_pb2, session_pb2_grpc
    from rlm_rs.wire_enums import EXECUTION_STATUS

    storage = open_storage(settings)
    storage.init()
    calls = count_storage_calls(storage)
    plane = start_control_plane(settings, "127.0.0.1:0", storage=storage, sandbox=InProcessSandbox(),
                                provider=ScriptedProvider(SCRIPT))  # fmt: skip
    key, _ = storage.metadata.create_api_key("bench")
    auth = (("authorization", f"Bearer {key}"),)
    uri = store_upload(
        storage.blobs, "bench", "bench.txt", ("The Lisbon office grew fastest. " * 400).encode()
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
    try:
        session = session_pb2_grpc.SessionServiceStub(channel).CreateSession(
            session_pb2.CreateSessionRequest(docs=[session_pb2.DocumentInput(
                source_name="bench.txt", mime_type="text/plain", raw_s3_uri=uri)]),
            metadata=auth)  # fmt: skip
        IngestionWorker(storage, settings).run_once()
        stub = execution_pb2_grpc.ExecutionServiceStub(channel)
        request = execution_pb2.StartExecutionRequest(
            session_id=session.session_id,
            question="Which office grew fastest?",
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=120),
        )
        stub.StartExecution(request, metadata=auth)  # warm-up (fills the sub-call cache, the doc cache)
        time.sleep(0.5)
        calls.take()
        calls.enabled = True
        cpu, wall = time.process_time(), time.perf_counter()
        statuses = [
            str(EXECUTION_STATUS.to_domain(stub.StartExecution(request, metadata=auth).status))
            for _ in range(executions)
        ]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        calls.enabled = False
        logged = calls.take()
        timings = list(plane.engine.turn_timings)[-turns_of(executions) :]
        finish_ms = list(plane.engine.finish_timings_ms)[-executions:]
    finally:
        channel.close()
        plane.stop(1)
        storage.close()
    split = per_turn(logged, executions)
    turns = executions * TURNS
    return {
        "completed": statuses.count("COMPLETED"),
        "storage_requests_per_execution": round(len(logged) / executions, 2),
        "storage_requests_per_turn_median": split["per_turn_median"],
        "per_turn_by_op": split["per_turn_mean_by_op"],
        "cpu_ms_per_turn": round(cpu * 1000 / turns, 2),
        "wall_ms_per_execution": round(wall * 1000 / executions, 1),
        "turn_phase_median_ms": {
            name: round(statistics.median(t.get(name, 0.0) for t in timings), 2)
            for name in ("storage_ms", "prompt_ms", "sandbox_ms", "tools_ms", "root_model_ms")
        },
        "finish_median_ms": round(statistics.median(finish_ms), 2) if finish_ms else 0.0,
    }


def turns_of(executions: int) -> int:
    return executions * TURNS


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.settings import Settings

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    results: dict[str, Any] = {}
    moto, endpoint = _moto()
    try:
        with tempfile.TemporaryDirectory(prefix="rlm-bench-aws-") as directory:
            unique = uuid.uuid4().hex[:8]
            common: dict[str, Any] = {"API_KEY_PEPPER": "bench", "RATE_LIMITS_JSON": UNLIMITED_RATE,
                                      "RLM_QUOTAS_JSON": UNLIMITED_QUOTAS}  # fmt: skip
            aws = Settings(
                RLM_STORAGE_BACKEND="aws", RLM_DATA_DIR=Path(directory) / "aws", AWS_ENDPOINT_URL=endpoint,
                AWS_REGION="us-east-1", DDB_TABLE_PREFIX=f"b{unique}_rlm_", S3_BUCKET=f"rlm-bench-{unique}",
                **common,
            )  # fmt: skip
            results["aws_moto"] = _measure(aws, args.executions)
            embedded = Settings(RLM_DATA_DIR=Path(directory) / "embedded", **common)
            results["embedded"] = _measure(embedded, args.executions)
    finally:
        moto.kill()  # it has nothing to flush
        moto.wait(10)
    return results
