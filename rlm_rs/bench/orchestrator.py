"""`rlm-rs bench orchestrator`: control-plane overhead per Answerer turn.

A real control plane (embedded storage in a temp dir; the set-up of
_plane.py: gRPC on loopback, the in-process sandbox, the scripted provider
so model latency is ~0) runs 3-turn executions (read + sub-call/YIELD +
FINAL). Reports the per-turn overhead (everything but the root model call)
median/p99 with its breakdown (storage, prompt, sandbox, tools, plus
trace/finalisation per execution), and executions per second at
concurrency 1 and 8 through StartExecution (synchronous). Storage
round-trips are counted too (_storage_calls.py): per turn (the root model
and tools aside), per execution's set-up and finalisation, and on the RPC
threads (creation, the synchronous wait).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench._plane import SCRIPT, BenchPlane, bench_plane
from rlm_rs.bench._storage_calls import per_turn

DESCRIPTION = "control-plane overhead per turn and executions/s (scripted provider)"
PHASES = ("storage_ms", "prompt_ms", "sandbox_ms", "tools_ms", "root_model_ms")
__all__ = ["SCRIPT", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executions", type=int, default=40, help="executions per concurrency level")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def _levels(bench: BenchPlane, executions: int) -> dict[str, Any]:
    """Throughput at concurrency 1 (storage calls and turn timings measured
    there) and 8."""
    bench.start_execution()  # warm-up (also fills the sub-call cache)
    engine = bench.plane.engine
    engine.turn_timings.clear()
    engine.finish_timings_ms.clear()
    measured: dict[str, Any] = {"throughput": {}}
    for concurrency in (1, 8):
        bench.calls.take()
        bench.calls.enabled = concurrency == 1
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            statuses = list(pool.map(bench.start_execution, range(executions)))
        seconds = time.perf_counter() - began
        measured["throughput"][f"c{concurrency}"] = {
            "executions_per_s": round(executions / seconds, 2),
            "completed": statuses.count("COMPLETED"), "executions": executions,
        }  # fmt: skip
        if concurrency == 1:
            measured["turn_timings"] = list(engine.turn_timings)
            measured["finish_ms"] = list(engine.finish_timings_ms)
            measured["storage_calls"] = per_turn(bench.calls.take(), executions)
            bench.calls.enabled = False
    return measured


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.settings import Settings

    with tempfile.TemporaryDirectory(prefix="rlm-bench-orch-") as directory:
        settings = Settings(RLM_DATA_DIR=Path(directory), API_KEY_PEPPER="bench",
                            RATE_LIMITS_JSON=UNLIMITED_RATE, RLM_QUOTAS_JSON=UNLIMITED_QUOTAS)  # fmt: skip
        with bench_plane(settings) as bench:
            measured = _levels(bench, args.executions)
    turn_timings, finish_ms = measured["turn_timings"], measured["finish_ms"]
    overhead = [sum(v for k, v in t.items() if k != "root_model_ms") for t in turn_timings]
    return {
        "turns_measured": len(turn_timings),
        "overhead_per_turn_ms": {
            "median": round(statistics.median(overhead), 3), "p99": round(_quantile(overhead, 0.99), 3),
        },
        "breakdown_median_ms": {
            name: round(statistics.median(t[name] for t in turn_timings), 3) for name in PHASES
        },
        "finalise_per_execution_ms": {"median": round(statistics.median(finish_ms), 3),
                                      "p99": round(_quantile(finish_ms, 0.99), 3)},
        "storage_calls": measured["storage_calls"],
        "three_turn_executions": measured["throughput"],
    }  # fmt: skip
