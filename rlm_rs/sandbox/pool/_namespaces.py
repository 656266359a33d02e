"""Namespaces and the empty file-system view of each worker.

The zygote enters one new, empty network namespace once (inherited by every
worker: no interfaces but a down loopback, created once so it costs nothing
per step) and a private mount namespace holding an empty read-only tmpfs.
Each worker then gets its own PID namespace (it is PID 1 there), its own mount,
IPC and UTS namespaces, and pivots into the empty tmpfs with the host tree
detached. When the pool is not root, the zygote first enters a user namespace
that maps its own uid to 0. This module must never leave a worker with a path
to the host file system.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field

from rlm_rs.sandbox.pool import _linux
from rlm_rs.v1.sandbox_pb2 import SandboxPolicy


@dataclass
class ZygoteNamespaces:
    """What the zygote set up once, for every worker it forks."""

    netns: str = ""  # "" when active, else why not
    mountns: str = ""
    userns: str = ""  # root needs none: it drops to an unprivileged uid
    empty_root: str | None = None
    pidns_fd: int | None = None
    errors: dict[str, str] = field(default_factory=dict)


def prepare_zygote(policy: SandboxPolicy) -> ZygoteNamespaces:
    ns = ZygoteNamespaces()
    if os.geteuid() != 0:
        ns.userns = _enter_user_namespace() if policy.clone_newuser else "disabled by policy"
    if policy.clone_newnet:
        try:
            _linux.unshare(_linux.CLONE_NEWNET)
        except OSError as exc:
            ns.errors["netns"] = str(exc)
    else:
        ns.errors["netns"] = "disabled by policy"
    if policy.clone_newns:
        try:
            _linux.unshare(_linux.CLONE_NEWNS)
            _linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE, None)
            root = tempfile.mkdtemp(prefix="rlm-sandbox-root-")
            flags = _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
            _linux.mount("tmpfs", root, "tmpfs", flags, "size=4k,nr_inodes=2,mode=0555")
            _linux.mount("none", root, None, flags | _linux.MS_REMOUNT | _linux.MS_RDONLY, None)
            ns.empty_root = root
        except OSError as exc:
            ns.errors["mountns"] = str(exc)
    else:
        ns.errors["mountns"] = "disabled by policy"
    if policy.clone_newpid:
        try:
            ns.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            ns.errors["pidns"] = str(exc)
    else:
        ns.errors["pidns"] = "disabled by policy"
    return ns


def _enter_user_namespace() -> str:
    uid, gid = os.geteuid(), os.getegid()
    try:
        _linux.unshare(_linux.CLONE_NEWUSER)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    except OSError as exc:
        return f"unavailable: {exc}"
    return ""


def before_fork(ns: ZygoteNamespaces) -> bool:
    """In the zygote: make the next child PID 1 of a fresh PID namespace."""
    if ns.pidns_fd is None:
        return False
    try:
        # Reset pid_for_children to our own namespace, then ask for a new one.
        _linux.setns(ns.pidns_fd, _linux.CLONE_NEWPID)
        _linux.unshare(_linux.CLONE_NEWPID)
    except OSError as exc:
        ns.errors["pidns"] = str(exc)
        return False
    return True


def apply_worker(ns: ZygoteNamespaces, policy: SandboxPolicy) -> dict[str, str]:
    """In the worker, before the fs view is gone. Returns layer -> error ("" = active)."""
    report = {"netns": ns.errors.get("netns", ""), "userns": ns.userns}
    report["pidns"] = ns.errors.get("pidns", "") or (
        "" if os.getpid() == 1 else "worker is not PID 1 of its namespace"
    )
    flags = 0
    for name, flag, wanted in (
        ("mountns", _linux.CLONE_NEWNS, policy.clone_newns and ns.empty_root is not None),
        ("ipcns", _linux.CLONE_NEWIPC, policy.clone_newipc),
        ("utsns", _linux.CLONE_NEWUTS, policy.clone_newuts),
    ):
        if wanted:
            flags |= flag
        else:
            report[name] = ns.errors.get(name, "disabled by policy")
    try:
        _linux.unshare(flags)
        for name in ("mountns", "ipcns", "utsns"):
            report.setdefault(name, "")
    except OSError as exc:
        for name in ("mountns", "ipcns", "utsns"):
            report.setdefault(name, str(exc))
    if not report["utsns"]:
        socket.sethostname("sandbox")
    return report


def enter_empty_root(ns: ZygoteNamespaces) -> str:
    """Pivot into the empty read-only tmpfs and detach the host tree. "" = done."""
    if ns.empty_root is None:
        return ns.errors.get("mountns", "no mount namespace")
    try:
        os.chdir(ns.empty_root)
        _linux.pivot_root(".", ".")
        _linux.umount2(".", _linux.MNT_DETACH)
        os.chdir("/")
        if os.listdir("/"):
            return "root is not empty"
    except OSError as exc:
        return str(exc)
    return ""


def probe_network() -> str:
    """Probe-only check (needs socket(), so before seccomp): "" when no usable
    interface exists in this namespace."""
    names = [name for _, name in socket.if_nameindex()]
    if names not in ([], ["lo"]):
        return f"interfaces present: {names}"
    try:
        with socket.create_connection(("127.0.0.1", 9), timeout=0.2):
            return "loopback connect succeeded"
    except OSError:
        return ""


def cleanup_zygote(ns: ZygoteNamespaces) -> None:
    if ns.empty_root:
        try:
            _linux.umount2(ns.empty_root, _linux.MNT_DETACH)
            os.rmdir(ns.empty_root)
        except OSError:
            pass
