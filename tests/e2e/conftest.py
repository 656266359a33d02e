"""Fixtures for the end-to-end appliance tests: a real `rlm-rs up` as a child process.

`UpProcess` starts the supervisor on a data directory and free ports, reads its output
on a thread, and stops it with SIGTERM. It must never leave a process behind: a test
that fails mid-way still gets every descendant killed by pid.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UpProcess:
    def __init__(
        self, data_dir: Path, http_port: int, grpc_port: int, extra_env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.extra_env = extra_env or {}
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process: subprocess.Popen[str] | None = None
        self.seen_pids: set[int] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def clean_env(self) -> dict[str, str]:
        """This environment without the appliance's own settings, plus extra_env."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_PROVIDER", "RLM_"))}
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> None:
        env = self.clean_env()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "up", "--data-dir", str(self.data_dir),
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        self.wait_for("Ctrl-C stops everything.", timeout)
        self.seen_pids |= self.descendants()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("rlm-rs up exited:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if marker in line:
                return
        raise AssertionError(f"no {marker!r} in time:\n" + "\n".join(self.lines))

    def descendants(self) -> set[int]:
        assert self.process is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            return {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        return set()

    def stop(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        self.seen_pids |= self.descendants()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        with contextlib.suppress(queue.Empty):
            while (line := self._queue.get(timeout=1.0)) is not None:
                self.lines.append(line)
        return code

    def alive_leftovers(self) -> list[psutil.Process]:
        leftovers = []
        for pid in self.seen_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    leftovers.append(proc)
        return leftovers

    def kill_all(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.seen_pids |= self.descendants()
            self.process.kill()
            self.process.wait(timeout=10)
        for proc in self.alive_leftovers():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.fixture
def appliance_factory(tmp_path: Path) -> Iterator[type[UpProcess]]:
    started: list[UpProcess] = []

    class _Tracked(UpProcess):
        def start(self, timeout: float = 180.0) -> None:
            started.append(self)
            super().start(timeout)

    yield _Tracked
    for up in started:
        up.kill_all()
