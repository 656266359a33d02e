"""The pool front: gRPC SandboxService on a Unix socket, in front of the zygote.

The front owns everything gRPC (threads, health, reflection) and never forks a
sandbox worker: it starts the zygote as a fresh interpreter, admits each step
fairly across tenants (_fairness.py), opens each manifest document read-only
(text, then offsets if set, then meta if set, in manifest order) and passes the
fds with the request over a Unix socket to a warm worker it has checked is
alive (a dead idle worker is dropped, never handed a step). It applies the
pool's own policy (configuration, never sent with a step) to every request:
the step's StepLimits run at most at the pool's caps, each lowered one named in
the result's capped_limits; hardening is the pool's alone (a request cannot
express it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import itertools
import json
import os
import queue
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rlm_rs.errors import RlmError
from rlm_rs.observability import (
    SANDBOX_STEP_SECONDS,
    SANDBOX_STEPS,
    configure_logging,
    get_logger,
    serve_metrics,
)
from rlm_rs.sandbox.policy import StepCaps, configured_pool_policy, policy_with_defaults
from rlm_rs.sandbox.pool import _wire
from rlm_rs.sandbox.pool._fairness import FairScheduler, FairShare, SlotRefused
from rlm_rs.sandbox.pool._worker import EXTRA_STEP_NICENESS, RUN_PREFIX, WORKER_NICENESS
from rlm_rs.sandbox.pool.zygote import DISPATCH_PAYLOAD, FATE_PAYLOAD, PAUSE_PAYLOAD
from rlm_rs.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from rlm_rs.sandbox.v1.sandbox_pb2 import (
    InlineCall,
    InlineReply,
    LayerStatus,
    PoolStatus,
    ReplyInlineRequest,
    ReplyInlineResponse,
    SandboxPolicy,
    StepLimits,
    StepOutput,
    StepRequest,
    StepResult,
)
from rlm_rs.settings import Settings
from rlm_rs.v1.common_pb2 import ErrorDetail

UNSAFE_ENV = "RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE"
SERVICE_NAME = "rlm_rs.sandbox.v1.SandboxService"
HARDENED_HEALTH_NAME = "rlm_rs.sandbox.v1.SandboxService/hardened"
# Extra time the front waits beyond the step's own limit before giving up on
# the zygote (which enforces the real limit itself).
_FRONT_SLACK_SECONDS = 15.0


def _log() -> Any:
    """Created per use: configure_logging() runs after this module is imported."""
    return get_logger(component="sandbox-pool")


# Where a step's inline calls go (the control plane, over the RunStep stream).
Relay = Callable[[InlineCall], InlineReply]
# A step ended by the pool: (code, message, details).
Refusal = tuple[str, str, dict[str, Any]]
# A step as a conversation: yields inline calls, is sent their replies, returns the result.
Conversation = Generator[InlineCall, InlineReply, StepResult]
_WORKER_WAIT_SECONDS = 30.0
_MAX_RESULT_BYTES = 64 * 1024 * 1024


class PoolUnavailable(Exception):
    """The zygote is gone or refused to start."""


def pool_policy(settings: Settings | None = None) -> SandboxPolicy:
    """The pool's own policy: the defaults, then RLM_SANDBOX_POLICY_JSON."""
    return configured_pool_policy(settings.sandbox_policy_json if settings is not None else None)


def open_documents(request: StepRequest, root: str | None = None) -> tuple[list[int], int]:
    """Open the manifest read-only: per document text, offsets (if set), meta (if
    set). With `root`, every path must resolve to a regular file below it."""
    fds: list[int] = []
    total = 0
    try:
        for doc in request.context_manifest:
            for path, required in (
                (doc.text_path, True),
                (doc.offsets_path, False),
                (doc.meta_path, False),
            ):
                if not (required or path):
                    continue
                if root is not None and not os.path.realpath(path).startswith(root + os.sep):
                    raise PermissionError(errno.EACCES, "outside the document root", path)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
                fds.append(fd)
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", path)
                total += info.st_size
    except OSError:
        _close(fds)
        raise
    return fds, total


