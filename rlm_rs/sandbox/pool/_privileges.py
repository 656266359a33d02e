"""Privilege drop of a worker: no_new_privs, every capability gone, an unprivileged uid.

Order matters: the capability bounding set is cleared while we still hold
CAP_SETPCAP, then groups, gid and uid are switched (which empties the permitted
and effective sets for a root process, not for a non-root one on file
capabilities), then every set is cleared with capset and verified with capget.
Must never leave a capability behind silently: a nonzero mask is an error.
"""

from __future__ import annotations

import os

from rlm_rs.sandbox.pool import _linux
from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

# CAP_SETUID, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE, the last one:
# spot checks of the bounding set the zygote cleared (reading all 41 costs
# as much as dropping them).
_SPOT_CHECKED = (7, 12, 19, 21)


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set(cap_last: int) -> str:
    """In the zygote, once: the bounding set is inherited by every worker and
    only limits what an execve could gain, so the zygote keeps its own
    effective capabilities. "" = done."""
    try:
        for cap in range(cap_last + 1):
            _linux.prctl(_linux.PR_CAPBSET_DROP, cap)
    except OSError as exc:
        return f"bounding set: {exc}"
    return ""


def apply(policy: SandboxPolicy, cap_last: int) -> dict[str, str]:
    report: dict[str, str] = {}
    try:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        report["no_new_privs"] = "" if _linux.prctl(_linux.PR_GET_NO_NEW_PRIVS) == 1 else "unset"
    except OSError as exc:
        report["no_new_privs"] = str(exc)
    try:
        _linux.prctl(_linux.PR_CAP_AMBIENT, _linux.PR_CAP_AMBIENT_CLEAR_ALL)
        if any(_linux.prctl(_linux.PR_CAPBSET_READ, cap) for cap in _SPOT_CHECKED):
            report["capabilities"] = "bounding set not empty"
    except OSError as exc:
        report["capabilities"] = f"ambient/bounding: {exc}"
    uid, gid = policy.sandbox_uid or 65534, policy.sandbox_gid or 65534
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        report["unprivileged_uid"] = "" if os.getuid() == uid else "uid unchanged"
    except OSError as exc:
        report["unprivileged_uid"] = f"cannot switch to {uid}:{gid}: {exc}"
    try:
        # A root pool loses its capabilities with the uid switch; a non-root pool
        # running on file capabilities (sandbox_image/) keeps them through it.
        _linux.drop_all_capabilities()
    except OSError as cap_exc:
        report["capabilities"] = f"capset: {cap_exc}"
    effective, permitted, inheritable = _linux.capabilities()
    if effective or permitted or inheritable:
        report["capabilities"] = f"capabilities left: {effective:#x}/{permitted:#x}"
    report.setdefault("capabilities", "")
    return report
