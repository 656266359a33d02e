"""The `rlm-rs up` supervisor: every component as a real child process on one machine.

Starts, in order, the sandbox pool, the control plane, the ingestion worker and the
gateway, each waited for through its own health (gRPC health on the pool socket and on
the control plane, GET /health/ready on the gateway), on embedded storage under one data
directory. Each child gets its own process group (and a parent-death signal), so a stop
can sweep a child's own descendants (the pool's zygote and workers) after the graceful
SIGTERM. Stop order is the reverse of start order, so nothing accepts work that the next
component down can no longer finish. It must never leave a child running after it exits,
and never run two appliances on one data directory (an flock on run/up.lock says so).

Before starting anything it checks that its ports are free and that the provider answers
(rlm_rs/providers/probe.py); either failure is one line naming the port and its setting,
or the provider's URL and model. Each component's log starts empty on every run (the
previous run's is kept as `<name>.log.1`), so a printed tail is from this run only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from rlm_rs.appliance.demo import DEFAULT_QUESTION, SCRIPT_FILE, run_demo

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 15.0
_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; keep a margin


def ports_from_settings(http_port: int | None, grpc_port: int | None) -> tuple[int, int]:
    """The flags when given, else RLM_HTTP_PORT and the port of RLM_GRPC_ADDRESS."""
    from rlm_rs.settings import get_settings

    settings = get_settings()
    if grpc_port is None:
        _host, _, port = settings.grpc_address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"RLM_GRPC_ADDRESS={settings.grpc_address!r} has no port (HOST:PORT)")
        grpc_port = int(port)
    return (settings.http_port if http_port is None else http_port), grpc_port


def busy_port(host: str, port: int) -> bool:
    """True when something listens on (or holds) host:port; SO_REUSEPORT is not set
    here, so even a gRPC server sharing its port is seen."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def choose_provider(env: dict[str, str]) -> str:
    """`openai` when an OpenAI key or base URL is configured, else the offline `scripted`."""
    if env.get("LLM_PROVIDER"):
        return env["LLM_PROVIDER"]
    return "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") else "scripted"


def socket_path_for(data_dir: Path) -> Path:
    path = data_dir / "run" / "sandbox.sock"
    if len(str(path)) <= _SOCKET_PATH_LIMIT:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"rlm-{digest}" / "sandbox.sock"


