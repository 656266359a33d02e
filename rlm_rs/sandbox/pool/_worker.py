"""One worker's life: harden, say READY, take exactly one step, answer, exit.

Runs in a child forked by the zygote. The layers are applied in the issue's
order (namespaces, file-system view, rlimits + cgroups, privileges, seccomp
last) before any request bytes are read, so step code only ever meets a fully
hardened process. It leaves with os._exit (interpreter shutdown would make
syscalls the filter kills). It must never import gRPC or open a path after
the file-system view is gone.
"""

from __future__ import annotations

import _signal
import contextlib
import json
import os
import random
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from rlm_rs.sandbox.pool import (
    _cgroups,
    _linux,
    _namespaces,
    _privileges,
    _rlimits,
    _wire,
)
from rlm_rs.sandbox.v1.sandbox_pb2 import InlineCall, InlineReply, SandboxPolicy, StepRequest, StepResult
from rlm_rs.v1.common_pb2 import ErrorDetail

WORKER_FD = 3
# Workers are hardened and wait at WORKER_NICENESS; a step the front marks as
# one more of a tenant that already has a step running lowers itself to
# EXTRA_STEP_NICENESS (raising a nice value needs no privilege), so another
# tenant's only step wins the CPU from it.
WORKER_NICENESS = 10
EXTRA_STEP_NICENESS = 19
# wall-clock seconds, total document bytes, niceness for the step
RUN_PREFIX = struct.Struct("!dQB")
_RESET_SIGNALS = tuple(int(s) for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE))


@dataclass
class WorkerContext:
    """What the zygote prepared once and every worker inherits."""

    policy: SandboxPolicy
    namespaces: _namespaces.ZygoteNamespaces
    seccomp_bpf: bytes | None
    devnull_fd: int
    cap_last: int
    base_vsz_bytes: int
    cgroup_errors: dict[str, str]
    allow_unsafe: bool
    run_step: Callable[..., StepResult]


def main(sock_fd: int, ctx: WorkerContext, probe: bool) -> NoReturn:
    code = 0
    try:
        report, sock = harden(sock_fd, ctx, probe)
        if probe:  # the probe proves a step runs under every layer, then reports
            _prefault(ctx)
            _wire.send_frame(sock, _wire.READY, os.getpid(), json.dumps(report).encode())
            os._exit(0)
        # READY as soon as every layer is on; the warm-up runs while the worker
        # waits, unless its step is already there (a saturated pool: the warm-up
        # would only add its CPU to the step's).
        _wire.send_frame(sock, _wire.READY, os.getpid(), json.dumps(report).encode())
        if not step_waiting(sock):
            _prefault(ctx)
        reader = _wire.FrameReader(sock)
        frame = reader.read_frame()
        if frame is None or frame.kind != _wire.RUN:
            os._exit(0)
        _, document_bytes, niceness = RUN_PREFIX.unpack_from(frame.payload)
        if niceness > WORKER_NICENESS:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, min(niceness, EXTRA_STEP_NICENESS))
        request = StepRequest.FromString(frame.payload[RUN_PREFIX.size :])
        if not report.get("rlimits"):
            _rlimits.size_for_documents(ctx.policy, ctx.base_vsz_bytes, document_bytes)
            _rlimits.fit_open_files(ctx.policy, frame.fds)
        result = _run(ctx, request, frame.fds, _channel(sock, reader))
        _wire.send_frame(sock, _wire.RESULT, frame.req_id, result.SerializeToString())
    except BaseException:
        code = 70
    os._exit(code)


# A fixed, trusted snippet run once per worker after hardening and READY,
# while it waits for its step (main() skips it when the step is already
# there; the probe runs it before reporting). Forked pages are shared copy-on-write and every first write (a
# refcount, an allocator arena) costs a page fault; running a step once takes
# those faults off the step's critical path (measured: ~1.5 ms -> ~0.3 ms).
# The smallest step that goes through the whole pipeline (reply parser, AST
# policy, RestrictedPython, guards, print, state, result) does it: a longer
# snippet (a list comprehension, nested state) cost ~1.3 ms more CPU per
# worker and made a realistic step no faster (docs/sandbox-pool.md, "Worker
# CPU per step").
_PREFAULT_REQUEST = StepRequest(code="n = 1\nprint(n)\nstate['k'] = n", state_json="{}")


