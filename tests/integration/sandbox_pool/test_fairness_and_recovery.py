"""The real pool across tenants and after worker deaths: a light tenant's short
step runs promptly while a heavy tenant keeps every regular worker busy with
long steps; a tenant past its queue gets RATE_LIMITED, not LAMBDA_ERROR; warm
workers SIGKILLed while idle are replaced without failing the next step."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from rlm_rs.sandbox.client import PoolSandbox, temporary_pool
from rlm_rs.sandbox.pool.server import pool_policy
from rlm_rs.sandbox.v1.sandbox_pb2 import StepLimits, StepRequest, StepResult

pytestmark = pytest.mark.root

HEAVY_SECONDS = 2.0


@pytest.fixture(scope="module")
def small_pool() -> Iterator[PoolSandbox]:
    """Two regular workers, one reserved slot, three queued steps per tenant.
    Test mode only so that the heavy steps can sleep instead of burning CPU."""
    policy = pool_policy()
    policy.pool_size = 2
    policy.warm_workers = 2
    policy.reserve_workers = 1
    policy.max_queued_steps_per_tenant = 3
    with temporary_pool(policy, allow_unsafe=True) as pool:
        yield pool


def heavy_step() -> StepRequest:
    return StepRequest(
        tenant_id="heavy",
        code=f"import time\ntime.sleep({HEAVY_SECONDS})\nprint('slept')",
        state_json="{}",
        unsafe_disable_policy_layers=True,
        limits=StepLimits(max_step_seconds=HEAVY_SECONDS + 5),
    )


def light_step() -> StepRequest:
    return StepRequest(tenant_id="light", code="print(sum(range(10)))", state_json="{}")


def test_light_tenant_runs_promptly_while_heavy_tenant_saturates(small_pool: PoolSandbox) -> None:
    assert small_pool.run_step(light_step()).success  # warm
    heavy_results: list[StepResult] = []
    threads = [
        threading.Thread(target=lambda: heavy_results.append(small_pool.run_step(heavy_step())))
        for _ in range(5)  # 2 run, 3 wait (the queue's limit)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the heavy steps hold both regular workers now
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        result = small_pool.run_step(light_step())
        latencies.append(time.monotonic() - started)
        assert result.success, result.error
        assert result.stdout == "45\n"
    started = time.monotonic()
    refused = small_pool.run_step(heavy_step())
    refused_after = time.monotonic() - started
    for thread in threads:
        thread.join(60)
    # Every light step finished long before the first heavy step could have.
    assert max(latencies) < 1.0, latencies
    # A sixth heavy step is past its tenant's queue: refused at once, clearly.
    assert refused.error.code == "RATE_LIMITED", refused.error
    assert "max_queued_steps_per_tenant" in refused.error.message
    assert refused_after < 1.0
    assert len(heavy_results) == 5 and all(r.success for r in heavy_results), [r.error for r in heavy_results]


def _warm_workers(pool: PoolSandbox) -> list[psutil.Process]:
    assert pool.server_pid is not None
    (zygote,) = psutil.Process(pool.server_pid).children()
    return list(zygote.children())


def test_idle_warm_workers_killed_are_replaced_transparently(small_pool: PoolSandbox) -> None:
    assert small_pool.run_step(light_step()).success
    killed = 0
    for _ in range(3):  # the front now holds more dead workers than any retry count
        time.sleep(0.3)  # the replacements are forked, hardened and handed over
        idle = _warm_workers(small_pool)
        assert idle
        for worker in idle:
            os.kill(worker.pid, signal.SIGKILL)
        killed += len(idle)
    assert killed >= 4
    time.sleep(0.1)
    started = time.monotonic()
    result = small_pool.run_step(light_step())
    assert result.success, result.error
    assert time.monotonic() - started < 2.0
    assert small_pool.status().warm_workers >= 1
