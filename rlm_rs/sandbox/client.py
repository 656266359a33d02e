"""How the control plane runs a step: one small interface, two implementations.

`SandboxClient.run_step(StepRequest) -> StepResult` never raises for a step's
own failure (that is in StepResult.error); it raises RlmError("LAMBDA_ERROR")
only when the sandbox itself is unavailable. `PoolSandbox` calls the hardened
pool (rlm_rs/sandbox/pool/) over gRPC on a Unix socket and is the default
whenever a socket is configured; `InProcessSandbox` runs the executor in this
process: development and tests of the policy layers only (no OS isolation,
and one C-level operation can outrun max_step_seconds), so
`make_sandbox_client` refuses to choose it unless RLM_DEV_UNSANDBOXED=1
(the control plane's development mode, rlm_rs/control/server.py).
`temporary_pool()` starts a private pool process for one command or test
session.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Protocol

import grpc
import grpc.experimental
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlm_rs.errors import RlmError
from rlm_rs.sandbox.pool._fairness import DEFAULT_MAX_QUEUE_SECONDS
from rlm_rs.sandbox.v1 import sandbox_pb2_grpc
from rlm_rs.sandbox.v1.sandbox_pb2 import (
    InlineCall,
    InlineReply,
    PoolStatus,
    PoolStatusRequest,
    ReplyInlineRequest,
    SandboxPolicy,
    StepRequest,
    StepResult,
)
from rlm_rs.settings import Settings

# How much longer than the step's own wall-clock limit a caller waits for the
# pool's answer (the pool kills the worker at the limit and answers itself),
# plus the longest a step may wait for a worker in its tenant's queue (the
# pool answers RATE_LIMITED itself after that).
_RPC_SLACK_SECONDS = 20.0 + DEFAULT_MAX_QUEUE_SECONDS
_DEFAULT_STEP_SECONDS = 30.0
_DEFAULT_WAIT_SECONDS = 300.0
# ReplyInline refused because the pool is at its concurrent-call limit (a
# flood of queued steps) is retried for this long: the queued steps give up
# within their own max_queue_seconds and free the pool's call slots.
_REPLY_RETRY_SECONDS = 20.0 + DEFAULT_MAX_QUEUE_SECONDS
_RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
# Resolves one inline call of the step within `timeout` seconds (the control
# plane's rlm_rs/control/executions/inline.py); raising abandons the step.
Inline = Callable[[InlineCall, float], InlineReply]


def _resolved(inline: Inline, call: InlineCall, timeout: float) -> InlineReply:
    """The resolver's answer; its own failure ends the step, never this call."""
    try:
        return inline(call, timeout)
    except Exception:
        return InlineReply(error_code="INTERNAL_ERROR", error="the inline call could not be resolved")


def _in_process_channel(inline: Inline) -> Inline:
    """In-process the step calls the resolver directly, with a copy of each
    message (as the wire would give it: nothing shared with step code)."""

    def call(message: InlineCall, timeout: float) -> InlineReply:
        copied = InlineCall.FromString(message.SerializeToString())
        getattr(copied, copied.WhichOneof("call") or "llm").key = ""
        return inline(copied, timeout)

    return call


class SandboxClient(Protocol):
    def run_step(self, request: StepRequest) -> StepResult: ...

    def status(self) -> PoolStatus: ...

    def close(self) -> None: ...


class InProcessSandbox:
    """Runs steps in the calling process: policy layers only, no OS isolation.
    Development mode: constructing it is the explicit choice (see module doc)."""

    supports_inline = True

    def run_step(self, request: StepRequest, inline: Inline | None = None) -> StepResult:
        from rlm_rs.sandbox.executor import run_step

        channel = None if inline is None else _in_process_channel(inline)
        return run_step(request, watchdog=True, inline=channel)

    def status(self) -> PoolStatus:
        return PoolStatus()

    def close(self) -> None:
        return None