def _idle_and_alive(sock: socket.socket) -> bool:
    """A warm worker sends nothing before its step: anything readable (EOF
    from a dead process, or bytes it had no business sending) means unusable."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    return False


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def error_result(request: StepRequest, code: str, message: str, **details: Any) -> StepResult:
    return StepResult(
        success=False,
        state_json=request.state_json,
        turn_index=request.turn_index,
        isolation="pool",
        error=ErrorDetail(code=code, message=message, details_json=json.dumps(details, sort_keys=True)),
    )


@dataclass
class _WarmWorker:
    pid: int
    sock: socket.socket


class PoolFront:
    """Starts the zygote and talks to it and to its workers; thread-safe."""

    def __init__(
        self,
        policy: SandboxPolicy,
        *,
        strict: bool = False,
        allow_unsafe: bool = False,
        step_module: str | None = None,
        start_timeout: float = 60.0,
        document_root: str | None = None,
    ):
        self.policy = policy
        self._caps = StepCaps(policy)
        self.document_root = os.path.realpath(document_root) if document_root else None
        self.strict = strict
        self.allow_unsafe = allow_unsafe
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._waiting: dict[int, futures.Future[_wire.Frame]] = {}
        self._waiting_lock = threading.Lock()
        self._warm: queue.Queue[_WarmWorker | None] = queue.Queue()
        self.scheduler = FairScheduler(FairShare.from_policy(policy))
        self.dead_idle_workers_total = 0
        self.alive = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [
            sys.executable, "-I", "-m", "rlm_rs.sandbox.pool.zygote",
            "--fd", str(theirs.fileno()),
            "--policy", base64.b64encode(policy.SerializeToString()).decode(),
        ]  # fmt: skip
        if strict:
            cmd.append("--strict")
        if allow_unsafe:
            cmd.append("--allow-unsafe")
        if step_module:
            cmd += ["--step-module", step_module]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.sock = ours
        self._reader = _wire.FrameReader(ours)
        ours.settimeout(start_timeout)
        try:
            hello = self._reader.read_frame()
        except (OSError, _wire.WireError) as exc:
            self.stop()
            raise PoolUnavailable(f"zygote did not start: {exc}") from exc
        if hello is None:
            self.stop()
            raise PoolUnavailable("zygote exited during start-up")
        self.hello = json.loads(hello.payload)
        if hello.kind == _wire.FATAL:
            self.stop()
            missing = ", ".join(self.hello.get("missing", []))
            raise PoolUnavailable(f"strict mode: layers missing on this host: {missing}")
        ours.settimeout(None)
        self.alive = True
        self._thread = threading.Thread(target=self._read_loop, name="pool-reader", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        try:
            while True:
                for frame in self._reader.feed():
                    if frame.kind == _wire.WORKER and len(frame.fds) == 1:
                        sock = socket.socket(fileno=frame.fds[0])
                        self._warm.put(_WarmWorker(frame.req_id, sock))
                        continue
                    with self._waiting_lock:
                        waiter = self._waiting.pop(frame.req_id, None)
                    if waiter is not None:
                        waiter.set_result(frame)
                    else:
                        _close(frame.fds)
                if self._reader.eof:
                    break
        except (OSError, _wire.WireError):
            pass
        self.alive = False
        self._warm.put(None)  # wakes a waiting step; it will see alive=False
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            waiter.set_exception(PoolUnavailable("the sandbox zygote exited"))

    def _send(self, kind: int, req_id: int, payload: bytes) -> None:
        try:
            with self._send_lock:
                _wire.send_frame(self.sock, kind, req_id, payload)
        except OSError as exc:
            raise PoolUnavailable(f"cannot reach the zygote: {exc}") from exc

    def _call(self, kind: int, payload: bytes, timeout: float) -> _wire.Frame:
        if not self.alive:
            raise PoolUnavailable("the sandbox zygote is not running")
        req_id = next(self._ids)
        waiter: futures.Future[_wire.Frame] = futures.Future()
        with self._waiting_lock:
            self._waiting[req_id] = waiter
        try:
            self._send(kind, req_id, payload)
            return waiter.result(timeout)
        except futures.TimeoutError as exc:
            raise PoolUnavailable("the zygote did not answer in time") from exc
        finally:
            with self._waiting_lock:
                self._waiting.pop(req_id, None)

    def _take_worker(self, timeout: float) -> _WarmWorker:
        give_up = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise PoolUnavailable("the sandbox zygote is not running")
            try:
                worker = self._warm.get(timeout=max(0.0, give_up - time.monotonic()))
            except queue.Empty as exc:
                raise PoolUnavailable("no sandbox worker became ready in time") from exc
            if worker is None:
                self._warm.put(None)
                continue
            return worker

    def run_step(self, request: StepRequest, relay: Relay | None = None) -> StepResult:
        """One step; its inline calls go to `relay` (None: each is answered
        with an error, and the step fails)."""
        steps = self.steps(request)
        try:
            message = next(steps)
            while isinstance(message, InlineCall):
                reply = relay(message) if relay is not None else _no_relay(message)
                message = steps.send(reply)
        finally:
            steps.close()  # releases the step's slot
        return message

    def steps(self, request: StepRequest) -> Generator[InlineCall | StepResult, InlineReply, None]:
        """One step as a conversation: yields each inline call the step makes
        (send its InlineReply back), then the StepResult last. Closing the
        generator early (the caller went away) kills the step's worker."""
        if request.unsafe_disable_policy_layers and not self.allow_unsafe:
            yield error_result(
                request,
                "VALIDATION_ERROR",
                f"unsafe_disable_policy_layers is refused unless the pool runs with {UNSAFE_ENV}=1",
            )
            return
        try:
            running = self.scheduler.acquire(request.tenant_id)
        except SlotRefused as refused:
            yield error_result(request, "RATE_LIMITED", refused.message, **refused.details)
            return
        try:
            niceness = WORKER_NICENESS if running == 1 else EXTRA_STEP_NICENESS
            yield (yield from self._run_admitted(request, niceness))
        finally:
            self.scheduler.release(request.tenant_id)

    def _run_admitted(self, request: StepRequest, niceness: int) -> Conversation:
        """The step at min(its StepLimits, the pool's caps); the result names
        every limit the pool lowered (capped_limits), whatever the outcome."""
        requested = request.limits if request.HasField("limits") else None
        limits, capped = self._caps.apply(requested)
        if capped:
            _log().warning("sandbox_step_limits_capped", execution_id=request.execution_id, capped=capped)
        result = yield from self._run_limited(request, limits, niceness)
        result.ClearField("capped_limits")  # the pool's to say, never a worker's
        result.capped_limits.extend(capped)
        return result

    def _run_limited(self, request: StepRequest, limits: StepLimits, niceness: int) -> Conversation:
        outgoing = StepRequest()
        outgoing.CopyFrom(request)
        outgoing.limits.CopyFrom(limits)
        try:
            fds, document_bytes = open_documents(request, self.document_root)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return error_result(request, "S3_READ_ERROR", f"document not readable: {reason}")
        if len(fds) > _wire.MAX_FDS_PER_FRAME:
            _close(fds)
            return error_result(
                request,
                "VALIDATION_ERROR",
                f"a step takes at most {_wire.MAX_FDS_PER_FRAME} document files "
                "(text, offsets, meta) per step",
                files=len(fds),
            )
        seconds = limits.max_step_seconds
        payload = RUN_PREFIX.pack(seconds, document_bytes, niceness) + outgoing.SerializeToString()
        try:
            frame, pid, refusal = yield from self._exchange(payload, fds, limits)
            if refusal is not None:
                return error_result(request, refusal[0], refusal[1], **refusal[2])
            if frame is None:
                fate = json.loads(self._call(_wire.FATE, FATE_PAYLOAD.pack(pid), 30.0).payload)
                code = fate["code"] if fate["code"] != "OK" else "LAMBDA_ERROR"
                message = fate["message"] or "sandbox worker exited without answering"
                return error_result(request, code, message, **fate["details"])
        except PoolUnavailable as exc:
            return error_result(request, "LAMBDA_ERROR", f"sandbox pool failed: {exc}")
        finally:
            _close(fds)
        try:
            result = StepResult.FromString(frame.payload)
        except DecodeError:
            return error_result(request, "LAMBDA_ERROR", "sandbox worker answered garbage")
        result.isolation = "pool"
        result.turn_index = request.turn_index
        if not result.success and not result.state_json:
            result.state_json = request.state_json
        return result

    def _exchange(
        self, payload: bytes, fds: list[int], limits: StepLimits
    ) -> Generator[InlineCall, InlineReply, tuple[_wire.Frame | None, int, Refusal | None]]:
        """Send the step to a live warm worker, relay its inline calls, read its
        answer (frame None: it died; a Refusal: it broke the channel's rules
        and was killed).

        Idle workers die too (the OOM killer picks them first: oom_score_adj
        1000): one found dead before the step was sent is dropped and the next
        one taken, until _WORKER_WAIT_SECONDS have passed."""
        give_up = time.monotonic() + _WORKER_WAIT_SECONDS
        seconds = limits.max_step_seconds
        while True:
            worker = self._take_worker(max(0.0, give_up - time.monotonic()))
            with worker.sock:
                try:
                    if not _idle_and_alive(worker.sock):
                        self.dead_idle_workers_total += 1
                        continue
                    _wire.send_frame(worker.sock, _wire.RUN, 1, payload, fds)
                except OSError:
                    self.dead_idle_workers_total += 1
                    continue  # died while idle: nothing ran, take another one
                self._send(_wire.DISPATCH, worker.pid, DISPATCH_PAYLOAD.pack(seconds))
                reader = _wire.FrameReader(worker.sock, _MAX_RESULT_BYTES, {_wire.CALL: _wire.MAX_CALL_BYTES})
                try:
                    return (yield from self._converse(worker, reader, limits))
                finally:
                    reader.close_fds()  # a worker has no business sending fds

    def _converse(
        self, worker: _WarmWorker, reader: _wire.FrameReader, limits: StepLimits
    ) -> Generator[InlineCall, InlineReply, tuple[_wire.Frame | None, int, Refusal | None]]:
        """Frames from a worker running its step: CALL frames are relayed (up
        to max_inline_calls_per_step, numbered 1, 2, ..., each well-formed and
        within MAX_CALL_BYTES), the RESULT ends it; anything else kills it."""
        calls, waited = 0, 0.0
        while True:
            worker.sock.settimeout(limits.max_step_seconds + _FRONT_SLACK_SECONDS)
            try:
                frame = reader.read_frame()
            except _wire.FrameTooLarge:
                return None, worker.pid, _violation(worker, "oversized", limit_bytes=_wire.MAX_CALL_BYTES)
            except (OSError, _wire.WireError):
                frame = None
            if frame is not None:
                _close(frame.fds)
            if frame is None:
                return None, worker.pid, None
            if frame.kind == _wire.RESULT:
                return frame, worker.pid, None
            if frame.kind != _wire.CALL or frame.fds:
                return None, worker.pid, _violation(worker, "unexpected_frame", kind=frame.kind)
            calls += 1
            call = _parse_call(frame, calls)
            if call is None:
                return None, worker.pid, _violation(worker, "malformed", call=calls)
            if calls > limits.max_inline_calls_per_step:
                _kill_worker(worker)
                limit = limits.max_inline_calls_per_step
                return (
                    None,
                    worker.pid,
                    (
                        "BUDGET_EXCEEDED",
                        f"step made more than {limit} inline calls",
                        {"limit": "max_inline_calls_per_step", "value": limit, "layer": "pool"},
                    ),
                )
            left = limits.max_step_wait_seconds - waited
            self._send(_wire.PAUSE, worker.pid, PAUSE_PAYLOAD.pack(max(left, 0.0) + _FRONT_SLACK_SECONDS))
            started = time.monotonic()
            reply = yield call
            waited += time.monotonic() - started
            self._send(_wire.RESUME, worker.pid, b"")
            if waited > limits.max_step_wait_seconds:
                reply = InlineReply(
                    call_id=call.call_id,
                    error_code="STEP_TIMEOUT",
                    error=f"step waited more than {limits.max_step_wait_seconds:g} s on inline calls",
                )
            reply.call_id = call.call_id
            try:
                _wire.send_frame(worker.sock, _wire.CALL_REPLY, call.call_id, reply.SerializeToString())
            except OSError:
                return None, worker.pid, None

    def status_dict(self) -> dict[str, Any]:
        frame = self._call(_wire.STATUS, b"", 10.0)
        data = dict(json.loads(frame.payload))
        data["warm_at_front"] = self._warm.qsize()
        data["dead_idle_workers_total"] = self.dead_idle_workers_total
        data["fairness"] = self.scheduler.snapshot()
        return data

    def status(self) -> PoolStatus:
        data = self.status_dict()
        return PoolStatus(
            layers=[LayerStatus(**layer) for layer in data["layers"]],
            warm_workers=data["warm_workers"],
            busy_workers=data["busy_workers"],
            steps_total=data["steps_total"],
            workers_failed_total=data["workers_failed_total"],
            strict=data["strict"],
            policy=self.policy,
        )

    def _remove_leftovers(self) -> None:
        """After the zygote is gone: its cgroups and empty-root directory, which
        it removes itself unless it was killed (workers die with it)."""
        leftovers = getattr(self, "hello", {}).get("leftovers") or {}
        paths = [*leftovers.get("cgroups", []), *[p for p in [leftovers.get("root")] if p]]
        give_up = time.monotonic() + 2.0
        while paths and time.monotonic() < give_up:
            for path in list(paths):
                try:
                    os.rmdir(path)
                    paths.remove(path)
                except FileNotFoundError:
                    paths.remove(path)
                except OSError:
                    pass  # a dying worker is still in the cgroup
            if paths:
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError), self._send_lock:
                _wire.send_frame(self.sock, _wire.SHUTDOWN, 0, b"")
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.alive = False
        self.sock.close()
        self._remove_leftovers()
        while True:
            try:
                worker = self._warm.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.sock.close()


