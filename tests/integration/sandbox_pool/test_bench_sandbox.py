"""`rlm-rs bench sandbox` runs end to end against a real pool and reports what
it promises: every case, the CPU and page faults per step by process, and the
CPU-bound ceiling derived from them (no timing asserts)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys


def test_bench_sandbox_reports_cpu_faults_and_the_ceiling() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "sandbox", "--json", "--steps", "24",
         "--fresh-steps", "2"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(output)
    assert set(result["pool"]) == {"c1", "c1_back_to_back", "c4_back_to_back", "c1_inline_call"}
    cpu, faults = result["pool_cpu_ms_per_step"], result["pool_minor_faults_per_step"]
    assert set(faults) == {"client", "front", "zygote", "workers"}
    # every step forks a worker: it and the zygote take copy-on-write faults
    assert faults["workers"] > 10 and faults["zygote"] > 1
    assert cpu["workers"] > 0
    assert math.isclose(cpu["total"], sum(v for k, v in cpu.items() if k != "total"))
    ceiling = result["pool_cpu_bound_steps_per_second"]
    assert math.isclose(ceiling, (os.cpu_count() or 1) * 1000 / cpu["total"])
    assert result["grpc_health_c1_gap"]["steps"] == 6
    assert result["ratios"]["grpc_health_c1_gap_over_in_process_c1_gap"] > 0
    assert set(result["targets"]) == {
        "median_back_to_back_ms<=2", "c4_steps_per_second>=400",
        "pool_c1_over_in_process_c1<=4", "pool_c1_over_in_process_c1_gap<=4",
    }  # fmt: skip
