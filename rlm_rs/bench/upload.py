"""`rlm-rs bench upload`: the gateway's memory while it streams a large upload.

Starts a real stack in a temp dir (embedded storage, `rlm-rs control serve`,
`rlm-rs gateway serve`), writes a text file of `--size-mb` MB (200 by
default), warms the path with a small upload, then POSTs the file to
/v1/uploads from disk in 1 MiB pieces while a thread samples both server
processes' RSS (psutil) every 10 ms. Reports the RSS before, at the peak and
after, the growth, and the throughput; checks the stored SHA-256. Numbers
only; it never runs in the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE
from rlm_rs.bench.gateway import _free_port, _rlm, _wait

DESCRIPTION = "gateway RSS before/peak/after and MB/s while a large file streams through POST /v1/uploads"

_MB = 1_000_000
_LINE = b"The lighthouse at Harrow Point was first lit in 1873 and rebuilt in 1911.\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=int, default=200, help="the upload's size in MB (10^6 bytes)")


class _RssSampler(threading.Thread):
    """The peak RSS of some processes, sampled until stopped."""

    def __init__(self, pids: dict[str, int], interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self.interval = interval
        self.done = threading.Event()

    def rss(self) -> dict[str, int]:
        return {name: int(process.memory_info().rss) for name, process in self.processes.items()}

    def run(self) -> None:
        while not self.done.is_set():
            for name, value in self.rss().items():
                self.peak[name] = max(self.peak[name], value)
            time.sleep(self.interval)


def _write_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = _LINE * (1024 * 1024 // len(_LINE))
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = block[: size - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def _pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while piece := handle.read(1024 * 1024):
            yield piece


def _mb(value: int) -> float:
    return round(value / (1024 * 1024), 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.size_mb * _MB
    with tempfile.TemporaryDirectory(prefix="rlm-bench-upload-") as directory:
        root = Path(directory)
        data = root / "data"
        env = {
            **os.environ,
            "RLM_DATA_DIR": str(data),
            "LLM_PROVIDER": "scripted",
            "RATE_LIMITS_JSON": UNLIMITED_RATE,
            "RLM_QUOTAS_JSON": UNLIMITED_QUOTAS,
            "RLM_MAX_UPLOAD_BYTES": str(size + _MB),
            "RLM_LOG_LEVEL": "WARNING",
        }
        key = (
            _rlm(env, "keys", "create", "--tenant", "bench", "--data-dir", str(data)).strip().splitlines()[-1]
        )
        source = root / "big.txt"
        expected = _write_file(source, size)
        base_url, processes = _start_stack(env)
        try:
            measured = _measure(base_url, key, source, processes)
        finally:
            for proc in reversed(processes.values()):
                proc.terminate()
                proc.wait(timeout=10)
    stored, elapsed = measured["stored"], measured["seconds"]
    report: dict[str, Any] = {
        "upload": {
            "size_mb": args.size_mb,
            "seconds": round(elapsed, 2),
            "mb_per_s": round(size / _MB / elapsed, 1),
            "sha256_matches": stored["sha256"] == expected and stored["size_bytes"] == size,
        }
    }
    before, peak, after = measured["before"], measured["peak"], measured["after"]
    for name in ("gateway", "control_plane"):
        report[f"{name}_rss_mib"] = {
            "before": _mb(before[name]),
            "peak": _mb(peak[name]),
            "after": _mb(after[name]),
            "peak_growth": _mb(peak[name] - before[name]),
        }
    return report


def _start_stack(env: dict[str, str]) -> tuple[str, dict[str, subprocess.Popen[bytes]]]:
    """A control plane and a gateway in front of it: the gateway's URL and the processes."""
    target = f"127.0.0.1:{_free_port()}"
    port = _free_port()
    cli = [sys.executable, "-m", "rlm_rs.cli"]
    control = subprocess.Popen(
        [*cli, "control", "serve", "--grpc-address", target, "--dev-unsandboxed"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    gateway = subprocess.Popen(
        [*cli, "gateway", "serve", "--grpc-address", target, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return f"http://127.0.0.1:{port}", {"control_plane": control, "gateway": gateway}


def _measure(
    base_url: str, key: str, source: Path, processes: dict[str, subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """One warm-up upload, then the big one streamed with each process's RSS
    sampled: the stored object, the seconds, and RSS before, at peak and after."""
    import httpx

    _wait(lambda: httpx.get(f"{base_url}/health/ready").status_code == 200, "the stack", timeout=180)
    headers = {"authorization": f"Bearer {key}", "content-type": "text/plain"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as client:
        warm = client.post("/v1/uploads", params={"file_name": "warm.txt"}, content=_LINE * 30_000)
        warm.raise_for_status()  # every code path loaded before "before"
        time.sleep(0.5)
        sampler = _RssSampler(
            {"gateway": processes["gateway"].pid, "control_plane": processes["control_plane"].pid}
        )
        before = sampler.rss()
        sampler.start()
        started = time.perf_counter()
        resp = client.post("/v1/uploads", params={"file_name": "big.txt"}, content=_pieces(source))
        elapsed = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        resp.raise_for_status()
        time.sleep(0.5)
        after = sampler.rss()
    return {"stored": resp.json(), "seconds": elapsed, "before": before, "peak": sampler.peak, "after": after}