def _no_relay(call: InlineCall) -> InlineReply:
    return InlineReply(
        call_id=call.call_id, error_code="VALIDATION_ERROR", error="inline calls are not available here"
    )


def _parse_call(frame: _wire.Frame, expected_id: int) -> InlineCall | None:
    """The worker's InlineCall, or None when it is not one well-formed call
    numbered `expected_id` (keys are the control plane's to choose: cleared)."""
    try:
        call = InlineCall.FromString(frame.payload)
    except DecodeError:
        return None
    kind = call.WhichOneof("call")
    if kind is None or call.call_id != expected_id or frame.req_id != expected_id:
        return None
    getattr(call, kind).key = ""
    return call


def _kill_worker(worker: _WarmWorker) -> None:
    """Hang up on a worker that broke the channel's rules: blocked on its
    socket it sees EOF and exits; the zygote's wall clock is the backstop."""
    with contextlib.suppress(OSError):
        worker.sock.shutdown(socket.SHUT_RDWR)


def _violation(worker: _WarmWorker, cause: str, **details: Any) -> Refusal:
    _kill_worker(worker)
    return (
        "LAMBDA_ERROR",
        f"sandbox worker broke the inline-call channel ({cause}) and was stopped",
        {"cause": f"inline_channel_{cause}", "layer": "pool", **details},
    )