def step_waiting(sock: socket.socket) -> bool:
    """True when the front has already sent something (its RUN, or hung up).
    A peek through recvmsg (the worker's allowlist has no recvfrom): nothing
    is consumed, and fds attached to the frame stay with it."""
    try:
        sock.recvmsg(1, 0, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # broken: the real read will find out
    return True


def _prefault(ctx: WorkerContext) -> None:
    with contextlib.suppress(BaseException):
        ctx.run_step(_PREFAULT_REQUEST, [], allow_unsafe=False, watchdog=False).SerializeToString()


def _channel(sock: socket.socket, reader: _wire.FrameReader) -> Callable[[InlineCall, float], InlineReply]:
    """The step's inline calls over the worker's one socket: a CALL frame out,
    then block on its CALL_REPLY (the front and the zygote bound the wait; a
    worker cannot poll). A front that hung up or answered anything else ends
    the worker at once: nobody is left to take its answer."""

    def call(message: InlineCall, timeout: float) -> InlineReply:
        _wire.send_frame(sock, _wire.CALL, message.call_id, message.SerializeToString())
        frame = reader.read_frame()
        if frame is None or frame.kind != _wire.CALL_REPLY or frame.fds:
            os._exit(71)
        return InlineReply.FromString(frame.payload)

    return call


def _run(
    ctx: WorkerContext,
    request: StepRequest,
    fds: list[int],
    channel: Callable[[InlineCall, float], InlineReply] | None = None,
) -> StepResult:
    started = time.perf_counter()
    try:
        return ctx.run_step(request, fds, allow_unsafe=ctx.allow_unsafe, watchdog=False, inline=channel)
    except BaseException as exc:
        return StepResult(
            success=False,
            state_json=request.state_json,
            turn_index=request.turn_index,
            duration_ms=(time.perf_counter() - started) * 1000,
            error=ErrorDetail(
                code="INTERNAL_ERROR",
                message=f"step executor failed: {type(exc).__name__}",
                details_json="{}",
            ),
        )


def harden(sock_fd: int, ctx: WorkerContext, probe: bool) -> tuple[dict[str, str], socket.socket]:
    """Apply every layer; returns (layer -> "" if active else why not, our socket)."""
    report: dict[str, str] = {}
    # Workers yield the CPU to the front and the control plane: a CPU-bound
    # step or a hardening replacement must not slow down answering others.
    os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICENESS)
    # The C functions, not signal.signal: its wrapper turns the old handler
    # into an enum member by raising and catching ValueError (the zygote's
    # handlers are functions), ~90 copy-on-write faults per worker.
    for signum in _RESET_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.set_wakeup_fd(-1)
    # 1. namespaces (network and PID were arranged by the zygote).
    report.update(_namespaces.apply_worker(ctx.namespaces))
    # The pool's cgroup is inherited from the zygote; /proc disappears below.
    for name in ("cgroup_memory", "cgroup_pids"):
        report[name] = ctx.cgroup_errors.get(name, "")
    if not report["cgroup_memory"]:
        report["cgroup_memory"] = _cgroups.make_worker_oom_target()
    if probe and not report["netns"]:
        report["netns"] = _namespaces.probe_network()
    # 2. file-system view: an empty read-only root; documents come as fds.
    report.update(_namespaces.enter_empty_root(ctx.namespaces))
    # Descriptors: stdio -> /dev/null, our socket -> 3, everything else closed.
    for target in (0, 1, 2):
        os.dup2(ctx.devnull_fd, target)
    os.dup2(sock_fd, WORKER_FD)
    os.closerange(WORKER_FD + 1, 1 << 16)
    sock = socket.socket(fileno=WORKER_FD)  # probes the fd with getsockopt: before seccomp
    # 3. rlimits.
    try:
        _rlimits.apply(ctx.policy, ctx.base_vsz_bytes)
        report["rlimits"] = ""
    except (OSError, ValueError) as exc:
        report["rlimits"] = str(exc)
    # 4. no_new_privs, capabilities, uid.
    report.update(_privileges.apply(ctx.policy, ctx.cap_last))
    with contextlib.suppress(OSError):
        _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.environ.clear()
    # An int seed: a bytes seed goes through SHA-512 in Random.seed first.
    random.seed(int.from_bytes(os.urandom(32), "big"))
    # 5. seccomp, last.
    if ctx.seccomp_bpf is None:
        report["seccomp"] = "not built"
    else:
        try:
            _linux.load_seccomp_bpf(ctx.seccomp_bpf)
            report["seccomp"] = ""
        except OSError as exc:
            report["seccomp"] = str(exc)
    return report, sock
