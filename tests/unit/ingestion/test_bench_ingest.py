"""`rlm-rs bench ingest` runs end to end on a small corpus (no timing asserts)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from rlm_rs.bench import ingest


def test_bench_ingest_reports_every_format() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", "bench", "ingest", "--json", "--text-mb", "1",
         "--pdf-pages", "2", "--html-kb", "50", "--docx-paragraphs", "50", "--repeat", "1",
         "--pathological-mb", "2"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"bench ingest exited {done.returncode}; its stderr:\n{done.stderr[-4000:]}"
    result = json.loads(done.stdout)
    assert set(result) == {"pdf", "html", "docx", "text", "pathological_text"}
    pathological = result.pop("pathological_text")
    assert pathological.pop("slowest_through_the_child")["char_length"] > 0
    assert len(pathological) == 9 and all(e["size_ratio"] == 2 for e in pathological.values())
    for entry in result.values():
        assert entry["pipeline_seconds"] > 0 and entry["raw_seconds"] > 0
        assert "overhead_pct" in entry and "pipeline_peak_rss_mib" in entry
    assert result["pdf"]["pipeline_pages_per_s"] > 0


def test_the_child_parses_the_slowest_input_that_leaves_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which input is slowest varies with the machine's load: "whitespace-only
    lines", the slowest here, canonicalises to nothing, and parse_document
    refuses an empty document (EMPTY_DOCUMENT). The bench once exited 1 so
    under a full-suite run; it must take the slowest input that leaves text."""
    chars = 50_000
    seconds = {ingest.PATHOLOGICAL[name](chars).encode(): 1.0 for name in ingest.PATHOLOGICAL}
    seconds[ingest.PATHOLOGICAL["whitespace-only lines"](chars).encode()] = 9.0
    seconds[ingest.PATHOLOGICAL["blank lines"](chars).encode()] = 5.0
    monkeypatch.setattr(ingest, "cpu_seconds", lambda data, repeat: seconds.get(data, 0.5))

    report = ingest.pathological(argparse.Namespace(pathological_mb=chars / 1_000_000, repeat=1))

    assert report["whitespace-only lines"]["large_cpu_ms"] == 9000.0  # it was the slowest
    through_the_child = report["slowest_through_the_child"]
    assert through_the_child["input"] == "blank lines" and through_the_child["char_length"] > 0


def test_a_measurement_whose_process_dies_ends_the_bench_at_once() -> None:
    """Before, the bench waited 1,200 s on the queue of a dead measuring process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=os._exit, args=(3,))  # dies without a word, as an OOM kill would
    process.start()
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"died \(exit code 3\)"):
        ingest._result(queue, process, "the raw measurement of text", timeout=120)
    assert time.monotonic() - began < 60
