"""`rlm-rs bench load`: load and soak through the REST gateway.

Starts the whole appliance as real processes on a temporary data directory
(hardened sandbox pool, control plane, gateway; the scripted provider), then
drives the gateway for `--minutes` with concurrent runtime steps and Answerer
executions. Reports throughput, p50/p99 latency and error counts per kind,
and samples the resident memory and open file descriptors of every process
over time (the pool as its server + zygote, and its short-lived workers
apart as `pool-workers`), with the least-squares slope of each (MiB/min,
fds/min) after the first minute of warm-up: a flat soak has slopes near zero.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE

DESCRIPTION = "load/soak through the gateway: throughput, p50/p99, errors, RSS and fds over time"

DOC = ("Harbour report. The north pier was rebuilt in 2021. Traffic grew 8% in 2023.\n" * 200).encode()
ROOT = [
    "```repl\nhits = context[0].find('Traffic grew')\nstate['work']['n'] = len(hits)\nprint(hits[:1])\n```",
    "```repl\ntool.queue_llm('why', 'Why did traffic grow? ' + context[0][:300])\ntool.YIELD()\n```",
    "```repl\nh = context[0].find('Traffic grew')[0]\n"
    "tool.FINAL(context[0][h['start_char']:h['end_char'] + 8])\n```",
]
RUNTIME_CODE = (
    "h = context[0].find('pier')[0]\nstate['work']['last'] = context[0][h['start_char']:h['start_char'] + 40]"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to keep the load on")
    parser.add_argument("--runtime-clients", type=int, default=3, help="threads sending runtime steps")
    parser.add_argument("--answerer-clients", type=int, default=1, help="threads running executions")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="seconds between resource samples")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _usage(processes: list[psutil.Process]) -> dict[str, Any]:
    """RSS, fds and threads summed over the processes still alive while they
    are read (threads: thread pools grow to the peak concurrency they have
    seen, and each thread may hold its own SQLite connection)."""
    rss, fds, threads, alive = 0, 0, 0, 0
    for process in processes:
        try:
            with process.oneshot():
                rss += process.memory_info().rss
                fds += process.num_fds()
                threads += process.num_threads()
            alive += 1
        except psutil.Error:
            continue  # exited between listing and reading
    return {"rss_mib": round(rss / 2**20, 2), "fds": fds, "threads": threads, "processes": alive}


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per minute) of (seconds, value) points."""
    if len(points) < 2:
        return 0.0
    xs = [p[0] / 60 for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


class _Stack:
    """pool + control plane + gateway as child processes on one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        script = root / "script.json"
        script.write_text(json.dumps({"executions": [{"match": "", "root": ROOT}],
                                      "sub": [{"match": "traffic", "text": "the new pier"}]}))  # fmt: skip
        self.socket_path = str(root / "pool.sock")
        grpc_port, self.http_port = _free_port(), _free_port()
        self.env = {
            **os.environ, "RLM_DATA_DIR": str(root / "data"), "LLM_PROVIDER": "scripted",
            "RLM_SCRIPTED_PROVIDER_FILE": str(script), "LAMBDA_FUNCTION_NAME": self.socket_path,
            "RLM_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        # throughput is measured here, not the limits (bench fairness measures those)
        self.env["RATE_LIMITS_JSON"] = UNLIMITED_RATE
        self.env["RLM_QUOTAS_JSON"] = UNLIMITED_QUOTAS
        grpc_target = f"127.0.0.1:{grpc_port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._start("pool", "sandbox", "serve", "--socket", self.socket_path)
        self._wait(lambda: os.path.exists(self.socket_path), "the sandbox pool")
        self._start("control-plane", "control", "serve", "--grpc-address", grpc_target)
        self._start(
            "gateway", "gateway", "serve", "--port", str(self.http_port), "--grpc-address", grpc_target
        )
        self.base_url = f"http://127.0.0.1:{self.http_port}"

    def _start(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", *args], env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip

    @staticmethod
    def _wait(predicate: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from rlm_rs.ingestion.worker import IngestionWorker
    from rlm_rs.settings import Settings
    from rlm_rs.storage import open_storage
    from rlm_rs.storage.uploads import store_upload

    # SIGTERM must still stop the stack (its processes run in their own sessions)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="rlm-bench-load-") as directory:
        root = Path(directory)
        stack = _Stack(root)
        try:
            settings = Settings(RLM_DATA_DIR=root / "data")
            storage = open_storage(settings)
            key, _ = storage.metadata.create_api_key("load")
            uri = store_upload(storage.blobs, "load", "harbour.txt", DOC)
            headers = {"authorization": f"Bearer {key}"}
            stack._wait(lambda: httpx.get(f"{stack.base_url}/health/ready", timeout=2).status_code == 200,
                        "the gateway")  # fmt: skip
            created = httpx.post(f"{stack.base_url}/v1/sessions", headers=headers, timeout=30, json={
                "docs": [{"source_name": "harbour.txt", "mime_type": "text/plain",
                          "raw_s3_uri": uri}]})  # fmt: skip
            created.raise_for_status()
            session_id = created.json()["session_id"]
            IngestionWorker(storage, settings).run_once()
            return _drive(stack, session_id, headers, args, psutil)
        finally:
            stack.stop()


def _drive(
    stack: _Stack, session_id: str, headers: dict[str, str], args: argparse.Namespace, psutil: Any
) -> dict[str, Any]:
    load = _Load(stack, session_id, headers, args, psutil)
    threads = [threading.Thread(target=load.runtime_client) for _ in range(args.runtime_clients)]
    threads += [threading.Thread(target=load.answerer_client) for _ in range(args.answerer_clients)]
    sampler = threading.Thread(target=load.sample)
    sampler.start()
    for thread in threads:
        thread.start()
    time.sleep(args.minutes * 60)
    load.stop.set()
    for thread in (*threads, sampler):
        thread.join(180)
    seconds = time.monotonic() - load.started
    latencies = load.latencies
    return {
        "seconds": round(seconds, 1),
        "clients": {"runtime": args.runtime_clients, "answerer": args.answerer_clients},
        "runtime_steps": {**_quantiles(latencies["runtime_step"]),
                          "per_s": round(len(latencies["runtime_step"]) / seconds, 2)},
        "answerer_executions": {**_quantiles(latencies["answerer_execution"]),
                                "per_s": round(len(latencies["answerer_execution"]) / seconds, 2)},
        "errors": dict(load.errors),
        "slopes": _slopes(load.samples),
        "samples": load.samples,
    }  # fmt: skip


def _slopes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per process: RSS and fd slopes over the samples after the first minute
    (warm-up: thread pools, caches and connections filling to their bounds)."""
    names = sorted({name for point in samples for name in point if name != "t_s"})
    steady = [point for point in samples if point["t_s"] >= 60] or samples
    slopes = {}
    for name in names:
        points = [point for point in steady if name in point]
        if len(points) < 2:
            continue
        slopes[name] = {
            "rss_mib_per_min": round(_slope([(p["t_s"], p[name]["rss_mib"]) for p in points]), 3),
            "fds_per_min": round(_slope([(p["t_s"], p[name]["fds"]) for p in points]), 3),
            "rss_mib_first_last": [points[0][name]["rss_mib"], points[-1][name]["rss_mib"]],
            "fds_first_last": [points[0][name]["fds"], points[-1][name]["fds"]],
        }
    return slopes


class _Load:
    """The clients' threads and the resource sampler, sharing what they record."""

    def __init__(
        self, stack: _Stack, session_id: str, headers: dict[str, str], args: argparse.Namespace, psutil: Any
    ) -> None:
        self.stack = stack
        self.session_id = session_id
        self.headers = headers
        self.args = args
        self.psutil = psutil
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {"runtime_step": [], "answerer_execution": []}
        self.errors: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def record(self, kind: str, seconds: float, outcome: str) -> None:
        with self.lock:
            if outcome == "ok":
                self.latencies[kind].append(seconds)
            else:
                self.errors[f"{kind}:{outcome}"] += 1

    def runtime_client(self) -> None:
        """Runtime steps, one after another; a new execution when one is done."""
        import httpx

        with httpx.Client(base_url=self.stack.base_url, headers=self.headers, timeout=60) as client:
            execution_id = None
            while not self.stop.is_set():
                if execution_id is None:
                    execution_id = self._new_runtime(client)
                    if execution_id is None:
                        continue
                began = time.perf_counter()
                response = client.post(f"/v1/executions/{execution_id}/steps", json={"code": RUNTIME_CODE})
                elapsed = time.perf_counter() - began
                if response.status_code == 200 and response.json().get("success"):
                    self.record("runtime_step", elapsed, "ok")
                elif response.status_code in (400, 409) and response.json()["error"]["code"] in (
                    "MAX_TURNS_EXCEEDED", "CONFLICT"
                ):  # fmt: skip
                    execution_id = None  # that execution is done: start a new one
                else:
                    self.record("runtime_step", elapsed, str(response.status_code))

    def _new_runtime(self, client: Any) -> str | None:
        """A new runtime execution's id, or None (recorded, after a pause) when refused."""
        made = client.post(f"/v1/sessions/{self.session_id}/executions/runtime", json={})
        if made.status_code >= 300:
            self.record("runtime_step", 0, str(made.status_code))
            time.sleep(0.5)
            return None
        return str(made.json()["execution_id"])

    def answerer_client(self) -> None:
        """Synchronous Answerer executions, one after another."""
        import httpx

        with httpx.Client(base_url=self.stack.base_url, headers=self.headers, timeout=120) as client:
            while not self.stop.is_set():
                began = time.perf_counter()
                response = client.post(f"/v1/sessions/{self.session_id}/executions", json={
                    "question": "Why did traffic grow?", "options": {"synchronous": True}})  # fmt: skip
                elapsed = time.perf_counter() - began
                status = (
                    response.json().get("status") if response.status_code < 300 else str(response.status_code)
                )
                self.record("answerer_execution", elapsed, "ok" if status == "COMPLETED" else str(status))

    def sample(self) -> None:
        """Every --sample-seconds until stopped: each process's usage."""
        while True:
            point: dict[str, Any] = {"t_s": round(time.monotonic() - self.started, 1)}
            for name, process in self.stack.processes.items():
                try:
                    parent = self.psutil.Process(process.pid)
                    steady = [parent, *parent.children()]
                    transient = [p for c in steady[1:] for p in c.children(recursive=True)]
                except self.psutil.Error:
                    continue  # the process is gone: no sample rather than a zero
                point[name] = _usage(steady)
                if name == "pool":  # workers come and go: counted apart from the server + zygote
                    point["pool-workers"] = _usage(transient)
            self.samples.append(point)
            if self.stop.wait(self.args.sample_seconds):
                return
