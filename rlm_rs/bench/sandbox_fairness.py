"""`rlm-rs bench sandbox_fairness`: a light tenant's step latency, alone and
while a heavy tenant saturates the hardened pool with long steps.

The heavy tenant keeps `--heavy-threads` long steps in flight (each burns CPU
in a C-level loop until its `--heavy-seconds` wall clock kills it), so
every regular worker is busy and its queue is full; the light tenant runs a
trivial step `--gap-ms` apart. The pool's fair scheduler gives the light
tenant the reserved slot. Prints numbers only; it never asserts a threshold.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import threading
import time
from typing import Any

from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest

DESCRIPTION = "sandbox fairness: a light tenant's latency alone vs while a heavy tenant saturates the pool"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--light-steps", type=int, default=40, help="light steps per phase")
    parser.add_argument("--gap-ms", type=float, default=50.0, help="gap between light steps")
    parser.add_argument("--heavy-seconds", type=float, default=3.0, help="each heavy step's wall clock")
    parser.add_argument("--heavy-threads", type=int, default=0, help="steps in flight (0: pool_size+4)")


def _light(pool: Any, steps: int, gap_s: float) -> dict[str, float]:
    request = StepRequest(tenant_id="light", code="x = sum(range(100))\nprint(x)", state_json="{}")
    latencies = []
    failures = 0
    for _ in range(steps):
        time.sleep(gap_s)
        started = time.perf_counter()
        result = pool.run_step(request)
        latencies.append((time.perf_counter() - started) * 1000)
        failures += not result.success
    latencies.sort()
    return {
        "median_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
        "failed": failures,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.sandbox.client import temporary_pool
    from rlm_rs.sandbox.pool.server import pool_policy

    policy = pool_policy()
    heavy_threads = args.heavy_threads or policy.pool_size + 4
    heavy = StepRequest(
        tenant_id="heavy",
        # One tick per ~20 ms of C work: the loop outlives the instruction
        # budget and ends at the wall clock (STEP_TIMEOUT).
        code="big = [0] * 5_000_000\nwhile True:\n    found = -1 in big",
        state_json="{}",
        limits=StepLimits(max_step_seconds=args.heavy_seconds),
    )
    outcomes: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    results: dict[str, Any] = {}
    with temporary_pool(policy) as pool:
        results["light_alone"] = _light(pool, args.light_steps, args.gap_ms / 1000)

        def flood() -> None:
            while not stop.is_set():
                result = pool.run_step(heavy)
                outcomes[result.error.code or "success"] += 1
                if result.error.code == "RATE_LIMITED":
                    time.sleep(0.05)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(heavy_threads)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # every regular worker busy, the heavy queue full
        status = pool.status()
        results["light_under_load"] = _light(pool, args.light_steps, args.gap_ms / 1000)
        stop.set()
        for thread in threads:
            thread.join(args.heavy_seconds + 60)
    results["light_p99_under_load_over_alone"] = (
        results["light_under_load"]["p99_ms"] / results["light_alone"]["p99_ms"]
    )
    results["heavy"] = {
        "threads": heavy_threads,
        "step_seconds": args.heavy_seconds,
        "busy_workers_seen": status.busy_workers,
        "outcomes": dict(outcomes),
    }
    results["pool"] = {
        "pool_size": policy.pool_size,
        "reserve_workers": policy.reserve_workers or 1,
        "warm_workers": policy.warm_workers,
    }
    return results
