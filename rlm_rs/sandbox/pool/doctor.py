"""`rlm-rs sandbox doctor`: which isolation layers are active on this host.

Starts a real zygote with the pool's policy, which forks one probe worker that
applies every layer and reports what took effect; nothing is assumed from the
kernel version or the configuration alone. Must never run a step.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from typing import Any

from rlm_rs.sandbox.pool import _wire
from rlm_rs.sandbox.pool._namespaces import holds_pool_capabilities
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy
from rlm_rs.settings import Settings


def probe_layers(policy: SandboxPolicy, timeout: float = 60.0) -> dict[str, Any]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cmd = [
        sys.executable, "-I", "-m", "rlm_rs.sandbox.pool.zygote", "--probe-only",
        "--fd", str(theirs.fileno()),
        "--policy", base64.b64encode(policy.SerializeToString()).decode(),
    ]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    process = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
    theirs.close()
    ours.settimeout(timeout)
    try:
        frame = _wire.FrameReader(ours).read_frame()
    finally:
        ours.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if frame is None:
        raise RuntimeError(f"the zygote exited without a report (status {process.returncode})")
    return dict(json.loads(frame.payload))


def run_doctor(settings: Settings) -> dict[str, Any]:
    from rlm_rs.sandbox.pool.server import pool_policy

    policy = pool_policy(settings)
    report = probe_layers(policy)
    missing = [layer["name"] for layer in report["layers"] if not layer["active"]]
    return {
        "layers": report["layers"],
        "all_active": not missing,
        "missing": missing,
        "strict": settings.sandbox_strict,
        "running_as_root": os.geteuid() == 0,
        "uid": os.geteuid(),
        # "direct": the pool holds the capabilities it needs (root, or the image's
        # file capabilities); "user namespace": it does not (some layers then miss).
        "privilege_path": "direct" if holds_pool_capabilities() else "user namespace",
        "seccomp": report["seccomp"],
        "rlimits": report["rlimits"],
        "zygote": report["zygote"],
        "policy": {
            "pool_size": policy.pool_size,
            "warm_workers": policy.warm_workers,
            "max_step_seconds": policy.max_step_seconds,
            "cgroup_memory_mib": policy.cgroup_memory_mib,
            "cgroup_pids_max": policy.cgroup_pids_max,
            "address_space_mib": policy.address_space_mib,
            "sandbox_uid": policy.sandbox_uid,
            "sandbox_gid": policy.sandbox_gid,
        },
    }
