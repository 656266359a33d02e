"""`rlm-rs bench fairness`: a light tenant's latency while a heavy tenant saturates.

Starts a real control plane (`rlm-rs control serve` as a child process on a free
port, embedded storage in a temporary directory, the `openai` provider
against a local OpenAI-compatible server that answers after
`--model-seconds`, so executions last) with the default fairness settings.
The light tenant sends GetSession / GetExecution one at a time; its p50/p99
is measured alone, then while the heavy tenant saturates one resource at a
time: RPC threads with waits, with watches, with synchronous starts, with all
of them at once, then its running-execution and live-session quotas. The
heavy tenant is hostile: it keeps more calls in flight than the server has
threads and retries a refused call after 0.5 s whatever the retry hint says.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

DESCRIPTION = "light tenant's p50/p99 alone and while a heavy tenant saturates threads and quotas"

DOC = "Harbour report. The north pier was rebuilt in 2021. Traffic grew 8% in 2023.\n" * 50
# A root model that never answers: every turn costs --model-seconds, so a
# synchronous start holds its RPC thread for max_turns of them.
SLOW_TURN = "```repl\nstate['work']['n'] = state['work'].get('n', 0) + 1\nprint('still looking')\n```"
LIGHT_CALL_DEADLINE = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0, help="light tenant's measurement per phase")
    parser.add_argument(
        "--heavy-calls", type=int, default=48, help="long calls the heavy tenant keeps in flight"
    )
    parser.add_argument("--heavy-wait-seconds", type=int, default=300, help="timeout_seconds of its waits")
    parser.add_argument("--model-seconds", type=float, default=0.5, help="latency of each model reply")
    parser.add_argument("--max-turns", type=int, default=40, help="turns of the heavy tenant's executions")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rlm(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rlm_rs.cli", *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def _code(error: Any) -> str:
    """The spec code of a gRPC error (its ErrorInfo reason), else the status name."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)
        if status is not None and status.details:
            detail = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(detail)
            return str(detail.reason)
    except Exception:  # a client-side cancel or deadline carries no status details
        pass
    return str(error.code().name)


