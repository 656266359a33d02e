"""The zygote: a single-threaded process that forks hardened, one-step workers.

Started by the pool front as `python -I -m rlm_rs.sandbox.pool.zygote`, it
imports the step executor and calls warm_up() first, then prepares what every
worker inherits (empty network namespace, private mount namespace with an empty
root, cgroup parents, the compiled seccomp program) and runs one selector loop.
A worker that reports READY is handed to the front (its socket travels by
SCM_RIGHTS), so steps go front <-> worker without a hop through here; the
zygote starts each step's wall clock (DISPATCH), kills a worker past it
(STEP_TIMEOUT), reaps, and explains every death (FATE: LAMBDA_ERROR with the
cause). It must never import gRPC, start a thread, or run a step itself.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import gc
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rlm_rs.sandbox.pool import (
    _cgroups,
    _linux,
    _namespaces,
    _privileges,
    _rlimits,
    _seccomp,
    _wire,
    _worker,
)
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

# Layers in the order they are applied, with what each one stops.
LAYERS: tuple[tuple[str, str], ...] = (
    ("netns", "new empty network namespace: no interface, no route, no loopback up"),
    ("mountns", "empty mount namespace (made once, joined by setns): no host mount"),
    ("pidns", "own PID namespace (worker is PID 1): no other process is visible or signalable"),
    ("ipcns", "pool-wide fresh IPC namespace: no SysV/POSIX IPC object of the host"),
    ("utsns", "pool-wide fresh UTS namespace: hostname 'sandbox'"),
    ("userns", "user namespace (only needed when the pool lacks the capabilities)"),
    ("fs_view", "pivot_root into an empty read-only tmpfs; documents only as read-only fds"),
    ("rlimits", "address space, CPU seconds, open files, processes, file size 0, core 0"),
    ("cgroup_memory", "pool cgroup memory limit; workers are the OOM killer's first pick"),
    ("cgroup_pids", "pool cgroup pids limit"),
    ("no_new_privs", "PR_SET_NO_NEW_PRIVS"),
    ("capabilities", "bounding, ambient, effective and permitted sets empty"),
    ("unprivileged_uid", "runs as the policy's unprivileged uid/gid, no groups"),
    ("seccomp", "seccomp-BPF allowlist, installed last; other syscalls kill the process"),
    ("wall_clock_kill", "the zygote SIGKILLs a worker past max_step_seconds (STEP_TIMEOUT)"),
    ("fresh_process", "one process per step; nothing survives a step but returned JSON"),
)
# A worker whose socket the front lost gets this long to exit by itself.
_DEATH_GRACE_SECONDS = 0.05
_MAX_FATES = 4096
DISPATCH_PAYLOAD = struct.Struct("!d")  # wall-clock seconds
PAUSE_PAYLOAD = struct.Struct("!d")  # seconds the worker may wait
FATE_PAYLOAD = struct.Struct("!Q")  # pid


@dataclass
class Worker:
    pid: int
    sock: socket.socket | None
    reader: _wire.FrameReader | None
    probe: bool = False
    state: str = "starting"  # starting | handed (warm, at the front) | busy
    deadline: float = 0.0
    dispatched_at: float = 0.0
    forked_at: float = 0.0
    timed_out: bool = False
    kill_at: float = 0.0
    # waiting on an inline call: the compute time it had left (None: computing)
    compute_left: float | None = None
    step_seconds: float = 0.0
    wait_seconds: float = 0.0
    fate_waiters: list[int] = field(default_factory=list)


class Zygote:
    """The zygote's state and loop. Workers' sockets go to the front once READY:
    steps then travel front <-> worker directly, and the zygote only starts the
    wall clock (DISPATCH), kills, reaps and explains deaths (FATE)."""

    def __init__(
        self,
        control: socket.socket,
        policy: SandboxPolicy,
        *,
        strict: bool,
        allow_unsafe: bool,
        run_step: Any,
    ):
        self.control = control
        self.policy = policy
        self.strict = strict
        self.namespaces = _namespaces.prepare_zygote(policy)
        cap_last = _privileges.last_capability()
        self.bounding_set_error = _privileges.drop_bounding_set(cap_last)
        self.cgroups = _cgroups.PoolCgroup(policy)
        self.seccomp_error = ""
        bpf: bytes | None = None
        if policy.seccomp_enabled:
            try:
                bpf = _seccomp.build(policy)
            except Exception as exc:
                self.seccomp_error = f"cannot build filter: {exc}"
        else:
            self.seccomp_error = "disabled by policy"
        self.context = _worker.WorkerContext(
            policy=policy,
            namespaces=self.namespaces,
            seccomp_bpf=bpf,
            devnull_fd=os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC),
            cap_last=cap_last,
            base_vsz_bytes=_vsz_bytes(),
            cgroup_errors=dict(self.cgroups.errors),
            allow_unsafe=allow_unsafe,
            run_step=run_step,
        )
        self.workers: dict[int, Worker] = {}
        self.fates: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self.layers: list[dict[str, Any]] = []
        self.steps_total = 0
        self.workers_failed_total = 0
        self.oom_kills_seen = self.cgroups.oom_kills()
        self.consecutive_failures = 0
        self.spawn_after = 0.0
        self.timing = {
            "fork_ms_total": 0.0,
            "ready_ms_total": 0.0,
            "workers_spawned": 0,
            "workers_ready": 0,
        }
        self.running = True
        self.selector = selectors.DefaultSelector()
        self.control_reader = _wire.FrameReader(control)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    # ---- start-up --------------------------------------------------------
    def probe(self) -> list[dict[str, Any]]:
        """Fork one worker that hardens, reports and exits: the real layer check."""
        worker = self._spawn(probe=True)
        assert worker.sock is not None and worker.reader is not None
        worker.sock.settimeout(10)
        try:
            frame = worker.reader.read_frame()
        except (OSError, _wire.WireError):
            frame = None
        worker.sock.close()
        self.workers.pop(worker.pid, None)
        _, status = os.waitpid(worker.pid, 0)
        report = json.loads(frame.payload) if frame and frame.kind == _wire.READY else {}
        if not report:
            report = {name: f"probe worker died ({_describe(status)})" for name, _ in LAYERS}
        if self.seccomp_error:
            report["seccomp"] = self.seccomp_error
        if self.bounding_set_error:
            report["capabilities"] = self.bounding_set_error
        report.setdefault("wall_clock_kill", "")
        report.setdefault("fresh_process", "")
        self.layers = [
            {
                "name": name,
                "active": not report.get(name, "not reported"),
                "detail": report.get(name, "not reported") or what,
            }
            for name, what in LAYERS
        ]
        return self.layers

    def missing_layers(self) -> list[str]:
        return [layer["name"] for layer in self.layers if not layer["active"]]

    def status(self) -> dict[str, Any]:
        states = collections.Counter(w.state for w in self.workers.values())
        return {
            "layers": self.layers,
            "warm_workers": states["handed"] + states["starting"],
            "busy_workers": states["busy"],
            "steps_total": self.steps_total,
            "workers_failed_total": self.workers_failed_total,
            "strict": self.strict,
            "timing": {**self.timing, **_cpu_ms()},
            "seccomp": _seccomp.effective_rules(self.policy),
            "rlimits": _rlimits.limits_for(self.policy, self.context.base_vsz_bytes),
            "leftovers": {
                "cgroups": [str(path) for path in self.cgroups.dirs],
                "root": self.namespaces.empty_root,
            },
            "zygote": {
                "pid": os.getpid(),
                "threads": threading.active_count(),
                "grpc_loaded": "grpc._cython.cygrpc" in sys.modules,
                "vsz_mib": round(self.context.base_vsz_bytes / 2**20, 1),
            },
        }

    # ---- the loop --------------------------------------------------------
    def serve(self) -> None:
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self._replenish()
        while self.running:
            events = self.selector.select(self._next_timeout())
            # Control frames first: a DISPATCH must be seen before its worker's exit.
            events.sort(key=lambda event: event[0].data != "control")
            for key, _ in events:
                if key.data == "control":
                    self._on_control()
                elif key.data == "wake":
                    self._on_wake()
                else:
                    self._on_worker(key.data)
            self._expire()
            self._replenish()
        self.shutdown()

    def _on_term(self, *_: Any) -> None:
        self.running = False

    def _next_timeout(self) -> float | None:
        deadlines = [w.deadline for w in self.workers.values() if w.state == "busy"]
        deadlines += [w.kill_at for w in self.workers.values() if w.kill_at]
        if self.spawn_after:
            deadlines.append(self.spawn_after)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_control(self) -> None:
        try:
            frames = self.control_reader.feed()
        except (OSError, _wire.WireError):
            frames = []
            self.control_reader.eof = True
        for frame in frames:
            _close_all(frame.fds)  # the front never needs to send the zygote fds
            if frame.kind == _wire.DISPATCH:
                self._on_dispatch(frame.req_id, DISPATCH_PAYLOAD.unpack(frame.payload)[0])
            elif frame.kind == _wire.PAUSE:
                self._on_pause(frame.req_id, PAUSE_PAYLOAD.unpack(frame.payload)[0])
            elif frame.kind == _wire.RESUME:
                self._on_resume(frame.req_id)
            elif frame.kind == _wire.FATE:
                self._on_fate_query(frame.req_id, FATE_PAYLOAD.unpack(frame.payload)[0])
            elif frame.kind == _wire.STATUS:
                payload = json.dumps(self.status()).encode()
                self._send(_wire.STATUS_REPLY, frame.req_id, payload)
            elif frame.kind == _wire.SHUTDOWN:
                self.running = False
        if self.control_reader.eof:
            self.running = False

    def _on_dispatch(self, pid: int, seconds: float) -> None:
        worker = self.workers.get(pid)
        if worker is None or worker.state != "handed":
            return  # already dead: the front will ask for its fate
        now = time.monotonic()
        worker.state, worker.dispatched_at, worker.deadline = "busy", now, now + seconds
        worker.step_seconds = seconds

    def _on_pause(self, pid: int, wait_seconds: float) -> None:
        """The worker waits on an inline call: its compute clock stops and the
        wait gets a deadline of its own (the front's ceiling is the first wall;
        this SIGKILL the backstop)."""
        worker = self.workers.get(pid)
        if worker is None or worker.state != "busy" or worker.compute_left is not None:
            return
        now = time.monotonic()
        worker.compute_left = max(0.0, worker.deadline - now)
        worker.wait_seconds = wait_seconds
        worker.deadline = now + wait_seconds

    def _on_resume(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is None or worker.compute_left is None:
            return
        worker.deadline = time.monotonic() + worker.compute_left
        worker.compute_left = None

    def _on_fate_query(self, req_id: int, pid: int) -> None:
        fate = self.fates.pop(pid, None)
        if fate is not None:
            self._send(_wire.FATE_REPLY, req_id, json.dumps(fate).encode())
            return
        worker = self.workers.get(pid)
        if worker is None:
            fate = _fate("LAMBDA_ERROR", "sandbox worker unknown to the pool", {"pid": pid})
            self._send(_wire.FATE_REPLY, req_id, json.dumps(fate).encode())
            return
        # The front lost the worker's socket but the process lives on: give it
        # a moment to die by itself (its exit status is the explanation).
        worker.fate_waiters.append(req_id)
        worker.kill_at = worker.kill_at or time.monotonic() + _DEATH_GRACE_SECONDS

    def _on_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._reaped(worker, status)

    def _reaped(self, worker: Worker, status: int) -> None:
        if worker.sock is not None:
            self._forget_socket(worker)
        oom = False
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            # Read the cgroup's OOM counter only for a SIGKILL we did not send.
            kills = self.cgroups.oom_kills()
            oom = kills > self.oom_kills_seen and not worker.timed_out
            self.oom_kills_seen = kills
        answered = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if worker.state == "busy" or (worker.state == "handed" and answered):
            # "handed" + exit 0: the step finished before its DISPATCH arrived.
            self.steps_total += 1
            fate = self._busy_fate(worker, status, oom)
            if fate["code"] != "OK":
                self.workers_failed_total += 1
        else:
            self.workers_failed_total += 1
            if worker.state == "starting":
                # Only workers that never got hardened slow the refill down; a
                # warm one killed while idle (the OOM killer's first pick) is
                # replaced at once.
                self.consecutive_failures += 1
                if self.consecutive_failures >= 5:
                    self.spawn_after = time.monotonic() + 1.0
            fate = _fate(
                "LAMBDA_ERROR",
                f"sandbox worker died before taking a step: {_describe(status, oom=oom)}",
                {"exit": _status_dict(status), "oom": oom},
            )
        for req_id in worker.fate_waiters:
            self._send(_wire.FATE_REPLY, req_id, json.dumps(fate).encode())
        if not worker.fate_waiters:
            self.fates[worker.pid] = fate
            while len(self.fates) > _MAX_FATES:
                self.fates.popitem(last=False)

    def _busy_fate(self, worker: Worker, status: int, oom: bool) -> dict[str, Any]:
        seconds = round(worker.step_seconds, 3)
        if worker.timed_out and worker.compute_left is not None:
            return _fate(
                "STEP_TIMEOUT",
                f"step waited on an inline call past max_step_wait_seconds ({worker.wait_seconds:g} s)",
                {"max_step_wait_seconds": worker.wait_seconds},
            )
        if worker.timed_out:
            return _fate(
                "STEP_TIMEOUT",
                f"step exceeded max_step_seconds ({seconds} s) and was killed",
                {"max_step_seconds": seconds},
            )
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            return _fate("STEP_TIMEOUT", "step used up its CPU seconds", {"limit": "RLIMIT_CPU"})
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not worker.fate_waiters:
            return _fate("OK", "", {})
        cause = _describe(status, oom=oom)
        return _fate(
            "LAMBDA_ERROR",
            f"sandbox worker died before answering: {cause}",
            {"cause": cause, "exit": _status_dict(status), "oom": oom},
        )

    def _on_worker(self, worker: Worker) -> None:
        assert worker.reader is not None
        try:
            frames = worker.reader.feed()
        except (OSError, _wire.WireError):
            frames, worker.reader.eof = [], True
        for frame in frames:
            _close_all(frame.fds)  # a worker has no business sending fds
            if frame.kind == _wire.READY and worker.state == "starting":
                self._hand_over(worker)
                return
            self._kill(worker)
            return
        if worker.reader.eof:
            self._kill(worker)

    def _hand_over(self, worker: Worker) -> None:
        """A hardened worker: give its socket to the front, keep only the pid."""
        assert worker.sock is not None
        self.timing["workers_ready"] += 1
        self.timing["ready_ms_total"] += (time.perf_counter() - worker.forked_at) * 1000
        self.consecutive_failures = 0
        sock = worker.sock
        try:
            self._send(_wire.WORKER, worker.pid, b"", [sock.fileno()])
        finally:
            self._forget_socket(worker)
        worker.state = "handed"

    def _kill(self, worker: Worker) -> None:
        if worker.sock is not None:
            self._forget_socket(worker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _expire(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.state == "busy" and worker.deadline <= now and not worker.timed_out:
                worker.timed_out = True
                self._kill(worker)
            elif worker.kill_at and worker.kill_at <= now:
                worker.kill_at = 0.0
                self._kill(worker)

    def _replenish(self) -> None:
        if not self.running or time.monotonic() < self.spawn_after:
            return
        self.spawn_after = 0.0
        counts = collections.Counter(w.state for w in self.workers.values())
        ready = counts["handed"] + counts["starting"]
        target = max(1, self.policy.warm_workers)
        if counts["busy"] and ready >= min(counts["busy"], target):
            # A fork and the child's hardening compete with running steps for
            # the CPU: while a warm worker is left, refill after the step.
            return
        room = max(1, self.policy.pool_size) + target - len(self.workers)
        for _ in range(max(0, min(target - ready, room))):
            self._spawn()

    # ---- workers -----------------------------------------------------------
    def _spawn(self, probe: bool = False) -> Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _namespaces.before_fork(self.namespaces)
        started = time.perf_counter()
        pid = _linux.fork_bare()
        if pid == 0:  # the worker; never returns
            _worker.main(child.fileno(), self.context, probe)
        self.timing["fork_ms_total"] += (time.perf_counter() - started) * 1000
        self.timing["workers_spawned"] += 1
        child.close()
        worker = Worker(pid, parent, _wire.FrameReader(parent), probe, forked_at=started)
        self.workers[pid] = worker
        if not probe:
            self.selector.register(parent, selectors.EVENT_READ, worker)
        return worker

    def _forget_socket(self, worker: Worker) -> None:
        assert worker.sock is not None and worker.reader is not None
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.sock)
        worker.reader.close_fds()
        worker.sock.close()
        worker.sock = worker.reader = None

    def _send(self, kind: int, req_id: int, payload: bytes, fds: list[int] | None = None) -> None:
        try:
            _wire.send_frame(self.control, kind, req_id, payload, fds or [])
        except OSError:
            self.running = False

    def shutdown(self) -> None:
        for worker in list(self.workers.values()):
            self._kill(worker)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
        self.workers.clear()
        self.cgroups.cleanup()
        _namespaces.cleanup_zygote(self.namespaces)


def _fate(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details}


def _cpu_ms() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "zygote_cpu_ms": round((own.ru_utime + own.ru_stime) * 1000, 1),
        "workers_cpu_ms": round((children.ru_utime + children.ru_stime) * 1000, 1),
    }


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _vsz_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _status_dict(status: int) -> dict[str, Any]:
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return {"exit_code": os.waitstatus_to_exitcode(status)}


def _describe(status: int | None, oom: bool = False) -> str:
    if status is None:
        return "unknown"
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGSYS:
            return "killed by seccomp (forbidden system call)"
        if signum == signal.SIGKILL and oom:
            return "killed by the cgroup OOM killer (memory limit)"
        if signum == signal.SIGSEGV:
            return "crashed (SIGSEGV; e.g. address-space limit)"
        return f"killed by {signal.Signals(signum).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)} without answering"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm_rs.sandbox.pool.zygote")
    parser.add_argument("--fd", type=int, required=True, help="control socket inherited from the front")
    parser.add_argument("--policy", required=True, help="base64 SandboxPolicy (the pool's own)")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--allow-unsafe", action="store_true")
    parser.add_argument("--probe-only", action="store_true", help="report layers and exit")
    parser.add_argument("--step-module", default="rlm_rs.sandbox.executor")
    args = parser.parse_args(argv)
    # Everything a step needs is imported here, before any fork; never gRPC
    # (rlm_rs/errors.py keeps status names as strings for this reason).
    executor = importlib.import_module(args.step_module)
    executor.warm_up()
    policy = SandboxPolicy.FromString(base64.b64decode(args.policy))
    control = socket.socket(fileno=args.fd)
    zygote = Zygote(
        control,
        policy,
        strict=args.strict,
        allow_unsafe=args.allow_unsafe,
        run_step=executor.run_step,
    )
    # Workers inherit an empty environment (each still clears it in harden(),
    # now a no-op): clearing it once here keeps the unsetenv calls and the
    # pages they touch off every worker.
    os.environ.clear()
    gc.collect()
    gc.freeze()  # keep the imported heap shared copy-on-write with workers
    zygote.probe()
    missing = zygote.missing_layers()
    if args.probe_only or (args.strict and missing):
        kind = _wire.FATAL if (args.strict and missing and not args.probe_only) else _wire.HELLO
        payload = json.dumps({**zygote.status(), "missing": missing}).encode()
        _wire.send_frame(control, kind, 0, payload)
        zygote.shutdown()
        return 3 if kind == _wire.FATAL else 0
    _wire.send_frame(control, _wire.HELLO, 0, json.dumps(zygote.status()).encode())
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
