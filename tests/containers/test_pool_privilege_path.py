"""The pool as the sandbox image runs it, on the host (root; scripts/containers-test.sh
runs the image itself).

uid 10001 holding the pool's capabilities (in the image through file capabilities on its
interpreter; here through setpriv's ambient set) isolates workers without a user namespace
and every layer is active; without them it takes the user-namespace path and doctor says
which layers are missing. A read-only mount of the zygote's own cgroup (what a container
engine gives it) is made writable in a private mount namespace; a mount that exposes
anything but its own cgroup is left alone.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from rlm_rs.sandbox.pool import _cgroups, _linux

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv, mount namespaces)"),
]
# compose.yaml's cap_add for the sandbox-pool service, as capability names.
POOL_CAPS = "+sys_admin,+setuid,+setgid,+setpcap,+sys_chroot,+kill,+dac_override"
DOCTOR = (
    "import json; from rlm_rs.sandbox.pool.doctor import run_doctor; "
    "from rlm_rs.settings import Settings; print(json.dumps(run_doctor(Settings())))"
)


def doctor_as_uid_10001(caps: str) -> dict[str, Any]:
    """`rlm-rs sandbox doctor` as uid 10001 holding `caps` (nothing else, no groups)."""
    cmd = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups",
           f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", f"--bounding-set=-all,{caps}",
           sys.executable, "-c", DOCTOR]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "RLM_SANDBOX_STRICT": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert done.stdout.strip(), done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_uid_10001_with_the_pool_capabilities_gets_every_layer() -> None:
    report = doctor_as_uid_10001(POOL_CAPS)
    assert report["uid"] == 10001 and not report["running_as_root"]
    assert report["missing"] == [], report["missing"]
    assert report["privilege_path"] == "direct"
    layers = {layer["name"]: layer for layer in report["layers"]}
    # The worker really switched away from 10001 and holds no capability.
    assert layers["unprivileged_uid"]["active"] and layers["capabilities"]["active"]
    assert layers["pidns"]["active"] and layers["userns"]["active"]


def test_uid_10001_without_them_takes_the_user_namespace_path() -> None:
    # DAC_OVERRIDE only (to read this checkout): no SYS_ADMIN/SETUID/..., so the zygote
    # enters a user namespace, where it cannot join the pool's PID namespace nor switch
    # the worker to an unmapped uid. doctor says so, and strict mode would refuse.
    report = doctor_as_uid_10001("+dac_override")
    assert report["privilege_path"] == "user namespace"
    assert {"pidns", "unprivileged_uid"} <= set(report["missing"]), report["missing"]


def _in_private_mount_namespace(body: str) -> dict[str, Any]:
    """Run `body` (defines `result`) in a forked child with its own mount namespace."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        result: dict[str, Any] = {}
        try:
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE, None)
            scope: dict[str, Any] = {"Path": Path, "os": os, "_cgroups": _cgroups, "_linux": _linux,
                                     "tempfile": tempfile, "errno": errno, "result": result}  # fmt: skip
            exec(body, scope)
        except BaseException as exc:
            result["error"] = repr(exc)
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


PIDS = Path("/sys/fs/cgroup/pids")


@pytest.mark.skipif(not (PIDS / "cgroup.procs").exists(), reason="needs the cgroup v1 pids hierarchy")
def test_read_only_mount_of_the_own_cgroup_is_made_writable_and_no_other() -> None:
    own = PIDS / _cgroups._own_cgroups()["pids"].lstrip("/")
    other = own / f"rlm-test-not-ours-{os.getpid()}"
    other.mkdir()
    try:
        result = _in_private_mount_namespace(f"""
ro = _linux.MS_REMOUNT | 4096 | _linux.MS_RDONLY  # MS_BIND
mine, theirs = tempfile.mkdtemp(), tempfile.mkdtemp()
for source, target in (({str(own)!r}, mine), ({str(other)!r}, theirs)):
    _linux.mount(source, target, None, 4096, None)
    _linux.mount("none", target, None, ro, None)
def writable(path):
    try:
        os.mkdir(os.path.join(path, "probe"))
    except OSError as exc:
        return errno.errorcode[exc.errno]
    os.rmdir(os.path.join(path, "probe"))
    return "writable"
result["before"] = [writable(mine), writable(theirs)]
result["remounted"] = _cgroups.writable_own_cgroup_mounts([Path(mine), Path(theirs)])
result["after"] = [writable(mine), writable(theirs)]
result["paths"] = [mine, theirs]
""")
    finally:
        other.rmdir()
    assert "error" not in result, result
    mine, _theirs = result["paths"]
    assert result["before"] == ["EROFS", "EROFS"]
    assert result["remounted"] == [mine]
    assert result["after"] == ["writable", "EROFS"]
