"""Per-worker cgroups (memory and pids limits) where the host offers them.

Supports cgroup v1 (separate memory/ and pids/ hierarchies) and v2 (unified,
with the controllers enabled). The zygote keeps a set of cgroup slots under
`rlm-sandbox/<zygote pid>/` (one per concurrently living worker, reused: mkdir
and rmdir of a memory cgroup cost more than the rest of a worker's set-up); a
worker joins its slot itself while still root, and a slot is handed out again
only after its previous worker was reaped. OOM kills are read as the change of
the slot's oom_kill counter. Must never raise limits it did not set nor touch other groups.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from rlm_rs.v1.sandbox_pb2 import SandboxPolicy

_ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024


@dataclass
class WorkerCgroup:
    dirs: list[Path] = field(default_factory=list)
    oom_baseline: int = 0


class Cgroups:
    def __init__(self, policy: SandboxPolicy, root: Path = _ROOT):
        self.policy = policy
        self.errors: dict[str, str] = {}
        self.version = 0
        self._free: list[WorkerCgroup] = []
        self._slots = 0
        self.memory_base: Path | None = None
        self.pids_base: Path | None = None
        tag = f"rlm-sandbox/{os.getpid()}"
        v1_mem, v1_pids = root / "memory", root / "pids"
        unified = root / "unified" if (root / "unified" / "cgroup.controllers").exists() else root
        controllers = _read(unified / "cgroup.controllers").split()
        if (v1_mem / "memory.limit_in_bytes").exists():
            self.version = 1
            self.memory_base = v1_mem / tag
        elif "memory" in controllers:
            self.version = 2
            self.memory_base = unified / tag
        else:
            self.errors["cgroup_memory"] = "no memory controller on this host"
        if (v1_pids / "pids.max").exists() or (v1_pids / "cgroup.procs").exists():
            self.pids_base = v1_pids / tag
        elif "pids" in controllers:
            self.pids_base = unified / tag
        else:
            self.errors["cgroup_pids"] = "no pids controller on this host"
        if policy.cgroup_memory_mib <= 0:
            self.memory_base, self.errors["cgroup_memory"] = None, "disabled by policy"
        if policy.cgroup_pids_max <= 0:
            self.pids_base, self.errors["cgroup_pids"] = None, "disabled by policy"
        for name, base in (("cgroup_memory", self.memory_base), ("cgroup_pids", self.pids_base)):
            if base is None:
                continue
            try:
                base.mkdir(parents=True, exist_ok=True)
                if base.parent != base and self.version == 2:
                    _enable_v2_controllers(base)
            except OSError as exc:
                self.errors[name] = f"cannot create {base}: {exc}"
                if name == "cgroup_memory":
                    self.memory_base = None
                else:
                    self.pids_base = None

    def acquire(self) -> WorkerCgroup:
        """A free slot (created on first need) with the policy's limits."""
        if self._free:
            group = self._free.pop()
        else:
            self._slots += 1
            group = self._create(f"slot{self._slots}")
        group.oom_baseline = self._oom_count(group)
        return group

    def release(self, group: WorkerCgroup) -> None:
        """Only once the slot's worker was reaped."""
        if group.dirs:
            self._free.append(group)

    def _create(self, name: str) -> WorkerCgroup:
        group = WorkerCgroup()
        if self.memory_base is not None:
            path = self.memory_base / name
            path.mkdir(exist_ok=True)
            limit = str(self.policy.cgroup_memory_mib * MIB)
            if self.version == 1:
                _write(path / "memory.limit_in_bytes", limit)
                if (path / "memory.memsw.limit_in_bytes").exists():
                    _write(path / "memory.memsw.limit_in_bytes", limit)
            else:
                _write(path / "memory.max", limit)
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", "0")
            group.dirs.append(path)
        if self.pids_base is not None:
            path = self.pids_base / name
            path.mkdir(exist_ok=True)
            _write(path / "pids.max", str(self.policy.cgroup_pids_max))
            group.dirs.append(path)
        return group

    def oom_killed(self, group: WorkerCgroup) -> bool:
        return self._oom_count(group) > group.oom_baseline

    @staticmethod
    def _oom_count(group: WorkerCgroup) -> int:
        for path in group.dirs:
            text = _read(path / "memory.oom_control") + _read(path / "memory.events")
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return 0

    def cleanup(self) -> None:
        for base in (self.memory_base, self.pids_base):
            if base is None or not base.exists():
                continue
            for child in base.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def join(group: WorkerCgroup) -> None:
    """In the worker, while still root: move this process into its cgroups."""
    for path in group.dirs:
        _write(path / "cgroup.procs", "0")


def _enable_v2_controllers(base: Path) -> None:
    for parent in reversed(base.parents):
        control = parent / "cgroup.subtree_control"
        if control.exists() and str(parent).startswith(str(_ROOT)):
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
