"""Run one step in a forked child and SIGKILL it at its wall clock.

For callers without the pool that still need max_step_seconds to hold for C
code that ignores ticks, signals and threads (a comparison of two deep
shared-reference structures): the AWS Lambda handler. The child runs the
executor (no watchdog thread), writes the StepResult length-prefixed to a
pipe and leaves with os._exit; the parent reads by length, and kills the
child at max_step_seconds + a grace period (STEP_TIMEOUT). Only for
processes where fork is safe: single-threaded, no gRPC (never the control
plane). It must never return anything but a StepResult.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import time
from collections.abc import Sequence

from rlm_rs.sandbox.policy import with_defaults
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest, StepResult
from rlm_rs.v1.common_pb2 import ErrorDetail

GRACE_SECONDS = 2.0
_LENGTH = struct.Struct("!Q")
_MAX_RESULT_BYTES = 64 * 1024 * 1024


def run_step_killable(
    request: StepRequest, fds: Sequence[int] | None = None, *, grace_seconds: float = GRACE_SECONDS
) -> StepResult:
    from rlm_rs.sandbox.executor import run_step  # imported before the fork, never in the child

    limits = with_defaults(request.limits if request.HasField("limits") else None)
    seconds = limits.max_step_seconds
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, answer, leave without any interpreter shutdown
        code = 0
        try:
            os.close(read_end)
            answer = run_step(request, fds, watchdog=False).SerializeToString()
            view = memoryview(_LENGTH.pack(len(answer)) + answer)
            while view:
                view = view[os.write(write_end, view) :]
        except BaseException:
            code = 70
        os._exit(code)
    os.close(write_end)
    started = time.monotonic()
    data: bytes | None = None
    try:
        data = _read_answer(read_end, started + seconds + grace_seconds)
    finally:
        os.close(read_end)
    if data is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if data is None:
        return _failed(
            request,
            "STEP_TIMEOUT",
            f"step exceeded max_step_seconds ({seconds:g} s) and was killed",
            started,
            {"max_step_seconds": seconds},
        )
    if not data:
        return _failed(request, "LAMBDA_ERROR", f"step process died: status {status}", started)
    try:
        return StepResult.FromString(data)
    except Exception:
        return _failed(request, "LAMBDA_ERROR", "step process answered garbage", started)


def _read_answer(fd: int, deadline: float) -> bytes | None:
    """The child's StepResult bytes; b"" if it died without one; None at the deadline."""
    buffer = bytearray()
    wanted: int | None = None
    while wanted is None or len(buffer) < wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b""
        buffer += chunk
        if wanted is None and len(buffer) >= _LENGTH.size:
            wanted = _LENGTH.size + _LENGTH.unpack_from(buffer)[0]
            if wanted > _MAX_RESULT_BYTES:
                return b""
    return bytes(buffer[_LENGTH.size : wanted])


def _failed(
    request: StepRequest, code: str, message: str, started: float, details: dict[str, float] | None = None
) -> StepResult:
    return StepResult(
        success=False,
        state_json=request.state_json or "{}",
        turn_index=request.turn_index,
        duration_ms=(time.monotonic() - started) * 1000,
        error=ErrorDetail(code=code, message=message, details_json=json.dumps(details or {})),
    )
