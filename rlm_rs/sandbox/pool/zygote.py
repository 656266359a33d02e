"""The zygote: a single-threaded process that forks hardened, one-step workers.

Started by the pool front as `python -I -m rlm_rs.sandbox.pool.zygote`, it
imports the step executor and calls warm_up() first, then prepares what every
worker inherits (empty network namespace, private mount namespace with an empty
root, cgroup parents, the compiled seccomp program) and runs one selector loop:
frames from the front (RUN, STATUS, SHUTDOWN), READY/RESULT/EOF from workers,
SIGCHLD, and deadlines. It kills a worker whose wall clock ran out
(STEP_TIMEOUT) and turns any worker death into a clean LAMBDA_ERROR result.
It must never import gRPC, start a thread, or run a step itself.
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
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rlm_rs.sandbox.pool import (
    _cgroups,
    _namespaces,
    _privileges,
    _rlimits,
    _seccomp,
    _wire,
    _worker,
)
from rlm_rs.v1.common_pb2 import ErrorDetail
from rlm_rs.v1.sandbox_pb2 import SandboxPolicy, StepResult

# Layers in the order they are applied, with what each one stops.
LAYERS: tuple[tuple[str, str], ...] = (
    ("netns", "new empty network namespace: no interface, no route, no loopback up"),
    ("mountns", "private mount namespace per worker"),
    ("pidns", "own PID namespace (worker is PID 1): no other process is visible or signalable"),
    ("ipcns", "own IPC namespace: no shared SysV/POSIX IPC with the host"),
    ("utsns", "own UTS namespace: hostname 'sandbox'"),
    ("userns", "user namespace (only needed when the pool is not root)"),
    ("fs_view", "pivot_root into an empty read-only tmpfs; documents only as read-only fds"),
    ("rlimits", "address space, CPU seconds, open files, processes, file size 0, core 0"),
    ("cgroup_memory", "per-worker cgroup memory limit (OOM kills only the worker)"),
    ("cgroup_pids", "per-worker cgroup pids limit"),
    ("no_new_privs", "PR_SET_NO_NEW_PRIVS"),
    ("capabilities", "bounding, ambient, effective and permitted sets empty"),
    ("unprivileged_uid", "runs as the policy's unprivileged uid/gid, no groups"),
    ("seccomp", "seccomp-BPF allowlist, installed last; other syscalls kill the process"),
    ("wall_clock_kill", "the zygote SIGKILLs a worker past max_step_seconds (STEP_TIMEOUT)"),
    ("fresh_process", "one process per step; nothing survives a step but returned JSON"),
)
# Most workers finish by themselves right after answering; past this we kill.
_EXIT_GRACE_SECONDS = 2.0
_DEATH_GRACE_SECONDS = 0.05


@dataclass
class Worker:
    pid: int
    sock: socket.socket
    reader: _wire.FrameReader
    group: _cgroups.WorkerCgroup
    probe: bool = False
    state: str = "starting"  # starting | warm | busy
    req_id: int = 0
    deadline: float = 0.0
    dispatched_at: float = 0.0
    layers: dict[str, str] = field(default_factory=dict)
    forked_at: float = 0.0


@dataclass
class Pending:
    req_id: int
    payload: bytes
    fds: list[int]
    seconds: float


class Zygote:
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
        self.cgroups = _cgroups.Cgroups(policy)
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
            cap_last=_privileges.last_capability(),
            base_vsz_bytes=_vsz_bytes(),
            allow_unsafe=allow_unsafe,
            run_step=run_step,
        )
        self.workers: dict[int, Worker] = {}
        self.exiting: dict[int, tuple[_cgroups.WorkerCgroup, float]] = {}
        self.exited: dict[int, int] = {}
        self.pending: collections.deque[Pending] = collections.deque()
        self.layers: list[dict[str, Any]] = []
        self.steps_total = 0
        self.workers_failed_total = 0
        self.consecutive_failures = 0
        self.spawn_after = 0.0
        self.seq = 0
        self.timing = {
            "fork_ms_total": 0.0,
            "ready_ms_total": 0.0,
            "workers_spawned": 0,
            "workers_ready": 0,
            "steps_waited_for_worker": 0,
            "step_ms_total": 0.0,
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
        worker.sock.settimeout(10)
        frame = worker.reader.read_frame()
        status = self._collect(worker, grace=5.0)
        report = json.loads(frame.payload) if frame and frame.kind == _wire.READY else {}
        if not report:
            report = {name: f"probe worker died ({_describe(status)})" for name, _ in LAYERS}
        if self.seccomp_error:
            report["seccomp"] = self.seccomp_error
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
            "warm_workers": states["warm"] + states["starting"],
            "busy_workers": states["busy"],
            "steps_total": self.steps_total,
            "workers_failed_total": self.workers_failed_total,
            "strict": self.strict,
            "timing": self.timing,
            "seccomp": _seccomp.effective_rules(self.policy),
            "rlimits": _rlimits.limits_for(self.policy, self.context.base_vsz_bytes),
            "zygote": {
                "pid": os.getpid(),
                "threads": threading.active_count(),
                "grpc_imported": "grpc" in sys.modules,
                "vsz_mib": round(self.context.base_vsz_bytes / 2**20, 1),
            },
        }

    # ---- the loop --------------------------------------------------------
    def serve(self) -> None:
        self.selector.register(self.control, selectors.EVENT_READ, "control")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self._replenish()
        while self.running:
            timeout = self._next_timeout()
            for key, _ in self.selector.select(timeout):
                if key.data == "control":
                    self._on_control()
                elif key.data == "wake":
                    self._on_wake()
                else:
                    self._on_worker(key.data)
            self._expire()
            self._dispatch()
            self._replenish()
        self.shutdown()

    def _on_term(self, *_: Any) -> None:
        self.running = False

    def _next_timeout(self) -> float | None:
        deadlines = [w.deadline for w in self.workers.values() if w.state == "busy"]
        deadlines += [limit for _, limit in self.exiting.values()]
        if self.pending or self.spawn_after:
            deadlines.append(time.monotonic() + 0.05)
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
            if frame.kind == _wire.RUN:
                seconds, _ = _worker.RUN_PREFIX.unpack_from(frame.payload)
                if not any(w.state == "warm" for w in self.workers.values()):
                    self.timing["steps_waited_for_worker"] += 1
                self.pending.append(Pending(frame.req_id, frame.payload, frame.fds, seconds))
            elif frame.kind == _wire.STATUS:
                payload = json.dumps(self.status()).encode()
                _wire.send_frame(self.control, _wire.STATUS_REPLY, frame.req_id, payload)
            elif frame.kind == _wire.SHUTDOWN:
                self.running = False
            else:
                _close_all(frame.fds)
        if self.control_reader.eof:
            self.running = False

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
            exiting = self.exiting.pop(pid, None)
            if exiting is not None:
                self.cgroups.release(exiting[0])
            else:
                self.exited[pid] = status

    def _on_worker(self, worker: Worker) -> None:
        try:
            frames = worker.reader.feed()
        except (OSError, _wire.WireError):
            frames, worker.reader.eof = [], True
        for frame in frames:
            _close_all(frame.fds)  # a worker has no business sending fds
            if frame.kind == _wire.READY and worker.state == "starting":
                worker.layers = json.loads(frame.payload)
                worker.state = "warm"
                self.timing["workers_ready"] += 1
                self.timing["ready_ms_total"] += (time.perf_counter() - worker.forked_at) * 1000
                self.consecutive_failures = 0
            elif frame.kind == _wire.RESULT and worker.state == "busy":
                self._reply(worker.req_id, frame.payload)
                self.steps_total += 1
                self.timing["step_ms_total"] += (time.monotonic() - worker.dispatched_at) * 1000
                self._release(worker)
                return
            else:
                self._fail_worker(worker, "worker broke the protocol")
                return
        if worker.reader.eof:
            self._fail_worker(worker, "")

    def _fail_worker(self, worker: Worker, why: str) -> None:
        state, req_id = worker.state, worker.req_id
        status = self._collect(worker, grace=_DEATH_GRACE_SECONDS)
        self.workers_failed_total += 1
        if state != "busy":
            self.consecutive_failures += 1
            if self.consecutive_failures >= 5:
                self.spawn_after = time.monotonic() + 1.0
            return
        self.steps_total += 1
        oom = self.cgroups.oom_killed(worker.group)
        self.cgroups.release(worker.group)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            self._reply_error(req_id, "STEP_TIMEOUT", "step used up its CPU seconds", worker)
            return
        cause = why or _describe(status, oom=oom)
        self._reply_error(
            req_id,
            "LAMBDA_ERROR",
            f"sandbox worker died before answering: {cause}",
            worker,
            {"cause": cause, "exit": _status_dict(status), "oom": oom},
        )

    def _expire(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.state == "busy" and worker.deadline <= now:
                os.kill(worker.pid, signal.SIGKILL)
                self._collect(worker, grace=5.0)
                self.cgroups.release(worker.group)
                self.steps_total += 1
                seconds = round(worker.deadline - worker.dispatched_at, 3)
                self._reply_error(
                    worker.req_id,
                    "STEP_TIMEOUT",
                    f"step exceeded max_step_seconds ({seconds} s) and was killed",
                    worker,
                    {"max_step_seconds": seconds},
                )
        for pid, (group, limit) in list(self.exiting.items()):
            if limit <= now:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.exiting[pid] = (group, now + _EXIT_GRACE_SECONDS)

    def _dispatch(self) -> None:
        busy = sum(1 for w in self.workers.values() if w.state == "busy")
        while self.pending and busy < max(1, self.policy.pool_size):
            worker = next((w for w in self.workers.values() if w.state == "warm"), None)
            if worker is None:
                return
            job = self.pending.popleft()
            try:
                _wire.send_frame(worker.sock, _wire.RUN, job.req_id, job.payload, job.fds)
            except OSError:
                self.pending.appendleft(job)
                self._fail_worker(worker, "")
                continue
            _close_all(job.fds)
            now = time.monotonic()
            worker.state, worker.req_id = "busy", job.req_id
            worker.dispatched_at, worker.deadline = now, now + job.seconds
            busy += 1

    def _replenish(self) -> None:
        if not self.running or time.monotonic() < self.spawn_after:
            return
        self.spawn_after = 0.0
        counts = collections.Counter(w.state for w in self.workers.values())
        ready = counts["warm"] + counts["starting"]
        if counts["busy"] and ready and not self.pending:
            # A fork (and the child's hardening) competes with running steps
            # for the CPU; while one warm worker is left, refill after the step.
            return
        room = max(1, self.policy.pool_size) + max(1, self.policy.warm_workers) - len(self.workers)
        wanted = max(max(1, self.policy.warm_workers), len(self.pending)) - ready
        for _ in range(max(0, min(wanted, room))):
            self._spawn()

    # ---- workers -----------------------------------------------------------
    def _spawn(self, probe: bool = False) -> Worker:
        self.seq += 1
        try:
            group = self.cgroups.acquire()
        except OSError:
            group = _cgroups.WorkerCgroup()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _namespaces.before_fork(self.namespaces)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the worker; never returns
            _worker.main(child.fileno(), self.context, group, probe)
        self.timing["fork_ms_total"] += (time.perf_counter() - started) * 1000
        self.timing["workers_spawned"] += 1
        child.close()
        worker = Worker(pid, parent, _wire.FrameReader(parent), group, probe, forked_at=started)
        self.workers[pid] = worker
        if not probe:
            self.selector.register(parent, selectors.EVENT_READ, worker)
        return worker

    def _release(self, worker: Worker) -> None:
        """The worker answered: stop listening; it exits by itself (reaped on SIGCHLD)."""
        self._forget(worker)
        if worker.pid in self.exited:
            self.exited.pop(worker.pid)
            self.cgroups.release(worker.group)
        else:
            self.exiting[worker.pid] = (worker.group, time.monotonic() + _EXIT_GRACE_SECONDS)

    def _collect(self, worker: Worker, grace: float) -> int:
        """Stop listening to a worker and return its wait status (killing it if needed)."""
        self._forget(worker)
        status = self.exited.pop(worker.pid, None)
        give_up = time.monotonic() + grace
        while status is None:
            try:
                pid, wait_status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                return self.exited.pop(worker.pid, 0)
            if pid:
                status = wait_status
            elif time.monotonic() >= give_up:
                os.kill(worker.pid, signal.SIGKILL)
                _, status = os.waitpid(worker.pid, 0)
            else:
                time.sleep(0.001)
        if worker.state != "busy":
            self.cgroups.release(worker.group)
        return status

    def _forget(self, worker: Worker) -> None:
        self.workers.pop(worker.pid, None)
        if not worker.probe:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.sock)
        worker.reader.close_fds()
        worker.sock.close()

    def _reply(self, req_id: int, payload: bytes) -> None:
        try:
            _wire.send_frame(self.control, _wire.RESULT, req_id, payload)
        except OSError:
            self.running = False

    def _reply_error(
        self,
        req_id: int,
        code: str,
        message: str,
        worker: Worker,
        details: dict[str, Any] | None = None,
    ) -> None:
        result = StepResult(
            success=False,
            duration_ms=(time.monotonic() - worker.dispatched_at) * 1000,
            error=ErrorDetail(
                code=code, message=message, details_json=json.dumps(details or {}, sort_keys=True)
            ),
        )
        self._reply(req_id, result.SerializeToString())

    def shutdown(self) -> None:
        for job in self.pending:
            _close_all(job.fds)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            self._collect(worker, grace=1.0)
            self.cgroups.release(worker.group)
        for pid, (group, _) in list(self.exiting.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.cgroups.release(group)
        self.cgroups.cleanup()
        _namespaces.cleanup_zygote(self.namespaces)


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
    parser.add_argument(
        "--fd", type=int, required=True, help="control socket inherited from the front"
    )
    parser.add_argument("--policy", required=True, help="base64 SandboxPolicy (the pool's own)")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--allow-unsafe", action="store_true")
    parser.add_argument("--probe-only", action="store_true", help="report layers and exit")
    parser.add_argument("--step-module", default="rlm_rs.sandbox.executor")
    args = parser.parse_args(argv)
    # Everything a step needs is imported here, before any fork.
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
