"""Session-scoped pools for the pool's integration tests (each starts once).

`pool` is the production configuration; `unsafe_pool` accepts the test-only
`unsafe_disable_policy_layers` flag (RLM_SANDBOX_ALLOW_UNSAFE_TEST_MODE=1 for
that pool process only), used where a test needs plain Python in the worker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlm_rs.sandbox.client import PoolSandbox, temporary_pool


@pytest.fixture(scope="session")
def pool() -> Iterator[PoolSandbox]:
    with temporary_pool() as client:
        yield client


@pytest.fixture(scope="session")
def unsafe_pool() -> Iterator[PoolSandbox]:
    with temporary_pool(allow_unsafe=True) as client:
        yield client
