"""Pools for the security suite: real pool processes on temporary Unix sockets.

`hardened_pool` is the production configuration (policy + OS layers).
`os_only_pool` runs with the policy layers switched off per request (test-only
mode, RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE=1 for that pool only) to prove the OS
layers hold alone. `no_seccomp_pool` additionally turns seccomp off, to prove
the namespace, file-system, rlimit and privilege layers hold without it.
Session-scoped: each pool starts once (~0.5 s).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlm_rs.sandbox.client import PoolSandbox, temporary_pool
from rlm_rs.sandbox.pool.server import pool_policy


@pytest.fixture(scope="session")
def hardened_pool() -> Iterator[PoolSandbox]:
    with temporary_pool() as pool:
        yield pool


@pytest.fixture(scope="session")
def os_only_pool() -> Iterator[PoolSandbox]:
    with temporary_pool(allow_unsafe=True) as pool:
        yield pool


@pytest.fixture(scope="session")
def no_seccomp_pool() -> Iterator[PoolSandbox]:
    policy = pool_policy()
    policy.seccomp_enabled = False
    with temporary_pool(policy, allow_unsafe=True) as pool:
        yield pool
