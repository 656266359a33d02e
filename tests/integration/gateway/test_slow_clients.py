"""Slow clients against a real `rlm-rs gateway serve` process on a real socket.

A client that trickles its headers (slowloris), one that connects and sends nothing,
and one that trickles its body are each disconnected once their deadline passes
(RLM_HTTP_HEADER_TIMEOUT_SECONDS, RLM_HTTP_BODY_TIMEOUT_SECONDS; gateway/http_protocol.py),
while other clients on the same gateway keep getting answers at full speed, and a
keep-alive client that pauses between requests is not cut off.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import free_port, wait_until

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 2.5


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A gateway with short read deadlines (no control plane needed: /health/live answers)."""
    port = free_port()
    log = tmp_path_factory.mktemp("slow") / "gateway.log"
    env = {
        **os.environ,
        "RLM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "RLM_HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "gateway", "serve", "--port", str(port),
             "--grpc-address", f"127.0.0.1:{free_port()}"],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200,
                   "the gateway")  # fmt: skip
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=15)


def closed_after(sock: socket.socket, trickle: bytes, started: float, limit: float) -> float | None:
    """Sends `trickle` one byte per 0.2 s until the server closes the connection;
    returns the seconds from `started` to the close, or None if still open at `limit`."""
    sock.settimeout(0.2)
    index = 0
    while time.monotonic() - started < limit:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if trickle:
            try:
                sock.sendall(trickle[index % len(trickle) : index % len(trickle) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            index += 1
    return None


def fast_requests(port: int, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        while not stop.is_set():
            started = time.monotonic()
            assert client.get("/health/live").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)


def test_slow_headers_silence_and_slow_bodies_are_cut_off_and_others_are_served(
    gateway: tuple[int, Path],
) -> None:
    port, log = gateway
    stop, latencies = threading.Event(), list[float]()
    others = threading.Thread(target=fast_requests, args=(port, stop, latencies), daemon=True)
    others.start()
    results: dict[str, float | None] = {}

    def slow(name: str, opening: bytes, trickle: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            started = time.monotonic()
            if opening:
                sock.sendall(opening)
            results[name] = closed_after(sock, trickle, started, limit=BODY_TIMEOUT + 6)

    opening = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\ncontent-length: 100000\r\n\r\n{"
    attackers = [
        threading.Thread(target=slow, args=("headers", b"GET /health/live HTTP/1.1\r\n", b"X-a: b\r\n")),
        threading.Thread(target=slow, args=("silent", b"", b"")),
        threading.Thread(target=slow, args=("body", opening, b" ")),
    ]
    for thread in attackers:
        thread.start()
    for thread in attackers:
        thread.join(timeout=30)
    stop.set()
    others.join(timeout=10)

    assert results["headers"] is not None, "a client trickling headers was never disconnected"
    assert HEADER_TIMEOUT - 0.3 <= results["headers"] <= HEADER_TIMEOUT + 1.5, results
    assert results["silent"] is not None and results["silent"] <= HEADER_TIMEOUT + 1.5, results
    assert results["body"] is not None, "a client trickling its body was never disconnected"
    assert BODY_TIMEOUT - 0.3 <= results["body"] <= BODY_TIMEOUT + 1.5, results
    assert len(latencies) > 20 and max(latencies) < 1.0, "other clients were slowed down"
    text = log.read_text(encoding="utf-8")
    assert text.count('"http_read_timeout"') >= 3 and '"phase": "body"' in text


def test_a_paused_keep_alive_client_keeps_its_connection(gateway: tuple[int, Path]) -> None:
    port, _ = gateway
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        replies = []
        for _ in range(2):  # one connection, two requests with a pause longer than the header deadline
            sock.sendall(request)
            reply = b""
            while not reply.endswith(b'{"status":"ok"}'):  # headers and body may come in two reads
                chunk = sock.recv(4096)
                assert chunk, f"the connection was closed after {reply!r}"
                reply += chunk
            replies.append(reply)
            time.sleep(HEADER_TIMEOUT + 0.5)  # idle between requests: uvicorn's keep-alive (5 s) applies
    assert all(reply.startswith(b"HTTP/1.1 200") for reply in replies), replies