class _Appliance:
    """The control plane process, a fake model server, and clients for two tenants."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        import grpc

        from rlm_rs.providers.testing_server import OpenAICompatibleServer
        from rlm_rs.v1 import execution_pb2_grpc, session_pb2_grpc

        self.model = OpenAICompatibleServer(lambda messages: SLOW_TURN)
        self.model.delay_seconds = args.model_seconds
        self.model.__enter__()
        self.env = {
            **os.environ, "RLM_DATA_DIR": str(root / "data"), "API_KEY_PEPPER": "bench-fairness",
            "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": self.model.base_url, "OPENAI_API_KEY": "sk-bench",
            "RLM_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        for name in ("RATE_LIMITS_JSON", "RLM_QUOTAS_JSON", "RLM_RPC_THREADS", "RLM_RPC_RESERVED_THREADS"):
            self.env.pop(name, None)  # the defaults are what is measured
        self.keys = {t: _rlm(self.env, "keys", "create", "--tenant", t) for t in ("light", "heavy")}
        doc = root / "report.txt"
        doc.write_text(DOC)
        self.raw_uris = {t: _rlm(self.env, "upload", "--tenant", t, str(doc)) for t in self.keys}
        target = f"127.0.0.1:{_free_port()}"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "rlm_rs.cli", "control", "serve", "--grpc-address", target,
             "--dev-unsandboxed"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.sessions = session_pb2_grpc.SessionServiceStub(self.channel)
        self.executions = execution_pb2_grpc.ExecutionServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=10)
        self.model.__exit__()

    def auth(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[tenant]}"),)

    def session_request(self, tenant: str) -> Any:
        from rlm_rs.v1 import session_pb2

        uri = self.raw_uris[tenant]  # a tenant names only its own uploads
        doc = session_pb2.DocumentInput(source_name="r.txt", mime_type="text/plain", raw_s3_uri=uri)
        return session_pb2.CreateSessionRequest(ttl_minutes=30, docs=[doc])

    def create_session(self, tenant: str) -> str:
        request = self.session_request(tenant)
        return str(self.sessions.CreateSession(request, metadata=self.auth(tenant), timeout=30).session_id)

    def ready(self, session_ids: list[str]) -> None:
        from rlm_rs.ingestion.worker import IngestionWorker
        from rlm_rs.settings import Settings
        from rlm_rs.storage import open_storage
        from rlm_rs.v1 import session_pb2

        settings = Settings(RLM_DATA_DIR=Path(self.env["RLM_DATA_DIR"]), API_KEY_PEPPER="bench-fairness")
        IngestionWorker(open_storage(settings), settings).run_once()
        for session_id in session_ids:
            tenant = "light" if session_id == session_ids[0] else "heavy"
            got = self.sessions.GetSession(
                session_pb2.GetSessionRequest(session_id=session_id), metadata=self.auth(tenant), timeout=30
            )
            if got.status != session_pb2.SESSION_STATUS_READY:
                raise RuntimeError(f"session {session_id} is {session_pb2.SessionStatus.Name(got.status)}")

    def runtime(self, tenant: str, session_id: str) -> str:
        from rlm_rs.v1 import execution_pb2

        request = execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id)
        created = _patiently(
            lambda: self.executions.CreateRuntimeExecution(request, metadata=self.auth(tenant), timeout=30)
        )
        return str(created.execution_id)

    def cancel_running(self, tenant: str) -> None:
        """Cancels every RUNNING execution of `tenant` (found in storage)."""
        from rlm_rs.settings import Settings
        from rlm_rs.storage import open_storage
        from rlm_rs.v1 import execution_pb2

        settings = Settings(RLM_DATA_DIR=Path(self.env["RLM_DATA_DIR"]), API_KEY_PEPPER="bench-fairness")
        for record in open_storage(settings).metadata.executions_with_status("RUNNING"):
            if record.get("tenant_id") == tenant:
                request = execution_pb2.CancelExecutionRequest(execution_id=record["execution_id"])
                cancel = functools.partial(
                    self.executions.CancelExecution, request, metadata=self.auth(tenant), timeout=60
                )
                try:
                    _patiently(cancel)
                except Exception:  # best effort: it ends by itself at max_turns
                    continue


def _patiently(call: Callable[[], Any], attempts: int = 20) -> Any:
    """The bench's own set-up calls honour RATE_LIMITED (the heavy tenant's
    hammering spends the same bucket)."""
    for _ in range(attempts - 1):
        try:
            return call()
        except Exception as error:
            if not hasattr(error, "code") or _code(error) != "RATE_LIMITED":
                raise
            time.sleep(0.5)
    return call()


class _Heavy:
    """Keeps `calls` long calls in flight from one thread per call; a refused
    call is tried again after 0.5 s. Counts what the server answered."""

    def __init__(self, calls: int, start: Callable[[], Any]) -> None:
        self.start = start
        self.outcomes: Counter[str] = Counter()
        self._since: dict[int, float] = {}  # thread -> when its current call began
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(calls)]
        for thread in self.threads:
            thread.start()

    def held(self) -> int:
        """Calls in flight for over a second: the ones the server accepted."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for began in self._since.values() if now - began > 1.0)

    def _loop(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            with self._lock:
                self._since[me] = time.monotonic()
            try:
                self.start().result()
                outcome = "completed"
            except Exception as error:
                outcome = _code(error) if hasattr(error, "code") else type(error).__name__
            with self._lock:
                self._since.pop(me, None)
                self.outcomes[outcome] += 1
            if outcome != "completed":
                self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()


class _Stream:
    """A watch as a future: `result()` drains it."""

    def __init__(self, stream: Any) -> None:
        stream.initial_metadata()  # raises at once when refused
        self.stream = stream

    def result(self) -> None:
        for _ in self.stream:
            pass


def _measure(app: _Appliance, session_id: str, execution_id: str, seconds: float) -> dict[str, Any]:
    """The light tenant's GetSession / GetExecution, alternating, one at a time."""
    from rlm_rs.v1 import execution_pb2, session_pb2

    get_session = session_pb2.GetSessionRequest(session_id=session_id)
    get_execution = execution_pb2.GetExecutionRequest(execution_id=execution_id)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            if turn % 2:
                app.executions.GetExecution(
                    get_execution, metadata=app.auth("light"), timeout=LIGHT_CALL_DEADLINE
                )
            else:
                app.sessions.GetSession(get_session, metadata=app.auth("light"), timeout=LIGHT_CALL_DEADLINE)
        except Exception as error:
            errors[_code(error)] += 1
        latencies.append((time.perf_counter() - began) * 1000)
        turn += 1
        time.sleep(0.025)  # about 35 calls a second: well inside the default rate limit
    return {
        "calls": len(latencies),
        "p50_ms": round(_quantile(latencies, 0.5), 2),
        "p99_ms": round(_quantile(latencies, 0.99), 2),
        "max_ms": round(max(latencies, default=0.0), 2),
        "errors": dict(errors),
    }


class _Done:
    """A short call's future as a long call's: `result()` returns its reply."""

    def __init__(self, future: Any) -> None:
        self.future = future

    def result(self) -> Any:
        return self.future.result()


def _phase(
    app: _Appliance, light: tuple[str, str], seconds: float, heavies: list[_Heavy], baseline: dict[str, Any],
    during: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measures the light tenant once the heavy tenant has filled what it can,
    then stops the heavy tenant and cancels its executions."""
    time.sleep(2.0)
    held = sum(h.held() for h in heavies)
    numbers = _measure(app, *light, seconds)
    extra = during() if during else {}
    outcomes: Counter[str] = Counter()
    for heavy in heavies:
        heavy.stop()
    for _ in range(3):  # a call started just before stop() may have created another execution
        app.cancel_running("heavy")
        deadline = time.monotonic() + 10
        for heavy in heavies:
            for thread in heavy.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
    for heavy in heavies:
        outcomes.update(heavy.outcomes)
    attempts = sum(outcomes.values())
    return {
        "light": numbers,
        "p50_ratio": round(numbers["p50_ms"] / max(baseline["p50_ms"], 1e-6), 2),
        "p99_ratio": round(numbers["p99_ms"] / max(baseline["p99_ms"], 1e-6), 2),
        "heavy": {"held_while_measured": held, "attempts": attempts, "answers": dict(outcomes)},
        **extra,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlm-bench-fairness-") as directory:
        app = _Appliance(Path(directory), args)
        try:
            light_session, heavy_session = app.create_session("light"), app.create_session("heavy")
            app.ready([light_session, heavy_session])
            light = (light_session, app.runtime("light", light_session))
            heavy = _HeavyTenant(app, heavy_session, args)
            baseline = _measure(app, *light, args.seconds)
            phases = _phases(app, light, heavy, baseline, args)
        finally:
            app.close()
    return {
        "settings": {"heavy_calls_in_flight": args.heavy_calls, "heavy_wait_seconds": args.heavy_wait_seconds,
                     "model_seconds": args.model_seconds, "max_turns": args.max_turns,
                     "light_seconds_per_phase": args.seconds},
        "baseline": baseline,
        **phases,
    }  # fmt: skip


def _phases(
    app: _Appliance, light: tuple[str, str], heavy: _HeavyTenant, baseline: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Each phase: one resource (or all the long calls at once) saturated by the heavy tenant."""
    phases: dict[str, Any] = {}
    n = args.heavy_calls
    phases["waits"] = _phase(app, light, args.seconds, [heavy.waits(n)], baseline)
    phases["watches"] = _phase(app, light, args.seconds, [heavy.watches(n)], baseline)
    phases["synchronous_starts"] = _phase(app, light, args.seconds, [heavy.synchronous_starts(n)], baseline)
    phases["all_long_calls"] = _phase(
        app,
        light,
        args.seconds,
        [heavy.waits(n // 3), heavy.watches(n // 3), heavy.synchronous_starts(n // 3)],
        baseline,
    )
    creates_execution = _light_creates(app, light[0], "execution")
    phases["execution_quota"] = _phase(
        app, light, args.seconds, [heavy.runtime_creates(4)], baseline, creates_execution
    )
    creates_session = _light_creates(app, light[0], "session")
    phases["session_quota"] = _phase(
        app, light, args.seconds, [heavy.session_creates(4)], baseline, creates_session
    )
    return phases


class _HeavyTenant:
    """The heavy tenant's calls, each kind as a _Heavy keeping `count` of them in flight."""

    def __init__(self, app: _Appliance, session_id: str, args: argparse.Namespace) -> None:
        from rlm_rs.v1 import execution_pb2

        self.app = app
        self.session_id = session_id
        self.args = args
        self.auth = app.auth("heavy")
        self.wait_timeout = args.heavy_wait_seconds + 30
        self.runtime_request = execution_pb2.CreateRuntimeExecutionRequest(session_id=session_id)
        self.session_request = app.session_request("heavy")

    def waits(self, count: int) -> _Heavy:
        from rlm_rs.v1 import execution_pb2

        app, auth, timeout = self.app, self.auth, self.wait_timeout
        execution = app.runtime("heavy", self.session_id)
        request = execution_pb2.WaitExecutionRequest(
            execution_id=execution, timeout_seconds=self.args.heavy_wait_seconds
        )
        return _Heavy(count, lambda: app.executions.WaitExecution.future(
            request, metadata=auth, timeout=timeout))  # fmt: skip

    def watches(self, count: int) -> _Heavy:
        from rlm_rs.v1 import execution_pb2

        app, auth, timeout = self.app, self.auth, self.wait_timeout
        execution = app.runtime("heavy", self.session_id)
        request = execution_pb2.WatchExecutionRequest(execution_id=execution)
        return _Heavy(count, lambda: _Stream(app.executions.WatchExecution(
            request, metadata=auth, timeout=timeout)))  # fmt: skip

    def synchronous_starts(self, count: int) -> _Heavy:
        from rlm_rs.v1 import execution_pb2
        from rlm_rs.v1.common_pb2 import Budgets

        app, auth = self.app, self.auth
        request = execution_pb2.StartExecutionRequest(
            session_id=self.session_id, question="Keep looking.",
            budgets=Budgets(max_turns=self.args.max_turns, max_total_seconds=600),
            options=execution_pb2.ExecutionOptions(synchronous=True, synchronous_timeout_seconds=300),
        )  # fmt: skip
        return _Heavy(count, lambda: app.executions.StartExecution.future(
            request, metadata=auth, timeout=330))  # fmt: skip

    def runtime_creates(self, count: int) -> _Heavy:
        app, auth, request = self.app, self.auth, self.runtime_request
        return _Heavy(count, lambda: _Done(app.executions.CreateRuntimeExecution.future(
            request, metadata=auth, timeout=30)))  # fmt: skip

    def session_creates(self, count: int) -> _Heavy:
        app, auth, request = self.app, self.auth, self.session_request
        return _Heavy(count, lambda: _Done(app.sessions.CreateSession.future(
            request, metadata=auth, timeout=30)))  # fmt: skip


def _light_creates(app: _Appliance, light_session: str, what: str) -> Callable[[], dict[str, Any]]:
    """The light tenant's create (an execution or a session) during a quota phase, timed."""

    def attempt() -> dict[str, Any]:
        began = time.perf_counter()
        try:
            if what == "execution":
                app.runtime("light", light_session)
            else:
                app.create_session("light")
            outcome = "ok"
        except Exception as error:
            outcome = _code(error)
        elapsed_ms = round((time.perf_counter() - began) * 1000, 2)
        return {f"light_create_{what}": outcome, f"light_create_{what}_ms": elapsed_ms}

    return attempt
