"""`rlm-rs bench sandbox`: per-step latency and throughput of three ways to run a step.

(a) the in-process executor (policy layers only), (b) a fresh `python -c`
interpreter per step (what isolation costs without a pool), (c) the hardened
pool end to end through SandboxService over its Unix socket (gRPC client in
this process, a temporary pool process). Concurrency 1 and 4, all in one run,
with the ratios. The pool's `c1` is a step with a warm worker waiting: steps
`--gap-ms` apart, as between root-model turns (each turn waits for a model
reply, far longer than a worker takes to be forked and hardened). `*_back_to_back`
sends the next step the moment the last one returns, so forking and hardening
the replacements is on the clock: that is the pool's throughput when saturated.
`pool_cpu_ms_per_step` splits the CPU of the back-to-back c1 run by process
(this client, the gRPC front, the zygote, the workers it reaped) and
`pool_minor_faults_per_step` its page faults the same way (a forked worker's
cost is mostly copy-on-write faults); every step uses up a worker, so
`pool_cpu_bound_steps_per_second` (CPUs x 1000 / that total CPU) is the
ceiling any concurrency can reach on this machine. `grpc_unary_c1` is a
GetPoolStatus call back to back (gRPC and a status round trip to the zygote);
`grpc_health_c1_gap` an empty health check `--gap-ms` apart, the gRPC hop
alone: the floor under the pool's c1 (its ratio to the in-process step with a
gap is in `ratios`). `targets` compares the run with issue 17's goals next to
the load average. Prints numbers only; it
never asserts a threshold.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy, StepRequest

DESCRIPTION = "sandbox step latency: in-process vs fresh interpreter vs hardened pool"
TRIVIAL_CODE = "x = 1 + 1\nprint(x)"
_FRESH_SCRIPT = (
    "import sys\n"
    "from rlm_rs.sandbox.executor import run_step\n"
    "from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest\n"
    "result = run_step(StepRequest.FromString(sys.stdin.buffer.read()))\n"
    "sys.stdout.buffer.write(result.SerializeToString())\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=400, help="steps per pool/in-process case")
    parser.add_argument("--fresh-steps", type=int, default=30, help="steps per fresh-interpreter case")
    parser.add_argument("--gap-ms", type=float, default=10.0, help="gap between pool c1 steps")
    parser.add_argument("--warm-workers", type=int, default=0, help="pool warm workers (0: policy)")


def _request() -> StepRequest:
    return StepRequest(
        tenant_id="bench", session_id="s", execution_id="e", code=TRIVIAL_CODE, state_json="{}"
    )


def _measure(step: Callable[[], Any], steps: int, concurrency: int, gap_s: float = 0.0) -> dict[str, float]:
    """Run `steps` calls split over `concurrency` threads; latency per call."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, steps // concurrency)

    def loop() -> None:
        mine = []
        for _ in range(per_thread):
            if gap_s:
                time.sleep(gap_s)
            started = time.perf_counter()
            result = step()
            mine.append(time.perf_counter() - started)
            if not getattr(result, "success", True):
                raise RuntimeError(f"step failed: {result.error}")
        with lock:
            latencies.extend(mine)

    step()  # warm-up
    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "steps_per_second": len(latencies) / elapsed,
        "steps": len(latencies),
    }


def _proc_stat(pid: int) -> dict[str, float]:
    """CPU (ms) and minor page faults of a process and of its reaped children, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    minflt, cminflt, utime, stime, cutime, cstime = (int(fields[i]) for i in (7, 8, 11, 12, 13, 14))
    return {
        "cpu_ms": (utime + stime) * 1000 / tick,
        "children_cpu_ms": (cutime + cstime) * 1000 / tick,
        "faults": minflt,
        "children_faults": cminflt,
    }


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def _measure_cpu(
    step: Callable[[], Any], steps: int, front_pid: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Back-to-back c1, with the CPU and the minor page faults each process
    spent per step (the workers through the zygote's reaped children)."""
    zygote = _children(front_pid)[0]
    front0, zygote0 = _proc_stat(front_pid), _proc_stat(zygote)
    client0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    measured = _measure(step, steps, 1)
    front1, zygote1 = _proc_stat(front_pid), _proc_stat(zygote)
    client1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    count = measured["steps"] + 1  # and the warm-up step
    cpu = {
        "client": (client1[0] - client0[0]) * 1000 / count,
        "front": (front1["cpu_ms"] - front0["cpu_ms"]) / count,
        "zygote": (zygote1["cpu_ms"] - zygote0["cpu_ms"]) / count,
        "workers": (zygote1["children_cpu_ms"] - zygote0["children_cpu_ms"]) / count,
    }
    cpu["total"] = sum(cpu.values())
    faults = {
        "client": (client1[1] - client0[1]) / count,
        "front": (front1["faults"] - front0["faults"]) / count,
        "zygote": (zygote1["faults"] - zygote0["faults"]) / count,
        "workers": (zygote1["children_faults"] - zygote0["children_faults"]) / count,
    }
    return measured, cpu, faults


