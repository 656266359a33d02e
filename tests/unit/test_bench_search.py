"""`rlm-rs bench search` runs end to end on a moto server and embedded storage (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_search_reports_both_back_ends_and_both_corpora() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "search", "--json", "--queries", "2", "--text-mib", "0.05"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"bench search exited {done.returncode}; its stderr:\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout)
    assert set(result) == {"demo", "synthetic"}
    for corpus in result.values():
        assert set(corpus) == {"aws_moto", "embedded"}
        moto, embedded = corpus["aws_moto"], corpus["embedded"]
        assert moto["artifact_bytes"] > 0 and moto["text_chars"] == embedded["text_chars"] > 0
        assert moto["first_query_ms"]["hits"] == embedded["first_query_ms"]["hits"] > 0
