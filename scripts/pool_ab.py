"""A/B of the sandbox pool: CPU and minor faults per step by process, two trees side by side.

    python scripts/pool_ab.py /path/to/old/tree /path/to/new/tree [--rounds 6] [--batch 50]
        [--concurrency 1] [--gap-ms 0] [--code "x = 1 + 1\\nprint(x)"]

Each tree (a checkout with its own `.venv`, `uv sync --frozen`) gets a driver
process running that tree's interpreter and package: it starts a temporary
pool, warms it, and on each request runs one batch of steps, reporting the CPU
(utime+stime from /proc: this client, the gRPC front, the zygote, the workers
the zygote reaped) and the minor faults each spent. Batches alternate between
the trees so both see the same machine load; on a shared host this is the
comparison to trust, not absolute times. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from rlm_rs.bench.sandbox import _children

_CPU_KEYS = ("client", "front", "zygote", "workers")
_FAULT_KEYS = ("f_front", "f_zygote", "f_workers")


def _stat(pid: int) -> tuple[int, int, float, float]:
    """(minflt, cminflt, own CPU ms, reaped children's CPU ms) of a process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) * 1000 / tick
    children = (int(fields[13]) + int(fields[14])) * 1000 / tick
    return int(fields[7]), int(fields[8]), own, children


def _batch(pool: Any, request: Any, steps: int, concurrency: int, gap_s: float) -> tuple[list[float], float]:
    latencies: list[float] = []

    def loop(count: int) -> None:
        for _ in range(count):
            if gap_s:
                time.sleep(gap_s)
            started = time.perf_counter()
            result = pool.run_step(request)
            latencies.append(time.perf_counter() - started)
            if not result.success:
                raise RuntimeError(f"step failed: {result.error}")

    threads = [threading.Thread(target=loop, args=(steps // concurrency,)) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


def driver(args: argparse.Namespace) -> None:
    """In one tree's interpreter: a pool, then one batch per line on stdin."""
    from rlm_rs.sandbox.client import temporary_pool
    from rlm_rs.sandbox.pool.server import pool_policy

    try:
        from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest
    except ImportError:  # a tree from before the sandbox proto had its own package
        from rlm_rs.v1.sandbox_pb2 import StepRequest  # type: ignore[no-redef,import-not-found,unused-ignore]
    request = StepRequest(tenant_id="ab", session_id="s", execution_id="e", code=args.code, state_json="{}")
    with temporary_pool(pool_policy()) as pool:
        for _ in range(30):
            pool.run_step(request)
        front = pool.server_pid
        assert front is not None
        zygote = _children(front)[0]
        print("ready", flush=True)
        for line in sys.stdin:
            time.sleep(0.3)  # the other tree's replacements settle
            front0, zygote0, client0 = _stat(front), _stat(zygote), time.process_time()
            latencies, wall = _batch(pool, request, int(line), args.concurrency, args.gap_ms / 1000)
            time.sleep(0.3)  # this tree's replacements finish hardening and warming up
            front1, zygote1, client1 = _stat(front), _stat(zygote), time.process_time()
            report = {
                "client": (client1 - client0) * 1000,
                "front": front1[2] - front0[2],
                "zygote": zygote1[2] - zygote0[2],
                "workers": zygote1[3] - zygote0[3],
                "f_front": front1[0] - front0[0],
                "f_zygote": zygote1[0] - zygote0[0],
                "f_workers": zygote1[1] - zygote0[1],
                "latencies": latencies,
                "wall": wall,
            }
            print(json.dumps(report), flush=True)


def compare(args: argparse.Namespace) -> None:
    trees = {"old": args.old, "new": args.new}
    forwarded = ["--concurrency", str(args.concurrency), "--gap-ms", str(args.gap_ms), "--code", args.code]
    drivers = {
        name: subprocess.Popen(
            [f"{tree}/.venv/bin/python", os.path.abspath(__file__), "--driver", *forwarded],
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, tree in trees.items()
    }
    totals: dict[str, dict[str, Any]] = {
        name: {**dict.fromkeys(_CPU_KEYS + _FAULT_KEYS, 0.0), "latencies": [], "wall": 0.0, "steps": 0}
        for name in trees
    }
    try:
        for process in drivers.values():
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for _ in range(args.rounds):
            for name, process in drivers.items():
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{args.batch}\n")
                process.stdin.flush()
                batch = json.loads(process.stdout.readline())
                total = totals[name]
                for key in _CPU_KEYS + _FAULT_KEYS:
                    total[key] += batch[key]
                total["latencies"] += batch["latencies"]
                total["wall"] += batch["wall"]
                total["steps"] += len(batch["latencies"])
    finally:
        for process in drivers.values():
            if process.stdin is not None:
                process.stdin.close()
            process.wait(60)
    for name, total in totals.items():
        steps = total["steps"]
        cpu = {key: round(total[key] / steps, 2) for key in _CPU_KEYS}
        cpu["total"] = round(sum(cpu.values()), 2)
        line = {
            "tree": trees[name],
            "cpu_ms_per_step": cpu,
            "minor_faults_per_step": {key[2:]: round(total[key] / steps) for key in _FAULT_KEYS},
            "median_ms": round(statistics.median(total["latencies"]) * 1000, 2),
            "steps_per_second": round(steps / total["wall"], 1),
            "steps": steps,
        }
        print(name, json.dumps(line))
    print("load_average", json.dumps([round(value, 1) for value in os.getloadavg()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("old", nargs="?", help="checkout measured first in each round")
    parser.add_argument("new", nargs="?", help="checkout measured second in each round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=50, help="steps per tree per round")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause before each step")
    parser.add_argument("--code", default="x = 1 + 1\nprint(x)")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args)
    elif args.old and args.new:
        compare(args)
    else:
        parser.error("give two checkouts to compare")


if __name__ == "__main__":
    main()