def _fresh_interpreter_step(payload: bytes) -> Callable[[], Any]:
    def step() -> Any:
        completed = subprocess.run(
            [sys.executable, "-I", "-c", _FRESH_SCRIPT],
            input=payload,
            capture_output=True,
            check=True,
            timeout=60,
        )
        from rlm_rs.sandbox.v1.sandbox_pb2 import StepResult

        return StepResult.FromString(completed.stdout)

    return step


def _pool_cases(
    policy: SandboxPolicy, request: StepRequest, args: argparse.Namespace, results: dict[str, Any]
) -> Any:
    """The hardened pool's cases into `results`; returns its layer report.
    `c1_inline_call` is a step making one inline call answered at once (the
    relay's round trip: a StepOutput out, a ReplyInline back)."""
    from rlm_rs.sandbox.client import temporary_pool
    from rlm_rs.sandbox.v1.sandbox_pb2 import InlineCall, InlineReply

    def answer(call: InlineCall, timeout: float) -> InlineReply:
        return InlineReply(texts=["pong"])

    inline = StepRequest()
    inline.CopyFrom(request)
    inline.code = "print(llm_query('ping'))"
    with temporary_pool(policy) as pool:
        layers = pool.status().layers
        assert pool.server_pid is not None
        back_to_back, cpu, faults = _measure_cpu(lambda: pool.run_step(request), args.steps, pool.server_pid)
        results["pool"] = {
            "c1": _measure(lambda: pool.run_step(request), args.steps, 1, args.gap_ms / 1000),
            "c1_back_to_back": back_to_back,
            "c4_back_to_back": _measure(lambda: pool.run_step(request), args.steps, 4),
            "c1_inline_call": _measure(lambda: pool.run_step(inline, answer), args.steps // 4, 1),
        }
        results["pool_cpu_ms_per_step"] = cpu
        results["pool_minor_faults_per_step"] = faults
        # Every step uses up one worker, so saturated throughput cannot pass
        # the CPUs' time over the CPU one step costs all the processes.
        results["pool_cpu_bound_steps_per_second"] = (os.cpu_count() or 1) * 1000 / cpu["total"]
        results["grpc_unary_c1"] = _measure(pool.status, args.steps // 4, 1)
        results["grpc_health_c1_gap"] = _measure(pool.healthy, args.steps // 4, 1, args.gap_ms / 1000)
    return layers


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rlm_rs.sandbox.executor import run_step
    from rlm_rs.sandbox.pool.server import pool_policy

    request = _request()
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    results["in_process"] = {f"c{c}": _measure(lambda: run_step(request), args.steps, c) for c in (1, 4)}
    results["in_process"]["c1_gap"] = _measure(lambda: run_step(request), args.steps, 1, args.gap_ms / 1000)
    fresh = _fresh_interpreter_step(request.SerializeToString())
    results["fresh_interpreter"] = {f"c{c}": _measure(fresh, args.fresh_steps, c) for c in (1, 4)}
    policy: SandboxPolicy = pool_policy()
    if args.warm_workers:
        policy.warm_workers = args.warm_workers
    layers = _pool_cases(policy, request, args, results)
    fresh_c1 = results["fresh_interpreter"]["c1"]["median_ms"]
    results["ratios"] = {
        "fresh_interpreter_over_pool_c1": fresh_c1 / results["pool"]["c1"]["median_ms"],
        "fresh_interpreter_over_pool_c1_back_to_back": fresh_c1
        / results["pool"]["c1_back_to_back"]["median_ms"],
        "pool_c1_over_in_process_c1": results["pool"]["c1"]["median_ms"]
        / results["in_process"]["c1"]["median_ms"],
        "pool_c4_throughput_over_fresh_c4": results["pool"]["c4_back_to_back"]["steps_per_second"]
        / results["fresh_interpreter"]["c4"]["steps_per_second"],
        # The floor under the gap ratio: one empty gRPC call, no step at all.
        "grpc_health_c1_gap_over_in_process_c1_gap": results["grpc_health_c1_gap"]["median_ms"]
        / results["in_process"]["c1_gap"]["median_ms"],
    }
    pool_c1 = results["pool"]["c1"]["median_ms"]
    results["targets"] = {
        "median_back_to_back_ms<=2": results["pool"]["c1_back_to_back"]["median_ms"],
        "c4_steps_per_second>=400": results["pool"]["c4_back_to_back"]["steps_per_second"],
        "pool_c1_over_in_process_c1<=4": pool_c1 / results["in_process"]["c1"]["median_ms"],
        "pool_c1_over_in_process_c1_gap<=4": pool_c1 / results["in_process"]["c1_gap"]["median_ms"],
    }
    results["load_average_after"] = os.getloadavg()
    results["pool_layers_active"] = f"{sum(layer.active for layer in layers)}/{len(layers)}"
    results["pool_warm_workers"] = policy.warm_workers
    results["gap_ms"] = args.gap_ms
    return results
