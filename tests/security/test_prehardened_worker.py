"""A warm worker is fully hardened while it waits, before any step reaches it.

Workers are forked and hardened ahead of time, off the step's critical path.
This reads, from outside, the kernel's view of every worker that is blocked in
recvmsg waiting for its step (the only read a worker makes after READY) and
checks each layer: seccomp filter mode, no_new_privs, uid/gid 65534, no
capability, own namespaces, rlimits, the pool cgroup, stdio/socket only, and
an empty root. A layer applied only once the step arrives would fail here.
"""

from __future__ import annotations

import os
import platform
import time

from rlm_rs.sandbox.client import PoolSandbox
from rlm_rs.sandbox.v1.sandbox_pb2 import StepRequest

_RECVMSG = {"x86_64": 47, "aarch64": 212}[platform.machine()]


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def _waiting_workers(pool: PoolSandbox, want: int) -> list[int]:
    """Pids of workers blocked in recvmsg on fd 3 (READY sent, no step yet)."""
    assert pool.server_pid is not None
    deadline = time.monotonic() + 20
    while True:
        waiting = []
        for zygote in _children(pool.server_pid):
            for worker in _children(zygote):
                try:
                    with open(f"/proc/{worker}/syscall") as handle:
                        fields = handle.read().split()
                except OSError:
                    continue
                if fields and fields[0] == str(_RECVMSG) and int(fields[1], 16) == 3:
                    waiting.append(worker)
        if len(waiting) >= want or time.monotonic() > deadline:
            return waiting
        time.sleep(0.05)


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.split(":", 1) for line in handle.read().splitlines() if ":" in line)


def _limits(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/limits") as handle:
        lines = handle.read().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def test_waiting_worker_already_has_every_layer(hardened_pool: PoolSandbox) -> None:
    step = hardened_pool.run_step(StepRequest(code="x = 1", state_json="{}"))
    assert step.success, step.error
    assert all(layer.active for layer in hardened_pool.status().layers)
    workers = _waiting_workers(hardened_pool, 1)
    assert workers, "no warm worker was found waiting for its step"
    for pid in workers:
        status = _status(pid)
        assert status["Seccomp"].strip() == "2"  # filter mode, loaded before the step
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Uid"].split() == ["65534"] * 4
        assert status["Gid"].split() == ["65534"] * 4
        assert status["Groups"].split() == []
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, cap
        assert status["NSpid"].split()[-1] == "1"  # PID 1 of its own PID namespace
        for ns in ("net", "mnt", "pid", "ipc", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
        limits = _limits(pid)
        assert limits["Max processes"] == "0"
        assert limits["Max file size"] == "0"
        assert limits["Max core file size"] == "0"
        for name in ("Max cpu time", "Max address space", "Max open files"):
            assert limits[name] != "unlimited", name
        with open(f"/proc/{pid}/cgroup") as handle:
            assert "rlm-sandbox" in handle.read()
        with open(f"/proc/{pid}/oom_score_adj") as handle:
            assert handle.read().strip() == "1000"
        assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3]
        assert os.listdir(f"/proc/{pid}/root") == []
        with open(f"/proc/{pid}/stat") as handle:
            assert int(handle.read().rsplit(")", 1)[1].split()[16]) == 10  # nice: WORKER_NICENESS
