"""`rlm-rs bench gateway`: what the REST gateway adds on top of gRPC.

Starts a real stack in a temp dir (embedded storage, `rlm-rs control serve`,
`rlm-rs gateway serve`, a READY one-document session, a Runtime execution),
then measures GET /v1/executions/{id} and POST /v1/spans/get at concurrency 1
and 32 through the gateway (httpx, keep-alive) and the same RPCs called
directly (grpc.aio), in the same run. Reports req/s, p50/p99 and the median
overhead. Numbers only; it asserts nothing and never runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rlm_rs.bench._limits import UNLIMITED_QUOTAS, UNLIMITED_RATE

DESCRIPTION = "REST gateway overhead vs direct gRPC (req/s, p50/p99 at concurrency 1 and 32)"

_DOC = "Annual report.\n" + "Revenue grew 12% to $4.5M in 2024. " * 200 + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--warmup", type=int, default=200, help="requests sent before measuring")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rlm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, OSError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class _RawHttp:
    """A minimal HTTP/1.1 keep-alive client (one connection per worker), so the
    numbers show the gateway's cost rather than an HTTP client library's."""

    def __init__(self, host: str, port: int, headers: dict[str, str]):
        self.host, self.port = host, port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        if self.pool:
            try:
                return await self._request(self.pool.pop(), method, path, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the server closed an idle keep-alive connection: once more on a new one
        return await self._request(await asyncio.open_connection(self.host, self.port), method, path, body)

    async def _request(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, path: str, body: bytes
    ) -> bytes:
        reader, writer = conn
        extra = "content-type: application/json\r\n" if body else ""
        writer.write(
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n{self.head}{extra}"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await reader.readexactly(length)
        self.pool.append(conn)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        return payload

    def close(self) -> None:
        for _, writer in self.pool:
            writer.close()


async def _measure(
    call: Callable[[], Awaitable[Any]], total: int, concurrency: int, warmup: int
) -> dict[str, float]:
    for _ in range(warmup):
        await call()
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


async def _bench(
    base_url: str, target: str, key: str, eid: str, span: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    import grpc.aio

    from rlm_rs.v1 import citation_pb2, citation_pb2_grpc, execution_pb2, execution_pb2_grpc

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    http = _RawHttp(host, int(port), {"authorization": f"Bearer {key}"})
    metadata = (("authorization", f"Bearer {key}"),)
    span_body = json.dumps(span).encode()
    report: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        executions = execution_pb2_grpc.ExecutionServiceStub(channel)
        citations = citation_pb2_grpc.CitationServiceStub(channel)
        get_req = execution_pb2.GetExecutionRequest(execution_id=eid)
        span_req = citation_pb2.GetSpanRequest(**span)

        async def http_get() -> None:
            await http.request("GET", f"/v1/executions/{eid}")

        async def http_span() -> None:
            await http.request("POST", "/v1/spans/get", span_body)

        async def grpc_get() -> None:
            await executions.GetExecution(get_req, metadata=metadata, timeout=30)

        async def grpc_span() -> None:
            await citations.GetSpan(span_req, metadata=metadata, timeout=30)

        cases = {
            "GET /v1/executions/{id}": (http_get, grpc_get),
            "POST /v1/spans/get": (http_span, grpc_span),
        }
        for name, (via_http, via_grpc) in cases.items():
            for concurrency in (1, 32):
                total = args.requests if concurrency > 1 else max(200, args.requests // 4)
                gw = await _measure(via_http, total, concurrency, args.warmup)
                direct = await _measure(via_grpc, total, concurrency, args.warmup)
                report[f"{name} c={concurrency}"] = {
                    "gateway": gw,
                    "grpc_direct": direct,
                    "overhead_p50_ms": gw["p50_ms"] - direct["p50_ms"],
                    "overhead_ratio_p50": gw["p50_ms"] / direct["p50_ms"],
                    "throughput_ratio": gw["req_per_s"] / direct["req_per_s"],
                }
    http.close()
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlm-bench-gateway-") as directory:
        root = Path(directory)
        data = root / "data"
        env = {**os.environ, "RLM_DATA_DIR": str(data), "LLM_PROVIDER": "scripted"}
        # throughput is measured here, not the limits (bench fairness measures those)
        env["RATE_LIMITS_JSON"] = UNLIMITED_RATE
        env["RLM_QUOTAS_JSON"] = UNLIMITED_QUOTAS
        key = _rlm(env, "keys", "create", "--tenant", "bench", "--data-dir", str(data))
        key = key.strip().splitlines()[-1]
        doc = root / "report.txt"
        doc.write_text(_DOC)
        uri = (
            _rlm(env, "upload", "--tenant", "bench", "--data-dir", str(data), str(doc))
            .strip()
            .splitlines()[-1]
        )
        target = f"127.0.0.1:{_free_port()}"
        base_url = f"http://127.0.0.1:{_free_port()}"
        procs = _start_stack(env, target, base_url)
        try:
            eid, span = _runtime_execution(env, base_url, key, uri)
            report = asyncio.run(_bench(base_url, target, key, eid, span, args))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    report["note"] = json.dumps(
        {"client": "raw HTTP/1.1 keep-alive vs grpc.aio, one client process, loopback"}
    )
    return report


def _start_stack(env: dict[str, str], target: str, base_url: str) -> list[subprocess.Popen[bytes]]:
    """A control plane on `target` and a gateway on `base_url`'s port in front of it."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "control", "serve", "--grpc-address", target,
             "--dev-unsandboxed"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "gateway", "serve", "--grpc-address", target,
             "--port", base_url.rsplit(":", 1)[1]],
            env={**env, "RLM_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip


def _runtime_execution(env: dict[str, str], base_url: str, key: str, uri: str) -> tuple[str, dict[str, Any]]:
    """Once the stack is up: a READY session of the uploaded document and a
    runtime execution on it; its id and a span of the document to read."""
    import httpx

    _wait(lambda: httpx.get(f"{base_url}/health/ready").status_code == 200, "the stack")
    headers = {"authorization": f"Bearer {key}"}
    doc_in = {"source_name": "report.txt", "mime_type": "text/plain", "raw_s3_uri": uri}
    created = httpx.post(
        f"{base_url}/v1/sessions", headers=headers, json={"docs": [doc_in]}, timeout=30
    ).json()
    sid = created["session_id"]
    _rlm(env, "ingest", "worker", "--once", "--data-dir", env["RLM_DATA_DIR"])
    _wait(
        lambda: httpx.get(f"{base_url}/v1/sessions/{sid}", headers=headers).json()["status"] == "READY",
        "the session",
    )
    made = httpx.post(f"{base_url}/v1/sessions/{sid}/executions/runtime", headers=headers, json={})
    span = {"session_id": sid, "doc_id": created["docs"][0]["doc_id"], "start_char": 15, "end_char": 50}
    return str(made.json()["execution_id"]), span
