"""`rlm-rs bench load` runs the real stack end to end for a few seconds (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_load_reports_throughput_errors_and_process_samples() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "load", "--json", "--minutes", "0.08",
         "--runtime-clients", "1", "--answerer-clients", "1", "--sample-seconds", "1"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(output)
    assert result["runtime_steps"]["count"] > 0 and result["answerer_executions"]["count"] > 0
    assert result["errors"] == {}
    assert set(result["slopes"]) == {"pool", "pool-workers", "control-plane", "gateway"}
    assert len(result["samples"]) >= 2 and result["samples"][0]["pool"]["processes"] >= 2  # front + zygote
