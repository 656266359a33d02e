"""`rlm-rs bench aws`: storage requests and control-plane CPU per execution on the AWS back end.

A moto server in its own process (DynamoDB + S3 over HTTP on loopback) and
a real control plane in this one (the set-up of `bench orchestrator`:
_plane.py, so model latency is ~0) run 3-turn executions one after another.
Reports every storage request per execution (all threads, counted through a
proxy over the stores), per turn, and this process's CPU per turn (the
control plane, its gRPC client and the in-process sandbox; moto's CPU is its
own process's), with the embedded back end in the same run as the
reference. Never used by a deployment.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench._plane import TURNS, BenchPlane, bench_plane, moto_server
from rlm_rs.bench._storage_calls import per_turn

DESCRIPTION = "storage requests and control-plane CPU per execution on DynamoDB + S3 (a moto server)"
PHASES = ("storage_ms", "prompt_ms", "sandbox_ms", "tools_ms", "root_model_ms")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=20, help="measured executions per back end")


def _measure(settings: Any, executions: int) -> dict[str, Any]:
    """`executions` measured one after another, after one warm-up (it fills
    the sub-call cache and the document cache)."""
    with bench_plane(settings, init_storage=True) as bench:
        bench.start_execution()
        time.sleep(0.5)
        bench.calls.take()
        bench.calls.enabled = True
        cpu, wall = time.process_time(), time.perf_counter()
        statuses = [bench.start_execution() for _ in range(executions)]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        bench.calls.enabled = False
        return _summary(bench, statuses, cpu, wall)


def _summary(bench: BenchPlane, statuses: list[str], cpu: float, wall: float) -> dict[str, Any]:
    executions = len(statuses)
    logged = bench.calls.take()
    timings = list(bench.plane.engine.turn_timings)[-executions * TURNS :]
    finish_ms = list(bench.plane.engine.finish_timings_ms)[-executions:]
    split = per_turn(logged, executions)
    return {
        "completed": statuses.count("COMPLETED"),
        "storage_requests_per_execution": round(len(logged) / executions, 2),
        "storage_requests_per_turn_median": split["per_turn_median"],
        "per_turn_by_op": split["per_turn_mean_by_op"],
        "cpu_ms_per_turn": round(cpu * 1000 / (executions * TURNS), 2),
        "wall_ms_per_execution": round(wall * 1000 / executions, 1),
        "turn_phase_median_ms": {
            name: round(statistics.median(t.get(name, 0.0) for t in timings), 2) for name in PHASES
        },
        "finish_median_ms": round(statistics.median(finish_ms), 2) if finish_ms else 0.0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.settings import Settings

    results: dict[str, Any] = {}
    moto, endpoint = moto_server()
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
