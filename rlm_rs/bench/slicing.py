"""`rlm-rs bench slicing`: DocView (mmap + checkpoints) vs one in-memory str.

Generates a multi-byte canonical text (default 100 MB) with offsets.json,
then, each in its own fresh process so memory numbers do not mix: an empty
step (baseline RSS), N random 2 KB slices through a DocView, and N random
2 KB slices of a Python str holding the whole text. Reports per-slice
median/p99, slices per second, RSS after the run and peak RSS of each (the
peak mark is reset after start-up where /proc/self/clear_refs allows, so it
covers the measured phase), and their ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_rs.canonical import CHECKPOINT_INTERVAL

DESCRIPTION = "DocView slicing (mmap + checkpoints) vs in-memory str slicing"

_ALPHABET = "abcdefghij klmnopqrst uvwxyz,.\néèüöñ€—“”😀漢字"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=float, default=100.0, help="text size in MB")
    parser.add_argument("--slices", type=int, default=10_000, help="slices to read")
    parser.add_argument("--slice-chars", type=int, default=2_000, help="characters per slice")


def generate(directory: Path, size_mb: float) -> tuple[Path, Path, int]:
    """Write text.txt + offsets.json of about size_mb MB; returns (text, offsets, chars)."""
    rng = random.Random(1234)
    block = "".join(rng.choice(_ALPHABET) for _ in range(CHECKPOINT_INTERVAL))
    blocks = [block[i:] + block[:i] for i in range(0, CHECKPOINT_INTERVAL, 997)]
    encoded = [b.encode("utf-8") for b in blocks]
    target = int(size_mb * 1_000_000)
    text_path, offsets_path = directory / "text.txt", directory / "offsets.json"
    checkpoints = []
    written = chars = 0
    with text_path.open("wb") as out:
        index = 0
        while written < target:
            checkpoints.append({"char": chars, "byte": written})
            data = encoded[index % len(encoded)]
            out.write(data)
            written += len(data)
            chars += CHECKPOINT_INTERVAL
            index += 1
    offsets = {
        "version": 1, "doc_id": "bench", "char_length": chars, "byte_length": written,
        "encoding": "utf-8", "checkpoints": checkpoints, "checkpoint_interval": CHECKPOINT_INTERVAL,
    }  # fmt: skip
    offsets_path.write_text(json.dumps(offsets))
    return text_path, offsets_path, chars


def _positions(chars: int, count: int, width: int) -> list[int]:
    rng = random.Random(99)
    return [rng.randrange(0, chars - width) for _ in range(count)]


def _rss_mib() -> float:
    """Resident set from smaps_rollup (exact; /proc/self/status VmRSS lags)."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Rss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (clear_refs 5), so the peak measures
    the slicing phase and not interpreter start-up. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    """Peak RSS since the last reset (VmHWM), else since process start."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(mode: str, text_path: str, offsets_path: str, chars: int, count: int, width: int,
           queue: Any) -> None:  # fmt: skip
    from rlm_rs.sandbox._docview import DocView, OpenDocument
    from rlm_rs.sandbox._runtime import StepRuntime
    from rlm_rs.sandbox.executor import run_step, warm_up
    from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest
    from rlm_rs.textfile import TextFile

    warm_up()
    run_step(StepRequest(code="x = 1"))
    base_rss = _rss_mib()
    peak_reset = _reset_peak()
    timings: list[float] = []
    positions = _positions(chars, count, width)
    if mode == "docview":
        runtime = StepRuntime(max_instructions=10**9, max_seconds=3600,
                              max_stdout_chars=0, max_spans=count + 1)  # fmt: skip
        doc = OpenDocument(0, "bench", "bench.txt", "text/plain",
                           TextFile.open_path(text_path, offsets_path), {})  # fmt: skip
        view = DocView(doc, runtime, max_hits=20, regex_seconds=1.0)
        for start in positions:
            began = time.perf_counter_ns()
            view[start : start + width]
            timings.append(time.perf_counter_ns() - began)
    elif mode == "str":
        text = Path(text_path).read_text(encoding="utf-8")
        for start in positions:
            began = time.perf_counter_ns()
            text[start : start + width]
            timings.append(time.perf_counter_ns() - began)
    queue.put({"timings": timings, "rss_mib": _rss_mib(), "base_rss_mib": base_rss,
               "peak_rss_mib": _peak_mib(), "peak_is_phase_only": peak_reset})  # fmt: skip


def _measure(mode: str, args: tuple[Any, ...]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(mode, *args, queue))
    process.start()
    data = queue.get(timeout=600)
    process.join(60)
    timings = sorted(data.pop("timings"))
    if timings:
        data["median_us"] = statistics.median(timings) / 1000
        data["p99_us"] = timings[int(len(timings) * 0.99) - 1] / 1000
        data["slices_per_s"] = len(timings) / (sum(timings) / 1e9)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlm-bench-slicing-") as directory:
        text_path, offsets_path, chars = generate(Path(directory), args.size_mb)
        common = (str(text_path), str(offsets_path), chars, args.slices, args.slice_chars)
        empty = _measure("empty", common)
        docview = _measure("docview", common)
        in_memory = _measure("str", common)
    return {
        "text": {"mb": args.size_mb,
                 "chars": chars, "slices": args.slices, "slice_chars": args.slice_chars},
        "empty_step": {"rss_mib": empty["rss_mib"], "peak_rss_mib": empty["peak_rss_mib"],
                       "peak_is_phase_only": empty["peak_is_phase_only"]},
        "docview": docview,
        "str": in_memory,
        "ratios": {
            "docview_over_str_median": round(docview["median_us"] / in_memory["median_us"], 2),
            "docview_rss_over_empty_mib": round(docview["rss_mib"] - empty["rss_mib"], 2),
            "str_rss_over_empty_mib": round(in_memory["rss_mib"] - empty["rss_mib"], 2),
            "docview_peak_over_empty_mib": round(
                docview["peak_rss_mib"] - empty["peak_rss_mib"], 2),
            "str_peak_over_empty_mib": round(in_memory["peak_rss_mib"] - empty["peak_rss_mib"], 2),
        },
    }  # fmt: skip
