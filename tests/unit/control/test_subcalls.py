"""The fair sub-call scheduler with real threads: round-robin across tenants
(a small job is not queued behind a big one), the per-execution and
per-tenant caps, and results in order with errors returned to the caller."""

from __future__ import annotations

import threading
import time

import pytest

from rlm_rs.control.subcalls import SubcallScheduler


def test_a_small_tenant_is_not_queued_behind_a_big_fan_out() -> None:
    scheduler = SubcallScheduler(concurrency=4, per_execution=4, per_tenant=4)
    done_a: list[int] = []

    def slow(i: int) -> int:
        time.sleep(0.005)
        return i

    def big() -> None:
        done_a.extend(scheduler.map("tenant-a", "exec-a", slow, range(400)))

    runner = threading.Thread(target=big)
    runner.start()
    while scheduler.running < 4:
        time.sleep(0.001)
    started = time.perf_counter()
    small = scheduler.map("tenant-b", "exec-b", slow, range(4))
    waited = time.perf_counter() - started
    assert small == [0, 1, 2, 3]
    assert not done_a and waited < 0.5  # a FIFO pool would finish all 400 first (~0.5 s)
    runner.join()
    assert done_a == list(range(400))
    scheduler.close()


def test_caps_per_execution_and_per_tenant_and_the_process() -> None:
    scheduler = SubcallScheduler(concurrency=6, per_execution=2, per_tenant=3)
    lock = threading.Lock()
    running: dict[str, int] = {}
    peaks: dict[str, int] = {}

    def call(name: str) -> None:
        with lock:
            running[name] = running.get(name, 0) + 1
            peaks[name] = max(peaks.get(name, 0), running[name])
            tenant = name.split("/")[0]
            running[tenant] = running.get(tenant, 0) + 1
            peaks[tenant] = max(peaks.get(tenant, 0), running[tenant])
        time.sleep(0.01)
        with lock:
            running[name] -= 1
            running[tenant] -= 1

    jobs = [("a", "a/1"), ("a", "a/2"), ("b", "b/1"), ("b", "b/2")]
    threads = [
        threading.Thread(target=scheduler.map, args=(tenant, name, call, [name] * 20))
        for tenant, name in jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(peaks[name] <= 2 for _, name in jobs)
    assert peaks["a"] <= 3 and peaks["b"] <= 3
    assert scheduler.peak == 6  # both tenants at their cap: the whole process busy
    scheduler.close()


def test_an_error_comes_back_to_the_caller_and_the_others_still_run() -> None:
    scheduler = SubcallScheduler(concurrency=2, per_execution=2)

    def call(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    with pytest.raises(ValueError, match="three"):
        scheduler.map("t", "e", call, range(6))
    assert scheduler.map("t", "e", call, [0, 1, 2]) == [0, 1, 2]
    scheduler.close()