class PoolSandbox:
    """SandboxService over `unix:<socket_path>`; LAMBDA_ERROR when unreachable."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.server_pid: int | None = None  # set by temporary_pool()
        from rlm_rs.tracing import ClientTracingInterceptor

        self._raw_channel = grpc.insecure_channel(
            f"unix:{socket_path}",
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # RunStep's stream is read on the calling thread, not handed
                # over from gRPC's polling thread: client CPU per step 0.49 ->
                # 0.37 ms (docs/sandbox-pool.md, "Issue 17's pool targets").
                (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
            ],
        )
        self._channel = grpc.intercept_channel(self._raw_channel, ClientTracingInterceptor())
        self._stub = sandbox_pb2_grpc.SandboxServiceStub(self._channel)
        # RunStep and ReplyInline skip the interceptor: a step's stream carries
        # no span (streams are not traced) and a reply is part of its step.
        self._step_stub = sandbox_pb2_grpc.SandboxServiceStub(self._raw_channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    supports_inline = True

    def run_step(self, request: StepRequest, inline: Inline | None = None) -> StepResult:
        """One step over RunStep's stream: each inline call it brings is
        resolved by `inline` (None: refused) and answered with ReplyInline;
        the result last. An `inline` that raises fails that call
        (INTERNAL_ERROR), which ends the step."""
        seconds = request.limits.max_step_seconds or _DEFAULT_STEP_SECONDS
        wait = request.limits.max_step_wait_seconds or _DEFAULT_WAIT_SECONDS
        stream = self._step_stub.RunStep(request, timeout=seconds + wait + _RPC_SLACK_SECONDS)
        try:
            for message in stream:
                if message.HasField("result"):
                    result: StepResult = message.result
                    return result
                call: InlineCall = message.call
                if inline is None:
                    reply = InlineReply(
                        error_code="VALIDATION_ERROR", error="inline calls are not available here"
                    )
                else:
                    reply = _resolved(inline, call, wait)
                reply.call_id = call.call_id
                self._reply(message.step_token, reply)
        except grpc.RpcError as exc:
            stream.cancel()
            raise _unavailable(self.socket_path, exc) from exc
        except BaseException:
            stream.cancel()  # the caller went away: the pool ends the step and its worker
            raise
        raise RlmError("LAMBDA_ERROR", "the sandbox pool ended the step without a result")

    def _reply(self, token: bytes, reply: InlineReply) -> None:
        """Deliver one reply. A pool too busy to take it is asked again for up
        to _REPLY_RETRY_SECONDS; a step that no longer waits for it (it ended)
        says how on its own stream."""
        give_up = time.monotonic() + _REPLY_RETRY_SECONDS
        delay = 0.01
        while True:
            try:
                self._step_stub.ReplyInline(ReplyInlineRequest(step_token=token, reply=reply), timeout=10)
                return
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code not in _RETRIED or time.monotonic() + delay > give_up:
                    return
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def status(self) -> PoolStatus:
        try:
            status: PoolStatus = self._stub.GetPoolStatus(PoolStatusRequest(), timeout=10)
        except grpc.RpcError as exc:
            raise _unavailable(self.socket_path, exc) from exc
        return status

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()


def _unavailable(socket_path: str, exc: grpc.RpcError) -> RlmError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    return RlmError(
        "LAMBDA_ERROR",
        "the sandbox pool is unavailable",
        {"socket": socket_path, "grpc_status": code.name if code else "UNKNOWN"},
    )


def make_sandbox_client(settings: Settings) -> SandboxClient:
    """The pool when a socket is configured (LAMBDA_FUNCTION_NAME); in-process
    only in explicit development mode (RLM_DEV_UNSANDBOXED=1); else refused."""
    if settings.sandbox_socket:
        return PoolSandbox(settings.sandbox_socket)
    if settings.dev_unsandboxed:
        return InProcessSandbox()
    raise RlmError(
        "LAMBDA_ERROR",
        "no sandbox pool is configured: set LAMBDA_FUNCTION_NAME to the pool's socket "
        "(rlm-rs sandbox serve), or RLM_DEV_UNSANDBOXED=1 to run steps in this process "
        "for development (no OS isolation; C-level work can outrun max_step_seconds)",
    )


@contextlib.contextmanager
def temporary_pool(
    policy: SandboxPolicy | None = None,
    *,
    strict: bool = False,
    allow_unsafe: bool = False,
    document_root: str | None = None,
    start_timeout: float = 60.0,
) -> Iterator[PoolSandbox]:
    """Start a private pool process on a temporary socket; stop it on exit.

    `policy` is the pool's complete policy (start from
    rlm_rs.sandbox.pool.server.pool_policy()); `allow_unsafe` sets
    RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE=1 for that pool only (tests).
    """
    with tempfile.TemporaryDirectory(prefix="rlm-pool-") as directory:
        socket_path = os.path.join(directory, "sandbox.sock")
        cmd = [sys.executable, "-m", "rlm_rs.sandbox.pool.server", "--socket", socket_path]
        if strict:
            cmd.append("--strict")
        if document_root:
            cmd += ["--document-root", document_root]
        if policy is not None:
            cmd += ["--policy-b64", base64.b64encode(policy.SerializeToString()).decode()]
        env = dict(os.environ)
        env.pop("RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE", None)
        if allow_unsafe:
            env["RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE"] = "1"
        with tempfile.TemporaryFile(dir=directory) as log:
            process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            client = PoolSandbox(socket_path)
            client.server_pid = process.pid
            try:
                _wait_serving(client, process, log, start_timeout)
                yield client
            finally:
                client.close()
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


def _wait_serving(
    client: PoolSandbox, process: subprocess.Popen[bytes], log: IO[bytes], timeout: float
) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if process.poll() is not None:
            log.seek(0)
            output = log.read()[-2000:]
            raise RlmError(
                "LAMBDA_ERROR",
                "the sandbox pool did not start",
                {"exit_code": process.returncode, "log": output.decode(errors="replace")},
            )
        if os.path.exists(client.socket_path) and client.healthy(timeout=1.0):
            return
        time.sleep(0.02)
    raise RlmError("LAMBDA_ERROR", "the sandbox pool did not become healthy in time")
