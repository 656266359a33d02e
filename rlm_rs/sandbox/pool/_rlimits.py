"""Resource limits of a worker, from the pool's own SandboxPolicy.

Set in the worker before privileges are dropped. RLIMIT_AS is sized twice: at
hardening to the zygote's size + `address_space_mib` + a document reserve, then
lowered (never raised: the hard limit cannot go up without CAP_SYS_RESOURCE)
once the request's documents are known. Must never read limits from a request.
"""

from __future__ import annotations

import resource

from rlm_rs.sandbox.v1.sandbox_pb2 import SandboxPolicy

MIB = 1024 * 1024
# Room for mmapped documents before the request says how big they are.
DOCUMENT_RESERVE_MIB = 4096
# At most this many document fds travel with one step (SCM_MAX_FD is 253).
MAX_DOCUMENT_FDS = 250


def limits_for(policy: SandboxPolicy, base_vsz_bytes: int) -> dict[str, int]:
    return {
        "RLIMIT_AS": base_vsz_bytes + (policy.address_space_mib + DOCUMENT_RESERVE_MIB) * MIB,
        "RLIMIT_CPU": max(1, policy.cpu_seconds),
        # Room for the documents' fds until the request says how many came.
        "RLIMIT_NOFILE": max(8, policy.max_open_files) + 2 * MAX_DOCUMENT_FDS + 8,
        "RLIMIT_NPROC": max(0, policy.max_processes),
        "RLIMIT_FSIZE": max(0, policy.file_size_bytes),
        "RLIMIT_CORE": 0,
        "RLIMIT_MEMLOCK": 0,
        "RLIMIT_MSGQUEUE": 0,
    }


def apply(policy: SandboxPolicy, base_vsz_bytes: int) -> dict[str, int]:
    values = limits_for(policy, base_vsz_bytes)
    for name, value in values.items():
        resource.setrlimit(getattr(resource, name), (value, value))
    return values


def fit_open_files(policy: SandboxPolicy, fds: list[int]) -> int:
    """Lower RLIMIT_NOFILE to the documents' fds, one dup of each (mmap dups a
    text fd) and `max_open_files` more; nothing can open a path anyway."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    value = max(fds, default=3) + 1 + len(fds) + max(8, policy.max_open_files)
    value = min(value, hard) if hard != resource.RLIM_INFINITY else value
    resource.setrlimit(resource.RLIMIT_NOFILE, (value, value))
    return value


def size_for_documents(policy: SandboxPolicy, base_vsz_bytes: int, document_bytes: int) -> int:
    """Lower RLIMIT_AS to what this step needs: base + budget + its documents."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = base_vsz_bytes + policy.address_space_mib * MIB + document_bytes
    value = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    resource.setrlimit(resource.RLIMIT_AS, (value, value))
    return value