def _child_setup() -> None:
    """Runs in the child before exec: die with the supervisor, even on its SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Component:
    name: str
    argv: list[str]
    health: str  # "grpc-unix", "grpc-tcp", "http", "alive"
    target: str = ""
    metrics_port: int | None = None  # only for components that serve RLM_METRICS_PORT
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class StartupFailed(Exception):
    """A component died or did not become healthy in time."""


class Appliance:
    def __init__(
        self,
        data_dir: Path,
        http_port: int,
        grpc_port: int,
        ready_timeout: float = 120.0,
        metrics_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.metrics_port = metrics_port
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.ready_timeout = ready_timeout
        self.socket_path = socket_path_for(data_dir)
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.components: list[Component] = []
        self.stop_requested = threading.Event()
        self.env = self._child_env()

    # ----------------------------------------------------------------- set-up
    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        self.provider = choose_provider(env)
        env.update(
            {
                "RLM_DATA_DIR": str(self.data_dir),
                "LAMBDA_FUNCTION_NAME": str(self.socket_path),
                "RLM_GRPC_ADDRESS": self.grpc_address,
                "RLM_HTTP_PORT": str(self.http_port),
                "LLM_PROVIDER": self.provider,
                # the pool opens documents only below the data directory (blobs, doc-cache)
                "RLM_SANDBOX_DOCUMENT_ROOT": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("RLM_STORAGE_BACKEND", "embedded")
        if self.provider == "scripted":
            env.setdefault("RLM_SCRIPTED_PROVIDER_FILE", str(SCRIPT_FILE))
        env.pop("RLM_METRICS_PORT", None)  # one port cannot serve four processes
        return env

    def _plan(self) -> list[Component]:
        rlm = [sys.executable, "-m", "rlm_rs.cli"]
        return [
            Component(
                "sandbox pool",
                [*rlm, "sandbox", "serve", "--socket", str(self.socket_path)],
                "grpc-unix",
                f"unix:{self.socket_path}",
                self.metrics_port,
            ),
            Component(
                "control plane",
                [*rlm, "control", "serve", "--grpc-address", self.grpc_address],
                "grpc-tcp",
                self.grpc_address,
                self.metrics_port + 1 if self.metrics_port else None,
            ),
            Component("ingestion worker", [*rlm, "ingest", "worker"], "alive"),
            Component(
                "gateway",
                [*rlm, "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.http_port),
                 "--grpc-address", self.grpc_address],
                "http",
                f"{self.base_url}/health/ready",
                self.metrics_port + 2 if self.metrics_port else None,
            ),
        ]  # fmt: skip

    def _say(self, text: str) -> None:
        print(text, flush=True)

    # ------------------------------------------------------------------- run
    def run(self, demo: bool = False) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.data_dir / "run" / "up.lock", "a+")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rlm-rs up: another appliance is running on {self.data_dir}", file=sys.stderr)
            return 1
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run_locked(demo)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            lock.close()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested.set()

    def _run_locked(self, demo: bool) -> int:
        if self.provider == "scripted":
            self._say(
                "Provider: scripted (offline, replies from "
                f"{self.env['RLM_SCRIPTED_PROVIDER_FILE']}). "
                "Set OPENAI_API_KEY or OPENAI_BASE_URL to use a real model."
            )
        else:
            base = self.env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
            self._say(f"Provider: {self.provider} ({base})")
        self._say(f"Data directory: {self.data_dir}")
        problem = self._busy_port() or self._provider_problem()
        if problem:
            print(f"rlm-rs up: {problem}", file=sys.stderr)
            return 1
        try:
            self._init_storage()
            for component in self._plan():
                if self.stop_requested.is_set():
                    return 130
                self._start(component)
        except StartupFailed as exc:
            print(f"rlm-rs up: {exc}", file=sys.stderr)
            return 1
        self._banner()
        if demo and not self.stop_requested.is_set():
            run_demo(
                base_url=self.base_url,
                api_key=None,
                data_dir=self.data_dir,
                question=DEFAULT_QUESTION,
                timeout=self.ready_timeout * 2,
            )
            self._say("Demo done; the appliance keeps running (Ctrl-C to stop).")
        return self._watch()

    def _busy_port(self) -> str:
        ports = [
            (self.http_port, "the gateway's HTTP port", "set RLM_HTTP_PORT or pass --http-port"),
            (self.grpc_port, "the control plane's gRPC port", "set RLM_GRPC_ADDRESS or pass --grpc-port"),
        ]
        if self.metrics_port:
            ports += [
                (self.metrics_port + i, "a metrics port", "pass another --metrics-port") for i in range(3)
            ]
        for port, what, fix in ports:
            if busy_port("127.0.0.1", port):
                return f"port {port} ({what}) is in use; {fix}"
        return ""

    def _provider_problem(self) -> str:
        """'' when the provider the children will use answers, else one line naming it."""
        from rlm_rs.providers.probe import probe_provider
        from rlm_rs.settings import Settings

        names = ["LLM_PROVIDER", "OPENAI_BASE_URL", "OPENAI_API_KEY"]
        names += ["DEFAULT_ROOT_MODEL", "DEFAULT_SUB_MODEL"]
        given: dict[str, Any] = {k: self.env[k] for k in names if self.env.get(k)}
        result = probe_provider(Settings(**given))
        if result.ok:
            return ""
        return f"{result.detail} (check OPENAI_BASE_URL, OPENAI_API_KEY and DEFAULT_ROOT_MODEL)"

    def _init_storage(self) -> None:
        started = time.monotonic()
        self._say("  storage          ... ")
        result = subprocess.run(
            [sys.executable, "-m", "rlm_rs.cli", "storage", "init"],
            env=self.env, capture_output=True, text=True, timeout=self.ready_timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StartupFailed(f"storage init failed: {result.stderr.strip()[-2000:]}")
        backend = self.env["RLM_STORAGE_BACKEND"]
        self._say(f"  storage          ready ({backend}, {time.monotonic() - started:.1f} s)")

    def _start(self, component: Component) -> None:
        started = time.monotonic()
        component.log_path = self.data_dir / "logs" / f"{component.name.replace(' ', '-')}.log"
        if component.log_path.exists():  # this run's log starts empty; the last run's stays as .1
            component.log_path.replace(component.log_path.with_name(component.log_path.name + ".1"))
        component.log_file = open(component.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self._say(f"  {component.name:<16} starting (log {component.log_path})")
        env = dict(self.env)
        if component.metrics_port:
            env["RLM_METRICS_PORT"] = str(component.metrics_port)
        component.process = subprocess.Popen(
            component.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=component.log_file,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_child_setup,
        )
        self.components.append(component)
        self._wait_healthy(component, started + self.ready_timeout)
        self._say(
            f"  {component.name:<16} ready (pid {component.process.pid}, {time.monotonic() - started:.1f} s)"
        )

    def _wait_healthy(self, component: Component, deadline: float) -> None:
        assert component.process is not None
        stable_since: float | None = None
        while True:
            code = component.process.poll()
            if code is not None:
                raise StartupFailed(
                    f"{component.name} exited with code {code}; last log lines:\n{component.log_tail()}"
                )
            if self.stop_requested.is_set():
                raise StartupFailed("stopped while starting")
            if component.health == "alive":
                # A worker has no endpoint: alive for a second after start is healthy.
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= 1.0:
                    return
            elif self._probe(component):
                return
            if time.monotonic() > deadline:
                raise StartupFailed(
                    f"{component.name} not healthy after {self.ready_timeout:.0f} s; "
                    f"last log lines:\n{component.log_tail()}"
                )
            time.sleep(0.2)

    @staticmethod
    def _probe(component: Component) -> bool:
        if component.health == "http":
            try:
                return httpx.get(component.target, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False
        return grpc_serving(component.target)

    def _banner(self) -> None:
        data = self.data_dir
        lines = [
            "",
            "RLM-RS is up.",
            f"  REST API      {self.base_url}/v1   (OpenAPI: {self.base_url}/docs)",
            f"  Health        {self.base_url}/health/ready",
            f"  gRPC          {self.grpc_address}   "
            f"(uv run rlm-rs grpc list --grpc-address {self.grpc_address})",
            f"  Sandbox pool  unix:{self.socket_path}",
            f"  Data dir      {data}   (logs in {data / 'logs'})",
            f"  Provider      {self.provider}",
            *[
                f"  Metrics       {c.name}: http://127.0.0.1:{c.metrics_port}/metrics"
                for c in self.components
                if c.metrics_port
            ],
            f"  API key       uv run rlm-rs keys create --tenant TENANT --data-dir {data}",
            f"  Demo          uv run rlm-rs demo --base-url {self.base_url} --data-dir {data}",
            "Ctrl-C stops everything.",
            "",
        ]
        self._say("\n".join(lines))

    def _watch(self) -> int:
        while not self.stop_requested.wait(0.5):
            for component in self.components:
                assert component.process is not None
                code = component.process.poll()
                if code is not None:
                    print(
                        f"rlm-rs up: {component.name} exited with code {code}; stopping everything.\n"
                        f"{component.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
        self._say("Stopping ...")
        return 0

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Reverse start order: SIGTERM, wait, then SIGKILL whatever is left of each group."""
        for component in reversed(self.components):
            process = component.process
            if process is None:
                continue
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._say(f"  {component.name:<16} did not stop in {_STOP_GRACE_SECONDS:.0f} s; killing")
            # Sweep the child's process group: its own descendants, and itself if stuck.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5.0)
            if component.log_file is not None:
                component.log_file.close()
            code = process.returncode
            # uvicorn re-raises the SIGTERM it handled, so -15 after a clean shutdown is normal.
            how = f"exit {code}" if code is None or code >= 0 else f"by {signal.Signals(-code).name}"
            self._say(f"  {component.name:<16} stopped ({how})")
        self.components.clear()


def grpc_serving(target: str, timeout: float = 2.0) -> bool:
    """True when the gRPC server at `target` answers health Check with SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
