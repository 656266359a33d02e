"""The worker's seccomp-BPF allowlist, built once in the zygote, loaded last in each worker.

Binding: pyseccomp (ctypes over the system libseccomp.so.2). libseccomp does the
hard parts (architecture check so x32/i386 entry points cannot bypass the
filter, syscall-number resolution per arch, argument comparisons, BPF layout);
pyseccomp reaches it from any interpreter, including uv venvs, where Debian's
official Cython binding (python3-seccomp) cannot be imported; seccompy (pure
Python BPF) is slower and re-implements what libseccomp already gets right. We
compile once (export_bpf) and each worker only runs prctl(PR_SET_SECCOMP) on
the bytes, which keeps libseccomp's ~1.5 ms build off the per-worker path.

Actions: allowlisted -> ALLOW (some with argument checks); harmless probes
CPython makes (openat, stat, readlink, getcwd, ioctl, ...) -> EPERM, so
linecache/isatty fail softly; everything else -> KILL_PROCESS (SIGSYS).
Must never allow a syscall that creates a process, a socket, or opens a path.
"""

from __future__ import annotations

import errno
import mmap
import tempfile

import pyseccomp as sc

from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

# Answered with EPERM instead of a kill: probes CPython makes on its own
# (tracebacks read source lines, isatty, locale); none can succeed anyway.
EPERM_PROBES: tuple[str, ...] = (
    "open", "openat", "openat2", "creat", "stat", "lstat", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getcwd", "ioctl", "statx", "getdents64",
    "statfs", "fstatfs", "sysinfo", "uname", "getuid", "geteuid", "getgid", "getegid",
    "getppid", "sched_getaffinity",
)  # fmt: skip

# Allowed only with argument checks (added whatever the policy's list says).
_CONDITIONAL = ("mmap", "mprotect", "prlimit64", "fcntl", "setpriority")
_F_GETFD, _F_SETFD, _F_GETFL, _F_DUPFD_CLOEXEC = 1, 2, 3, 1030


def effective_rules(policy: SandboxPolicy) -> dict[str, list[str]]:
    """The allowlist as reported by doctor: plain, conditional, EPERM, kill."""
    plain = sorted(set(policy.seccomp_allowlist) - set(_CONDITIONAL))
    return {
        "allow": plain,
        "allow_if": [
            "mmap(prot without PROT_EXEC)",
            "mprotect(prot without PROT_EXEC)",
            "prlimit64(pid == 0) (lowering only: no CAP_SYS_RESOURCE)",
            "setpriority(PRIO_PROCESS, 0) (itself; raising its nice value only)",
            "fcntl(cmd in F_GETFD, F_SETFD, F_GETFL, F_DUPFD_CLOEXEC)",
        ],
        "eperm": sorted(set(EPERM_PROBES) - set(plain)),
        "default": ["KILL_PROCESS"],
    }


def build(policy: SandboxPolicy) -> bytes:
    """Compile the filter to classic BPF bytes."""
    allow = set(policy.seccomp_allowlist)
    flt = sc.SyscallFilter(sc.KILL_PROCESS)
    for name in sorted(allow - set(_CONDITIONAL)):
        flt.add_rule(sc.ALLOW, name)
    for name in sorted(set(EPERM_PROBES) - allow):
        flt.add_rule(sc.ERRNO(errno.EPERM), name)
    for name in ("mmap", "mprotect"):
        flt.add_rule(sc.ALLOW, name, sc.Arg(2, sc.MASKED_EQ, mmap.PROT_EXEC, 0))
    flt.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, sc.EQ, 0))
    # The worker lowers its own priority when the front says its step is one
    # more of a busy tenant (_worker.py); without CAP_SYS_NICE it can only go down.
    flt.add_rule(sc.ALLOW, "setpriority", sc.Arg(0, sc.EQ, 0), sc.Arg(1, sc.EQ, 0))
    for cmd in (_F_GETFD, _F_SETFD, _F_GETFL, _F_DUPFD_CLOEXEC):
        flt.add_rule(sc.ALLOW, "fcntl", sc.Arg(1, sc.EQ, cmd))
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.flush()
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise RuntimeError("libseccomp produced no BPF program")
    return program