def _account(request: StepRequest, result: StepResult, seconds: float) -> None:
    """Metrics for every step; a log line for the pool's own failures."""
    outcome = "success" if result.success else result.error.code or "error"
    SANDBOX_STEPS.labels(isolation="pool", outcome=outcome).inc()
    SANDBOX_STEP_SECONDS.labels(isolation="pool").observe(seconds)
    if not result.success and result.error.code in ("LAMBDA_ERROR", "STEP_TIMEOUT"):
        _log().warning(
            "sandbox_step_failed",
            tenant_id=request.tenant_id,
            session_id=request.session_id,
            execution_id=request.execution_id,
            turn_index=request.turn_index,
            code_length=len(request.code),
            error_code=result.error.code,
            error_message=result.error.message,
        )


class _Mailbox:
    """Where ReplyInline leaves the reply a RunStep stream waits on: exactly
    one reply, to the call due, per call; None wakes the stream (its RPC ended)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due = 0  # the call_id waited on; 0: none
        self._replies: queue.SimpleQueue[InlineReply | None] = queue.SimpleQueue()

    def expect(self, call_id: int) -> None:
        with self._lock:
            self._due = call_id

    def deliver(self, reply: InlineReply) -> bool:
        with self._lock:
            if not self._due or reply.call_id != self._due:
                return False
            self._due = 0
        self._replies.put(reply)
        return True

    def wake(self) -> None:
        self._replies.put(None)

    def take(self, timeout: float) -> InlineReply | None:
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            return None


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, front: PoolFront):
        self.front = front
        self._mailboxes: dict[bytes, _Mailbox] = {}
        # A reply never takes longer than the longest wait the pool allows.
        self._reply_timeout = front.policy.max_step_wait_seconds + _FRONT_SLACK_SECONDS

    def RunStep(self, request: StepRequest, context: grpc.ServicerContext) -> Iterator[StepOutput]:
        """The step's inline calls go out on this stream, each with the step's
        token, and its reply comes back through ReplyInline; the result last.
        A caller that goes away (or never replies) ends the step and its worker."""
        started = time.perf_counter()
        token = secrets.token_bytes(16)
        mailbox = self._mailboxes[token] = _Mailbox()
        context.add_callback(mailbox.wake)  # cancelled, past its deadline, or done
        steps = self.front.steps(request)
        try:
            message = next(steps)
            while isinstance(message, InlineCall):
                mailbox.expect(message.call_id)
                yield StepOutput(call=message, step_token=token)
                reply = mailbox.take(self._reply_timeout)
                if reply is None or not context.is_active():
                    return  # the caller went away: closing `steps` kills the worker
                message = steps.send(reply)
        finally:
            del self._mailboxes[token]
            mailbox.expect(0)  # a late reply finds nothing due
            steps.close()
        assert isinstance(message, StepResult)
        _account(request, message, time.perf_counter() - started)
        yield StepOutput(result=message)

    def ReplyInline(self, request: ReplyInlineRequest, context: grpc.ServicerContext) -> ReplyInlineResponse:
        mailbox = self._mailboxes.get(request.step_token)
        if mailbox is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no step waits under this token (it ended)")
        elif not mailbox.deliver(request.reply):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the step does not wait on this call_id")
        return ReplyInlineResponse()

    def GetPoolStatus(
        self, request: sandbox_pb2.PoolStatusRequest, context: grpc.ServicerContext
    ) -> PoolStatus:
        try:
            return self.front.status()
        except PoolUnavailable as exc:
            err = RlmError("LAMBDA_ERROR", str(exc))
            context.abort(err.grpc_status, err.message)
            raise  # unreachable: abort raises


def serve(
    socket_path: str,
    policy: SandboxPolicy,
    *,
    strict: bool = False,
    allow_unsafe: bool = False,
    document_root: str | None = None,
    ready: threading.Event | None = None,
) -> int:
    """Run the pool on `socket_path` until SIGTERM/SIGINT or the zygote exits."""
    front = PoolFront(policy, strict=strict, allow_unsafe=allow_unsafe, document_root=document_root)
    server, health_servicer = _grpc_server(front)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    os.chmod(socket_path, 0o660)
    missing = _announce(front, health_servicer)
    _log().info(
        "sandbox_pool_started",
        socket=socket_path,
        strict=strict,
        missing_layers=missing,
        allow_unsafe=allow_unsafe,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    if ready is not None:
        ready.set()
    _watch(front, health_servicer, stopping)
    health_servicer.enter_graceful_shutdown()
    server.stop(2).wait()
    front.stop()
    with contextlib.suppress(OSError):
        os.unlink(socket_path)
    return 0 if front.process.returncode in (0, None) or stopping.is_set() else 1


class _PoolTracing(grpc.ServerInterceptor):
    """A span per unary call but ReplyInline (a part of its step's stream,
    which is not traced either)."""

    def __init__(self) -> None:
        from rlm_rs.tracing import ServerTracingInterceptor

        self._traced = ServerTracingInterceptor()

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        if str(details.method).endswith("/ReplyInline"):
            return continuation(details)
        return self._traced.intercept_service(continuation, details)


def _grpc_server(front: PoolFront) -> tuple[grpc.Server, health.HealthServicer]:
    """SandboxService, health and reflection on a thread pool sized for fairness.

    Waiting steps hold a thread each: enough threads that the fair queues,
    not gRPC's own first-come queue in front of the thread pool, decide who
    runs next (eight tenants with full queues); beyond that gRPC refuses at
    once (RESOURCE_EXHAUSTED) instead of queueing unfairly."""
    share = front.scheduler.share
    threads = share.capacity + 8 * share.max_queued_steps_per_tenant + 4
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        interceptors=[_PoolTracing()],
        maximum_concurrent_rpcs=threads,
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(SandboxServicer(front), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            sandbox_pb2.DESCRIPTOR.services_by_name["SandboxService"].full_name,
            reflection.SERVICE_NAME,
            health.SERVICE_NAME,
        ),
        server,
    )
    return server, health_servicer


def _announce(front: PoolFront, health_servicer: health.HealthServicer) -> list[str]:
    """Health SERVING; the hardened name only when every isolation layer is
    active on this host (degradation is visible in health too). Returns the
    missing layers."""
    missing = [layer["name"] for layer in front.hello["layers"] if not layer["active"]]
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, serving)
    health_servicer.set(
        HARDENED_HEALTH_NAME,
        serving if not missing else health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    return missing


def _watch(front: PoolFront, health_servicer: health.HealthServicer, stopping: threading.Event) -> None:
    """Until asked to stop; a zygote that exits turns health NOT_SERVING and ends the pool."""
    while not stopping.wait(0.5):
        if not front.alive:
            for name in ("", SERVICE_NAME, HARDENED_HEALTH_NAME):
                health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            _log().error("sandbox_zygote_exited", exit_code=front.process.poll())
            break


def _str_or_none(path: object) -> str | None:
    return str(path) if path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm_rs.sandbox.pool.server")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--policy-b64", default="", help="the complete SandboxPolicy (tests)")
    parser.add_argument("--document-root", default=None, help="only open documents below this")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, component="sandbox-pool")
    serve_metrics(settings.metrics_port)
    if args.policy_b64:
        policy = policy_with_defaults(SandboxPolicy.FromString(base64.b64decode(args.policy_b64)))
    else:
        policy = pool_policy(settings)
    try:
        return serve(
            args.socket,
            policy,
            strict=args.strict or settings.sandbox_strict,
            allow_unsafe=os.environ.get(UNSAFE_ENV) == "1",
            document_root=args.document_root or _str_or_none(settings.sandbox_document_root),
        )
    except PoolUnavailable as exc:
        _log().error("sandbox_pool_refused", reason=str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
