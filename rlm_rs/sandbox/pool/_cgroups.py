"""The pool's cgroup (memory and pids limits) where the host offers it.

Supports cgroup v1 (separate memory/ and pids/ hierarchies) and v2 (unified,
with the controllers enabled). The zygote moves itself once into
`rlm-sandbox/<zygote pid>` with a memory limit of `cgroup_memory_mib` per
worker slot (pool_size + warm_workers) plus the zygote's own size, and a pids
limit of `cgroup_pids_max` per slot; workers inherit it at fork. Each worker
sets its oom_score_adj to 1000, so the OOM killer takes a worker, never the
zygote. Rejected: one cgroup per worker. On v1 every join is a cgroup
migration, which waits for an RCU grace period under cgroup_threadgroup_rwsem
(measured 4-27 ms per worker here); v2's CLONE_INTO_CGROUP would avoid it and
is the better design where the host runs pure v2. Per-worker memory is bounded
by RLIMIT_AS. In a container the engine mounts the container's own cgroup
read-only: the zygote bind-remounts such a mount read-write in its private mount
namespace, only when the mount's root is the zygote's own cgroup (the container's
delegated subtree; the front and the rest of the container keep the read-only
view). Must never raise a limit it did not set nor touch other groups.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rlm_rs.sandbox.pool import _linux
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

_ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024
ZYGOTE_ALLOWANCE_MIB = 256
_MS_BIND = 4096
_OPTIONAL_LIMITS = {"memory.swap.max"}  # absent where the kernel does not account swap
_KEPT_MOUNT_FLAGS = {"nosuid": _linux.MS_NOSUID, "nodev": _linux.MS_NODEV, "noexec": _linux.MS_NOEXEC}


class PoolCgroup:
    def __init__(self, policy: SandboxPolicy, root: Path = _ROOT):
        self.policy = policy
        self.errors: dict[str, str] = {}
        self.dirs: list[Path] = []
        self.memory_dir: Path | None = None
        tag = f"rlm-sandbox/{os.getpid()}"
        v1_mem, v1_pids = root / "memory", root / "pids"
        unified = root / "unified" if (root / "unified" / "cgroup.controllers").exists() else root
        controllers = _read(unified / "cgroup.controllers").split()
        slots = max(1, policy.pool_size) + max(1, policy.warm_workers)
        memory = (policy.cgroup_memory_mib * slots + ZYGOTE_ALLOWANCE_MIB) * MIB
        pids = policy.cgroup_pids_max * slots + 4
        self.remounted: list[str] = []
        if policy.cgroup_memory_mib > 0 or policy.cgroup_pids_max > 0:
            self.remounted = writable_own_cgroup_mounts([v1_mem, v1_pids, unified])
        if policy.cgroup_memory_mib <= 0:
            self.errors["cgroup_memory"] = "disabled by policy"
        elif (v1_mem / "memory.limit_in_bytes").exists():
            self._enter("cgroup_memory", v1_mem / tag, {"memory.limit_in_bytes": memory})
            self.memory_dir = v1_mem / tag
        elif "memory" in controllers:
            self._enter("cgroup_memory", unified / tag, {"memory.max": memory, "memory.swap.max": 0})
            self.memory_dir = unified / tag
        else:
            self.errors["cgroup_memory"] = "no memory controller on this host"
        if policy.cgroup_pids_max <= 0:
            self.errors["cgroup_pids"] = "disabled by policy"
        elif (v1_pids / "cgroup.procs").exists():
            self._enter("cgroup_pids", v1_pids / tag, {"pids.max": pids})
        elif "pids" in controllers:
            self._enter("cgroup_pids", unified / tag, {"pids.max": pids})
        else:
            self.errors["cgroup_pids"] = "no pids controller on this host"
        if "cgroup_memory" in self.errors:
            self.memory_dir = None

    def _enter(self, layer: str, path: Path, limits: dict[str, int]) -> None:
        try:
            if path in self.dirs:  # v2: one directory holds both controllers
                for name, value in limits.items():
                    _write(path / name, str(value))
                return
            path.mkdir(parents=True, exist_ok=True)
            if path.parent.parent != path and (path.parent / "cgroup.subtree_control").exists():
                _enable_v2_controllers(path)
            for name, value in limits.items():
                if (path / name).exists():
                    _write(path / name, str(value))
                elif name not in _OPTIONAL_LIMITS:
                    # v2 with the controller not enabled for the group: joining it
                    # would report a layer that limits nothing.
                    raise OSError(f"{name} missing: the controller is not enabled there")
            _write(path / "cgroup.procs", str(os.getpid()))
            self.dirs.append(path)
        except OSError as exc:
            self.errors[layer] = f"cannot use {path}: {exc}"

    def oom_kills(self) -> int:
        """How many processes the OOM killer took in the pool's cgroup so far."""
        if self.memory_dir is None:
            return 0
        for name in ("memory.oom_control", "memory.events"):
            for line in _read(self.memory_dir / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return 0

    def cleanup(self) -> None:
        """After every worker is gone: leave the group and remove it."""
        for path in self.dirs:
            parent_procs = path.parent.parent / "cgroup.procs"
            with contextlib.suppress(OSError):
                _write(parent_procs, str(os.getpid()))
            with contextlib.suppress(OSError):
                path.rmdir()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # rlm-sandbox/, when no other pool uses it


def writable_own_cgroup_mounts(paths: list[Path]) -> list[str]:
    """Bind-remount read-write each read-only cgroup mount in `paths` whose root is
    this process's own cgroup (so all it exposes is our own subtree). Call it only
    in a private mount namespace. Returns the paths remounted."""
    own = _own_cgroups()
    mounts = _mounts()
    done = []
    for path in paths:
        entry = mounts.get(str(path))
        if entry is None:
            continue
        root, options, fstype, super_options = entry
        if "ro" not in options or fstype not in ("cgroup", "cgroup2"):
            continue
        if fstype == "cgroup2":
            mine = own.get("")
        else:
            mine = next((own[o] for o in super_options if o in own and o), None)
        if mine is None or root != mine:
            continue  # not (only) our own subtree: leave it alone
        flags = _linux.MS_REMOUNT | _MS_BIND
        flags |= sum(bit for name, bit in _KEPT_MOUNT_FLAGS.items() if name in options)
        try:
            _linux.mount("none", str(path), None, flags, None)
        except OSError:
            continue  # the layer reports the write that fails next
        done.append(str(path))
    return done


def _own_cgroups() -> dict[str, str]:
    """controller (or "name=..."; "" for cgroup v2) -> this process's cgroup path."""
    own: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _mounts() -> dict[str, tuple[str, set[str], str, list[str]]]:
    """mount point -> (root, mount options, fs type, super options); the last
    mount on a path wins, as it is the one visible there."""
    mounts = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 6:
            continue
        options = set(fields[5].split(","))
        mounts[fields[4]] = (fields[3], options, fields[sep + 1], fields[sep + 3].split(","))
    return mounts


def make_worker_oom_target() -> str:
    """In the worker, while /proc is still visible: be the OOM killer's first pick."""
    try:  # raw os calls: no Path, no text layer (fewer pages touched after fork)
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError as exc:
        return str(exc)
    return ""


def _enable_v2_controllers(path: Path) -> None:
    for parent in reversed(path.parents):
        control = parent / "cgroup.subtree_control"
        if control.exists() and str(parent).startswith(str(_ROOT)) and parent != path:
            with contextlib.suppress(OSError):
                _write(control, "+memory +pids")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
