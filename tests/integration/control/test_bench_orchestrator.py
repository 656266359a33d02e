"""`rlm-rs bench orchestrator` runs end to end (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_orchestrator_reports_overhead_and_throughput() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "orchestrator", "--json", "--executions", "3"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(output)
    assert result["turns_measured"] == 9  # three 3-turn executions at concurrency 1
    assert set(result["breakdown_median_ms"]) == {
        "storage_ms",
        "prompt_ms",
        "sandbox_ms",
        "tools_ms",
        "root_model_ms",
    }
    calls = result["storage_calls"]
    # a turn reads and writes storage (the execution record, its state, its step record)
    assert calls["per_turn_median"] > 0 and calls["finalise_per_execution_median"] > 0
    assert calls["per_turn_mean_by_op"]["items.transact commit"] == 1.0  # step, state, counters: one request
    assert {c: v["completed"] for c, v in result["three_turn_executions"].items()} == {"c1": 3, "c8": 3}
