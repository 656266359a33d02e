"""`rlm-rs bench ingest` runs end to end on a small corpus (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_ingest_reports_every_format() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "ingest", "--json", "--text-mb", "1",
         "--pdf-pages", "2", "--html-kb", "50", "--docx-paragraphs", "50", "--repeat", "1",
         "--pathological-mb", "2"],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(output)
    assert set(result) == {"pdf", "html", "docx", "text", "pathological_text"}
    pathological = result.pop("pathological_text")
    assert pathological.pop("slowest_through_the_child")["char_length"] > 0
    assert len(pathological) == 9 and all(e["size_ratio"] == 2 for e in pathological.values())
    for entry in result.values():
        assert entry["pipeline_seconds"] > 0 and entry["raw_seconds"] > 0
        assert "overhead_pct" in entry and "pipeline_peak_rss_mib" in entry
    assert result["pdf"]["pipeline_pages_per_s"] > 0
