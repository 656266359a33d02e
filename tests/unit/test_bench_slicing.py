"""`rlm-rs bench slicing` runs end to end and reports what it promises (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_slicing_reports_both_variants() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "slicing", "--json", "--size-mb", "2",
         "--slices", "200"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(output)
    for variant in ("docview", "str"):
        assert {"median_us", "p99_us", "slices_per_s", "rss_mib", "peak_rss_mib"} <= set(result[variant])
    assert result["text"]["chars"] > 1_000_000
    assert set(result["ratios"]) == {
        "docview_over_str_median", "docview_rss_over_empty_mib", "str_rss_over_empty_mib",
        "docview_peak_over_empty_mib", "str_peak_over_empty_mib",
    }  # fmt: skip
    # the in-memory str holds the whole text; the DocView must not
    assert result["ratios"]["str_rss_over_empty_mib"] > result["ratios"]["docview_rss_over_empty_mib"]
