"""FairScheduler: per-tenant queues served round robin, a per-tenant cap, a
reserve only idle tenants may use, and clear refusals (queue full, wait timeout)."""

from __future__ import annotations

import threading
import time

import pytest

from rlm_rs.sandbox.policy import default_policy
from rlm_rs.sandbox.pool._fairness import FairScheduler, FairShare, SlotRefused


def share(**fields: float) -> FairShare:
    values = {
        "pool_size": 2,
        "reserve_workers": 1,
        "max_workers_per_tenant": 2,
        "max_queued_steps_per_tenant": 8,
        "max_queue_seconds": 5.0,
        **fields,
    }
    return FairShare(**values)  # type: ignore[arg-type]


def waiter(scheduler: FairScheduler, tenant: str, order: list[str]) -> threading.Thread:
    def run() -> None:
        scheduler.acquire(tenant)
        order.append(tenant)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_queued(scheduler: FairScheduler, count: int) -> None:
    give_up = time.monotonic() + 5
    while True:
        queued = scheduler.snapshot()["queued"]
        assert isinstance(queued, dict)
        if sum(queued.values()) >= count:
            return
        assert time.monotonic() < give_up
        time.sleep(0.005)


def test_defaults_come_from_the_policy() -> None:
    fair = FairShare.from_policy(default_policy())
    assert (fair.pool_size, fair.reserve_workers, fair.max_workers_per_tenant) == (4, 1, 4)
    assert fair.capacity == 5
    assert fair.max_queued_steps_per_tenant == 16 and fair.max_queue_seconds == 30.0


def test_reserve_is_only_for_a_tenant_with_nothing_running() -> None:
    scheduler = FairScheduler(share())
    scheduler.acquire("heavy")
    scheduler.acquire("heavy")  # pool_size reached
    order: list[str] = []
    heavy = waiter(scheduler, "heavy", order)
    wait_queued(scheduler, 1)
    assert order == []  # the reserve slot is not for heavy
    assert scheduler.acquire("light") == 1  # light has nothing running: the reserve is its
    scheduler.release("light")
    scheduler.release("heavy")
    heavy.join(5)
    assert order == ["heavy"]


def test_waiting_tenants_are_served_round_robin() -> None:
    scheduler = FairScheduler(share(pool_size=1, reserve_workers=0, max_workers_per_tenant=1))
    scheduler.acquire("a")
    order: list[str] = []
    threads = []
    for tenant in ["a", "a", "a", "b", "c"]:
        threads.append(waiter(scheduler, tenant, order))
        wait_queued(scheduler, len(threads))
    for expected_len in range(1, 6):
        scheduler.release(order[-1] if order else "a")
        give_up = time.monotonic() + 5
        while len(order) < expected_len:
            assert time.monotonic() < give_up
            time.sleep(0.005)
    assert order == ["a", "b", "c", "a", "a"]


def test_per_tenant_cap_holds_even_with_free_slots() -> None:
    scheduler = FairScheduler(share(pool_size=4, max_workers_per_tenant=1, max_queue_seconds=0.2))
    scheduler.acquire("t")
    with pytest.raises(SlotRefused) as refused:
        scheduler.acquire("t")
    assert refused.value.reason == "queue_timeout"
    assert refused.value.details["reason"] == "sandbox_queue_timeout"
    assert scheduler.acquire("other") == 1


def test_a_full_queue_is_refused_at_once() -> None:
    scheduler = FairScheduler(share(pool_size=1, reserve_workers=0, max_queued_steps_per_tenant=2))
    scheduler.acquire("t")
    order: list[str] = []
    waiter(scheduler, "t", order)
    waiter(scheduler, "t", order)
    wait_queued(scheduler, 2)
    started = time.monotonic()
    with pytest.raises(SlotRefused) as refused:
        scheduler.acquire("t")
    assert time.monotonic() - started < 0.5
    assert refused.value.reason == "queue_full" and refused.value.details["queued"] == 2
    assert scheduler.snapshot()["refused_total"] == 1
    for _ in range(3):  # let the waiters through
        scheduler.release("t")
        time.sleep(0.05)
    assert order == ["t", "t"]


def test_a_timed_out_wait_leaves_no_ticket_behind() -> None:
    scheduler = FairScheduler(share(pool_size=1, reserve_workers=0, max_queue_seconds=0.05))
    scheduler.acquire("t")
    with pytest.raises(SlotRefused):
        scheduler.acquire("t")
    assert scheduler.snapshot()["queued"] == {}
    scheduler.release("t")
    assert scheduler.acquire("t") == 1
